//! Running the server: state, start-up and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::assistant::{Assistant, AssistantConfig};
use crate::auth::Auth;
use crate::board::BoardConfig;
use crate::board::registry::{Boards, RegistryConfig};
use crate::commit::Committer;
pub use crate::commit::Pacing;
use crate::limits::{ConnectionCounts, HttpLimiter};
use crate::metrics::Metrics;
use crate::storage::{self, Storage, StorageError, StorageOptions};

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Database URL (`sqlite://...`, `postgres://...`, `memory:`).
    pub database_url: String,
    /// Connection pools and timeouts.
    pub storage: StorageOptions,
    /// Board actor limits and thresholds.
    pub board: BoardConfig,
    /// Connection and request limits.
    pub limits: Limits,
    /// How callers are authenticated.
    pub auth: Auth,
    /// How group commits are sized and paced.
    pub commit: Pacing,
    /// How long shutdown waits for connections and commits before giving up.
    pub shutdown_timeout: Duration,
    /// The assistant's model service and limits; `None` disables it (its routes answer 503).
    pub assistant: Option<AssistantConfig>,
    /// Open development mode only: answer requests whatever their `Host` (`--insecure` with a
    /// non-loopback `--bind`). Otherwise open mode answers only requests addressed to a
    /// loopback host, against DNS rebinding; `Origin` is checked either way.
    pub open_any_host: bool,
}

/// Limits on what clients may send and hold open. Zero means "no limit" for the connection
/// and rate limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message and HTTP body accepted, in bytes.
    pub max_message_bytes: usize,
    /// Frames queued for one connection before it is closed as too slow (1013).
    pub outbound_queue: usize,
    /// Bytes queued for one connection before it is closed as too slow (1013); one frame of
    /// any size still fits an empty queue.
    pub outbound_queue_bytes: usize,
    /// Bytes of updates one connection may have sent and not yet had committed; past it the
    /// server stops reading its socket (TCP backpressure) until commits catch up. Never below
    /// `max_message_bytes`.
    pub max_uncommitted_bytes: usize,
    /// WebSocket connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// A WebSocket connection that sends nothing (not even a pong) for this long is closed.
    pub read_timeout: Duration,
    /// Messages one WebSocket connection may send per second, sustained.
    pub message_rate: u32,
    /// Messages one WebSocket connection may send in a burst above the rate.
    pub message_burst: u32,
    /// A connection over its message rate is slowed down; one slowed down for more than three
    /// quarters of this window is closed (1008). A minute by default.
    pub abuse_window: Duration,
    /// HTTP requests one client address may make per second, sustained.
    pub http_rate: u32,
    /// HTTP requests one client address may make in a burst above the rate.
    pub http_burst: u32,
    /// Origins allowed to open WebSockets (browsers send `Origin`); empty allows any.
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            outbound_queue: 1024,
            outbound_queue_bytes: 32 << 20,
            max_uncommitted_bytes: 32 << 20,
            max_connections_per_address: 1000,
            read_timeout: Duration::from_secs(90),
            message_rate: 500,
            message_burst: 1000,
            abuse_window: Duration::from_secs(60),
            http_rate: 100,
            http_burst: 200,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://./data/boards.db".into(),
            storage: StorageOptions::default(),
            board: BoardConfig::default(),
            limits: Limits::default(),
            auth: Auth::Open,
            commit: Pacing::default(),
            shutdown_timeout: Duration::from_secs(30),
            assistant: None,
            open_any_host: false,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Serving failed.
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The assistant's model service settings are unusable.
    #[error("assistant: {0}")]
    Assistant(#[from] ai_agent::LlmError),
}

/// What handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) boards: Boards,
    pub(crate) limits: Limits,
    pub(crate) auth: Auth,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) addresses: ConnectionCounts,
    pub(crate) http_limiter: Option<HttpLimiter>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) assistant: Option<Arc<Assistant>>,
    /// See [`Config::open_any_host`].
    pub(crate) open_any_host: bool,
    /// The cached outcome of `/readyz`'s database check.
    pub(crate) readiness: crate::http::Readiness,
    next_conn: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs the server on `listener` until `shutdown` resolves, then shuts down gracefully: stops
/// accepting, closes sockets with 1012 (clients reconnect), commits everything received, and
/// waits for every tracked task (bounded by `config.shutdown_timeout`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = storage::open(&config.database_url, &config.storage).await?;
    info!(
        backend = %store.backend(),
        database = %storage::redact(&config.database_url),
        "storage ready"
    );
    run_with_store(config, store, listener, shutdown).await
}

/// [`run`] on a store opened by the caller (`config.database_url` is ignored): for embedding
/// and for tests that wrap a store, e.g. to make commits fail.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Storage>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let assistant = match config.assistant.clone() {
        Some(settings) => {
            let model = settings.llm.model.clone();
            let assistant = Assistant::new(settings)?;
            info!(model, "assistant ready");
            Some(Arc::new(assistant))
        }
        None => {
            info!("assistant off: set OPENAI_BASE_URL or OPENAI_API_KEY to enable it");
            None
        }
    };
    match crate::assistant::interrupt_stale_runs(store.as_ref(), assistant.as_deref()).await {
        Ok(0) => {}
        Ok(n) => info!(
            runs = n,
            "assistant runs left by a stopped server marked interrupted"
        ),
        Err(e) => warn!(error = %e, "could not mark stale assistant runs"),
    }
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let committer = Committer::spawn(store.clone(), &tracker, config.commit, metrics.clone());
    let boards = Boards::new(
        store.clone(),
        committer,
        RegistryConfig {
            board: config.board.clone(),
        },
        tracker.clone(),
        cancel.clone(),
        metrics.clone(),
    );
    let state = AppState(Arc::new(Inner {
        boards,
        http_limiter: HttpLimiter::new(config.limits.http_rate, config.limits.http_burst),
        addresses: ConnectionCounts::new(config.limits.max_connections_per_address),
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        metrics,
        tracker: tracker.clone(),
        shutdown: cancel.clone(),
        assistant,
        readiness: crate::http::Readiness::default(),
        open_any_host: config.open_any_host,
        next_conn: AtomicU64::new(1),
    }));
    let app = crate::http::router(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let stop = cancel.clone();
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutting down: closing connections and committing what they sent");
            stop.cancel();
        })
        .await?;
    // Connections see the cancelled token and close; actors commit what they hold and stop;
    // the committer stops once the last actor drops its handle.
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = tracker.len(),
            "shutdown timed out with tasks still running"
        );
    }
    store.close().await;
    info!("stopped");
    Ok(())
}
