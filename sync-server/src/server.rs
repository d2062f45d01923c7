//! Running the server: state, start-up and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
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
use crate::limits::HttpLimiter;
pub use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::storage::{self, Storage, StorageError, StorageOptions};
use crate::ws::{SessionDeps, Sessions};

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
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) http_limiter: Option<HttpLimiter>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) assistant: Option<Arc<Assistant>>,
    /// See [`Config::open_any_host`].
    pub(crate) open_any_host: bool,
    /// The cached outcome of `/readyz`'s database check.
    pub(crate) readiness: crate::http::Readiness,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
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
    let sessions = Arc::new(Sessions::new(SessionDeps {
        boards: boards.clone(),
        store: store.clone(),
        auth: config.auth.clone(),
        limits: config.limits.clone(),
        metrics: metrics.clone(),
        tracker: tracker.clone(),
        shutdown: cancel.clone(),
    }));
    let state = AppState(Arc::new(Inner {
        boards,
        sessions,
        http_limiter: HttpLimiter::new(config.limits.http_rate, config.limits.http_burst),
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        metrics,
        tracker: tracker.clone(),
        shutdown: cancel.clone(),
        assistant,
        readiness: crate::http::Readiness::default(),
        open_any_host: config.open_any_host,
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
