//! Command line and environment. Flag and variable names are a contract deployments rely on;
//! README.md ("Configuration") lists them all.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::Config;
use crate::assistant::AssistantConfig;
use crate::auth::token::TokenRequest;
use crate::auth::{Auth, Keys, Role, Scope, Secret, SecretError};
use crate::board::BoardConfig;
use crate::cluster::ClusterConfig;
use crate::commit::Pacing;
use crate::limits::Limits;
use crate::storage::{DatabaseUrl, StorageOptions};

/// Offline-first CRDT sync server for collaborative whiteboards.
#[derive(Debug, Parser)]
#[command(name = "sync-server", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand the server runs (`serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(Box<ServeArgs>),
    /// Write a board's whole state, a Yjs update v1, to a file or stdout. Reads the database
    /// directly; safe while a server runs on it.
    Export(ExportArgs),
    /// Create a board from a Yjs update v1 (an export, or `Y.encodeStateAsUpdate` output).
    /// Safe while a server runs on the database.
    Import(ImportArgs),
    /// Mint a token with the server's secret and print it.
    Token(TokenArgs),
}

/// Where the signing secret comes from.
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// Secret that signs tokens (at least 32 bytes). Without one the server runs in open
    /// development mode: no tokens, loopback only.
    #[arg(
        long,
        env = "AUTH_SECRET",
        hide_env_values = true,
        conflicts_with = "auth_secret_file"
    )]
    pub auth_secret: Option<String>,
    /// File holding the secret (surrounding whitespace is ignored).
    #[arg(long, env = "AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<std::path::PathBuf>,
}

impl SecretArgs {
    /// The configured secret, if any.
    pub fn secret(&self) -> Result<Option<Secret>, SecretError> {
        match (&self.auth_secret, &self.auth_secret_file) {
            (Some(raw), _) => Secret::new(raw.as_bytes()).map(Some),
            (None, Some(path)) => Secret::from_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// How the server authenticates callers.
    pub fn auth(&self) -> Result<Auth, SecretError> {
        Ok(match self.secret()? {
            Some(secret) => Auth::Tokens(Box::new(Keys::new(&secret))),
            None => Auth::Open,
        })
    }
}

/// Options of `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The board the token is for, or `*` for every board.
    #[arg(long)]
    pub board: String,
    /// What it allows: read, write or admin.
    #[arg(long)]
    pub role: Role,
    /// How long it is valid, e.g. `15m`, `12h`, `30d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Who it is for (recorded as the author of versions and assistant runs).
    #[arg(long)]
    pub user: Option<String>,
    /// The server's address as browsers reach it, `http(s)://HOST[:PORT]`: also print a link
    /// that opens the board in the board app with the token (`BASE/b/BOARD#token=...`, or
    /// `BASE/#token=...` for `*`).
    #[arg(long, value_name = "BASE", value_parser = base_url)]
    pub url: Option<String>,
    /// The signing secret.
    #[command(flatten)]
    pub secret: SecretArgs,
}

impl TokenArgs {
    /// What to mint.
    pub fn request(&self) -> Result<TokenRequest, crate::ids::InvalidBoardId> {
        Ok(TokenRequest {
            user: self.user.clone(),
            scope: Scope::parse(&self.board)?,
            role: self.role,
            ttl: self.ttl,
        })
    }

    /// With `--url`, the link that opens the board app with `token`, in the URL's fragment
    /// (browsers never send it to a server, nor in a `Referer`).
    pub fn link(&self, token: &str) -> Option<String> {
        let base = self.url.as_deref()?;
        Some(match self.board.as_str() {
            "*" => format!("{base}/#token={token}"),
            board => format!("{base}/b/{board}#token={token}"),
        })
    }
}

/// `--url`: an http or https origin (a trailing `/` dropped), nothing after the host and port,
/// since the app is served at the server's root.
fn base_url(raw: &str) -> Result<String, String> {
    let base = raw.strip_suffix('/').unwrap_or(raw);
    let authority = ["http://", "https://"]
        .iter()
        .find(|scheme| {
            base.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        })
        .map(|scheme| &base[scheme.len()..])
        .ok_or("must start with http:// or https://")?;
    if authority.is_empty() {
        return Err("names no host".into());
    }
    if !authority
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~:[]%".contains(c))
    {
        return Err("must be http(s)://HOST[:PORT] only: no user, path, query or fragment".into());
    }
    Ok(base.to_owned())
}

/// Options of `export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The board to export.
    pub board: String,
    /// Where to write it (default: stdout).
    #[arg(short, long)]
    pub output: Option<std::path::PathBuf>,
    /// Database: `sqlite://PATH` or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://./data/boards.db"
    )]
    pub database_url: DatabaseUrl,
}

/// Options of `import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The file to import (`-` for stdin).
    pub file: std::path::PathBuf,
    /// Id of the new board (default: a random id, printed).
    #[arg(long)]
    pub board: Option<String>,
    /// Database: `sqlite://PATH` or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://./data/boards.db"
    )]
    pub database_url: DatabaseUrl,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of the server.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port to listen on (0 picks a free one; the chosen address is printed).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Database: `sqlite://PATH` (created if missing), `postgres://...`, or `memory:`.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://./data/boards.db"
    )]
    pub database_url: DatabaseUrl,
    /// Listen on a non-loopback address even though no auth secret is configured.
    #[arg(long, env = "INSECURE")]
    pub insecure: bool,
    /// The signing secret for tokens.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Largest WebSocket message or HTTP body accepted, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub max_message_bytes: usize,
    /// Frames queued for one slow connection before it is closed with 1013.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,
    /// Bytes queued for one slow connection before it is closed with 1013 (a single larger
    /// frame still goes out alone; a sync step 2 answer, such as a big board's first sync, is
    /// not counted: the board's size bounds it).
    #[arg(long, env = "OUTBOUND_QUEUE_BYTES", default_value_t = 32 << 20)]
    pub outbound_queue_bytes: usize,
    /// Bytes of updates one connection may have sent that are not yet committed; past it the
    /// server stops reading that socket until commits catch up (at least --max-message-bytes).
    #[arg(long, env = "MAX_UNCOMMITTED_BYTES", default_value_t = 32 << 20)]
    pub max_uncommitted_bytes: usize,
    /// Seconds a board with no connections stays in memory.
    #[arg(long, env = "BOARD_IDLE_SECS", default_value_t = 30)]
    pub board_idle_secs: u64,
    /// Compact a board once this many log rows follow its snapshot.
    #[arg(long, env = "COMPACT_ROWS", default_value_t = 2000)]
    pub compact_rows: i64,
    /// Compact a board once this many log bytes follow its snapshot (if there is something to
    /// fold them with: a snapshot, or a second row).
    #[arg(long, env = "COMPACT_BYTES", default_value_t = 4 << 20)]
    pub compact_bytes: u64,
    /// Save an automatic version once this many updates follow the last one.
    #[arg(long, env = "CHECKPOINT_ROWS", default_value_t = 1000)]
    pub checkpoint_rows: i64,
    /// Save an automatic version of a changed board at least this often, in seconds.
    #[arg(long, env = "CHECKPOINT_SECS", default_value_t = 600)]
    pub checkpoint_secs: u64,
    /// Automatic versions kept per board (named versions are always kept).
    #[arg(long, env = "KEEP_AUTO_VERSIONS", default_value_t = 50)]
    pub keep_auto_versions: u32,
    /// Most updates committed in one transaction.
    #[arg(long, env = "COMMIT_MAX_UPDATES", default_value_t = 4096)]
    pub commit_max_updates: usize,
    /// Under load, least time between the starts of two commits, in microseconds: updates that
    /// arrive meanwhile share one transaction (0: commit as soon as the previous one ends).
    /// An update arriving at an idle server is committed at once.
    #[arg(long, env = "COMMIT_INTERVAL_US", default_value_t = 1000)]
    pub commit_interval_us: u64,
    /// Updates per second (over the last 100 ms, all boards together) from which the server
    /// counts as under load and paces its commits; below it every update is committed at once
    /// (0: pace whenever a commit follows another within the interval).
    #[arg(long, env = "COMMIT_PACING_MIN_RATE", default_value_t = 2000)]
    pub commit_pacing_min_rate: u32,
    /// Most database connections per pool.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
    /// Seconds shutdown waits for connections and commits.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Largest a board may grow, in bytes; updates that would pass it are refused (0: none).
    #[arg(long, env = "MAX_BOARD_BYTES", default_value_t = 64 << 20)]
    pub max_board_bytes: u64,
    /// WebSocket connections one board accepts at once (0: no limit).
    #[arg(long, env = "MAX_CONNECTIONS_PER_BOARD", default_value_t = 10_000)]
    pub max_connections_per_board: usize,
    /// WebSocket connections open at once from one client address (0: no limit).
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1000)]
    pub max_connections_per_address: usize,
    /// Seconds a WebSocket connection may send nothing (not even a pong to the server's
    /// pings, sent every 30 s) before it is closed; y-websocket clients renew their awareness
    /// every 15 s.
    #[arg(long, env = "READ_TIMEOUT_SECS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout_secs: u64,
    /// Messages per second one WebSocket connection may send, sustained (0: no limit). A
    /// faster connection is slowed down (the server stops reading it until its budget refills),
    /// not closed; only one over its rate for most of a minute is closed (1008).
    #[arg(long, env = "MESSAGE_RATE", default_value_t = 500)]
    pub message_rate: u32,
    /// Messages one WebSocket connection may send at once above the rate.
    #[arg(long, env = "MESSAGE_BURST", default_value_t = 1000)]
    pub message_burst: u32,
    /// HTTP requests per second from one client address, sustained (0: no limit).
    #[arg(long, env = "HTTP_RATE", default_value_t = 100)]
    pub http_rate: u32,
    /// HTTP requests from one client address at once above the rate.
    #[arg(long, env = "HTTP_BURST", default_value_t = 200)]
    pub http_burst: u32,
    /// Origins allowed to open WebSockets, comma-separated (e.g.
    /// `https://app.example.com`); empty allows any. Requests without `Origin` (non-browser
    /// clients) are always allowed.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// The assistant's model service and limits.
    #[command(flatten)]
    pub assistant: AssistantArgs,
    /// Several nodes: Redis between them.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Several nodes on one PostgreSQL database (README, "Several nodes").
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Redis, for fan-out between nodes serving the same boards (`redis://[:password@]host:port`).
    /// Needs a PostgreSQL `--database-url`; unset, this node is alone.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's name in logs, metrics and between nodes (up to 56 characters of
    /// `[A-Za-z0-9._-]`); a random suffix is added so a restarted node is never taken for its
    /// previous run. Default: the host's name.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Prefix of the Redis channels this deployment uses.
    #[arg(long, env = "REDIS_PREFIX", default_value = "boards")]
    pub redis_prefix: String,
    /// How often, in milliseconds, this node checks the database for rows the boards it holds
    /// lack (a lost last message has no successor to reveal it).
    #[arg(long, env = "HEAL_INTERVAL_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..))]
    pub heal_interval_ms: u64,
    /// Milliseconds without a heartbeat after which another node counts as gone (its
    /// clients' presence is cleared).
    #[arg(long, env = "NODE_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1500..))]
    pub node_timeout_ms: u64,
}

impl ClusterArgs {
    fn config(&self) -> Result<(String, Option<ClusterConfig>), ConfigError> {
        if let Some(base) = &self.node_id
            && (base.is_empty()
                || base.len() > 56
                || !base
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')))
        {
            return Err(ConfigError::NodeId);
        }
        let node = crate::cluster::default_node_id(self.node_id.as_deref());
        let cluster = self.redis_url.as_ref().map(|url| ClusterConfig {
            redis_url: url.clone(),
            prefix: self.redis_prefix.clone(),
            heal_interval: Duration::from_millis(self.heal_interval_ms),
            node_timeout: Duration::from_millis(self.node_timeout_ms),
        });
        Ok((node, cluster))
    }
}

/// The model service's API key: read from the environment only (no flag, so it never sits on
/// a command line where `ps` shows it), redacted in `Debug`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The environment variable that holds the key.
    pub const ENV: &'static str = "OPENAI_API_KEY";

    /// The key in [`Self::ENV`], if it is set, without surrounding whitespace. A value that is
    /// not UTF-8 is kept with replacement characters, so the service refuses it loudly rather
    /// than the assistant silently running without a key.
    fn from_env() -> Option<Self> {
        std::env::var_os(Self::ENV).map(|raw| Self(raw.to_string_lossy().trim().to_owned()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// Options of the assistant. It is enabled when a base URL or an API key is set.
#[derive(Debug, Clone, Args)]
pub struct AssistantArgs {
    /// Base URL of the OpenAI-compatible model service, e.g. `https://api.openai.com/v1`, a
    /// gateway, or a local server such as `http://127.0.0.1:11434/v1`. The service's key is
    /// read from the OPENAI_API_KEY environment variable only (there is no flag for it); with
    /// only OPENAI_API_KEY set, OpenAI's service is used.
    #[arg(long = "llm-base-url", env = "OPENAI_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// API key of the model service, from `OPENAI_API_KEY` (environment only; may be empty for
    /// local servers).
    #[arg(skip = ApiKey::from_env())]
    pub llm_api_key: Option<ApiKey>,
    /// Model the assistant uses.
    #[arg(
        long = "llm-model",
        env = "ASSISTANT_MODEL",
        default_value = "gpt-4o-mini"
    )]
    pub llm_model: String,
    /// Seconds to wait for the model service to answer or send its next chunk.
    #[arg(long, env = "LLM_TIMEOUT_SECS", default_value_t = 60)]
    pub llm_timeout_secs: u64,
    /// Retries of a model call after a 429, a 5xx or a lost connection (waits honour
    /// `Retry-After`, capped at 10 s).
    #[arg(long, env = "LLM_MAX_RETRIES", default_value_t = 2)]
    pub llm_max_retries: u32,
    /// Model calls per run.
    #[arg(long, env = "ASSISTANT_MAX_STEPS", default_value_t = 8)]
    pub assistant_max_steps: u32,
    /// Tool calls per run.
    #[arg(long, env = "ASSISTANT_MAX_TOOL_CALLS", default_value_t = 100)]
    pub assistant_max_tool_calls: u32,
    /// Objects one run may create.
    #[arg(long, env = "ASSISTANT_MAX_CREATES", default_value_t = 60)]
    pub assistant_max_creates: u32,
    /// Objects one run may delete.
    #[arg(long, env = "ASSISTANT_MAX_DELETES", default_value_t = 10)]
    pub assistant_max_deletes: u32,
    /// Seconds one run may take in all.
    #[arg(long, env = "ASSISTANT_TIMEOUT_SECS", default_value_t = 120)]
    pub assistant_timeout_secs: u64,
    /// Completion tokens per model call.
    #[arg(long, env = "ASSISTANT_MAX_COMPLETION_TOKENS", default_value_t = 2048)]
    pub assistant_max_completion_tokens: u32,
    /// Longest prompt accepted, in characters.
    #[arg(long, env = "ASSISTANT_MAX_PROMPT_CHARS", default_value_t = 4000)]
    pub assistant_max_prompt_chars: usize,
    /// Tokens all users together may use per UTC day (0: no limit).
    #[arg(long, env = "ASSISTANT_TOKENS_PER_DAY", default_value_t = 0)]
    pub assistant_tokens_per_day: u64,
    /// Tokens one user may use per UTC day (0: no limit).
    #[arg(long, env = "ASSISTANT_USER_TOKENS_PER_DAY", default_value_t = 200_000)]
    pub assistant_user_tokens_per_day: u64,
    /// Model calls per minute, all users together (0: no limit).
    #[arg(long, env = "ASSISTANT_REQUESTS_PER_MINUTE", default_value_t = 0)]
    pub assistant_requests_per_minute: u32,
    /// Model calls per minute of one user (0: no limit).
    #[arg(long, env = "ASSISTANT_USER_REQUESTS_PER_MINUTE", default_value_t = 30)]
    pub assistant_user_requests_per_minute: u32,
}

impl AssistantArgs {
    /// The assistant's settings, or `None` when no model service is configured.
    pub fn config(&self) -> Option<AssistantConfig> {
        let key = self.llm_api_key.as_ref().map(|k| k.0.clone());
        let base_url = match (&self.llm_base_url, &key) {
            (Some(url), _) if !url.trim().is_empty() => url.trim().to_owned(),
            (_, Some(key)) if !key.is_empty() => "https://api.openai.com/v1".to_owned(),
            _ => return None,
        };
        let mut llm = ai_agent::LlmConfig::new(base_url, key.unwrap_or_default(), &self.llm_model);
        llm.read_timeout = Duration::from_secs(self.llm_timeout_secs.max(1));
        llm.max_retries = self.llm_max_retries;
        let some = |n: u64| (n > 0).then_some(n);
        let some32 = |n: u32| (n > 0).then_some(n);
        Some(AssistantConfig {
            llm,
            caps: ai_agent::RunCaps {
                max_steps: self.assistant_max_steps.max(1),
                max_tool_calls: self.assistant_max_tool_calls,
                max_creates: self.assistant_max_creates,
                max_deletes: self.assistant_max_deletes,
                wall_time: Duration::from_secs(self.assistant_timeout_secs.max(1)),
                max_completion_tokens: self.assistant_max_completion_tokens.max(1),
            },
            budgets: ai_agent::BudgetLimits {
                global_tokens_per_day: some(self.assistant_tokens_per_day),
                user_tokens_per_day: some(self.assistant_user_tokens_per_day),
                global_requests_per_minute: some32(self.assistant_requests_per_minute),
                user_requests_per_minute: some32(self.assistant_user_requests_per_minute),
            },
            max_prompt_chars: self.assistant_max_prompt_chars.max(1),
            run_expiry: crate::assistant::DEFAULT_RUN_EXPIRY,
        })
    }
}

/// A configuration that is not safe to run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Without a secret, a non-loopback address needs `--insecure`.
    #[error(
        "refusing to listen on {0}: no AUTH_SECRET is set, so the server runs without \
         authentication (open development mode); set AUTH_SECRET (or AUTH_SECRET_FILE), bind a \
         loopback address, or pass --insecure to accept the risk"
    )]
    OpenModeNotLoopback(IpAddr),
    /// The secret is unusable.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// `--node-id` breaks the rules.
    #[error("--node-id must be 1 to 56 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    NodeId,
}

impl ServeArgs {
    /// The address to listen on, after the open-mode check.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let open = self.secret.auth_secret.is_none() && self.secret.auth_secret_file.is_none();
        if open && !self.bind.is_loopback() && !self.insecure {
            return Err(ConfigError::OpenModeNotLoopback(self.bind));
        }
        Ok(SocketAddr::new(self.bind, self.port))
    }

    /// The server configuration these options describe.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let (node, cluster) = self.cluster.config()?;
        Ok(Config {
            node,
            cluster,
            auth: self.secret.auth()?,
            database_url: self.database_url.clone(),
            storage: StorageOptions {
                max_connections: self.db_max_connections,
                ..StorageOptions::default()
            },
            board: BoardConfig {
                idle_timeout: Duration::from_secs(self.board_idle_secs),
                compact_rows: self.compact_rows.max(1),
                compact_bytes: self.compact_bytes,
                checkpoint_rows: self.checkpoint_rows.max(1),
                checkpoint_interval: Duration::from_secs(self.checkpoint_secs),
                keep_auto_versions: self.keep_auto_versions,
                max_board_bytes: self.max_board_bytes,
                max_connections: self.max_connections_per_board,
                ..BoardConfig::default()
            },
            limits: Limits {
                max_message_bytes: self.max_message_bytes,
                outbound_queue: self.outbound_queue,
                outbound_queue_bytes: self.outbound_queue_bytes,
                max_uncommitted_bytes: self.max_uncommitted_bytes,
                max_connections_per_address: self.max_connections_per_address,
                read_timeout: Duration::from_secs(self.read_timeout_secs),
                message_rate: self.message_rate,
                message_burst: self.message_burst,
                abuse_window: Limits::default().abuse_window,
                http_rate: self.http_rate,
                http_burst: self.http_burst,
                allowed_origins: self
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect(),
            },
            commit: Pacing {
                max_updates: self.commit_max_updates,
                interval: Duration::from_micros(self.commit_interval_us),
                min_rate: self.commit_pacing_min_rate,
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            assistant: self.assistant.config(),
            // `--insecure` is what lets open mode listen beyond loopback; there, requests name
            // other hosts. On loopback the Host check stays, `--insecure` or not.
            open_any_host: self.insecure && !self.bind.is_loopback(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};

    /// `token --url`: the link opens the board (or the board list, for `*`) with the token in
    /// the fragment; the base must be a bare http(s) origin.
    #[test]
    fn token_link() {
        let link = |args: &[&str]| {
            let cli =
                Cli::try_parse_from([&["sync-server", "token", "--role", "read"], args].concat())
                    .map_err(|e| e.to_string())?;
            let Some(Command::Token(token)) = cli.command else {
                panic!("not the token command");
            };
            Ok::<_, String>(token.link("T.O.K"))
        };
        assert_eq!(
            link(&["--board", "b1", "--url", "http://127.0.0.1:8080"]),
            Ok(Some("http://127.0.0.1:8080/b/b1#token=T.O.K".into()))
        );
        assert_eq!(
            link(&["--board", "*", "--url", "https://boards.example.com/"]),
            Ok(Some("https://boards.example.com/#token=T.O.K".into()))
        );
        assert_eq!(
            link(&["--board", "b1", "--url", "HTTP://[::1]:80"]),
            Ok(Some("HTTP://[::1]:80/b/b1#token=T.O.K".into()))
        );
        assert_eq!(link(&["--board", "b1"]), Ok(None));
        for bad in [
            "ftp://host",
            "host:8080",
            "http://",
            "https://host/path",
            "https://host?x=1",
            "https://host#f",
            "https://user@host",
            "https://ho st",
            "javascript:alert(1)",
        ] {
            let refused = link(&["--board", "b1", "--url", bad]).expect_err(bad);
            assert!(refused.contains("--url"), "{bad}: {refused}");
        }
    }

    fn open_any_host(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from([&["sync-server"], args].concat()).expect("valid flags");
        cli.serve.config().expect("a config").open_any_host
    }

    /// The model service's key has no flag: it comes from `OPENAI_API_KEY` only, so it never
    /// sits on a command line.
    #[test]
    fn the_api_key_is_not_a_flag() {
        let refused =
            Cli::try_parse_from(["sync-server", "--llm-api-key", "sk-on-the-command-line"]);
        assert!(refused.is_err(), "--llm-api-key was accepted");
        let help = Cli::try_parse_from(["sync-server", "--help"])
            .map(|_| ())
            .expect_err("--help is answered with the help text")
            .to_string();
        assert!(!help.contains("llm-api-key"), "{help}");
        assert!(help.contains("OPENAI_API_KEY"), "{help}");
    }

    /// A configuration printed for debugging never shows the database password.
    #[test]
    fn debug_output_hides_the_database_password() {
        let url = "postgres://app:hunter2-secret@db.internal:5432/boards";
        let cli = Cli::try_parse_from(["sync-server", "--database-url", url]).expect("valid flags");
        let config = cli.serve.config().expect("a config");
        assert_eq!(config.database_url.as_str(), url, "the URL itself is kept");
        for shown in [format!("{cli:?}"), format!("{config:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db.internal"), "{shown}");
        }
    }

    /// Only `--insecure` with a non-loopback address lifts open mode's `Host` check.
    #[test]
    fn open_mode_accepts_any_host_only_when_exposed_on_purpose() {
        assert!(!open_any_host(&[]));
        assert!(!open_any_host(&["--insecure"]));
        assert!(!open_any_host(&["--bind", "::1", "--insecure"]));
        assert!(open_any_host(&["--bind", "0.0.0.0", "--insecure"]));
    }
}
