//! Running the server: state, start-up and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::board::BoardConfig;
use crate::board::registry::{Boards, RegistryConfig};
use crate::commit::Committer;
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
    /// Connection limits.
    pub limits: Limits,
    /// Most updates one group commit takes.
    pub commit_max_updates: usize,
    /// How long shutdown waits for connections and commits before giving up.
    pub shutdown_timeout: Duration,
}

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message and HTTP body accepted, in bytes.
    pub max_message_bytes: usize,
    /// Frames queued for one connection before it is closed as too slow (1013).
    pub outbound_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "sqlite://./data/boards.db".into(),
            storage: StorageOptions::default(),
            board: BoardConfig::default(),
            limits: Limits {
                max_message_bytes: 16 << 20,
                outbound_queue: 1024,
            },
            commit_max_updates: 4096,
            shutdown_timeout: Duration::from_secs(30),
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
}

/// What handlers share. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) boards: Boards,
    pub(crate) limits: Limits,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
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
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let committer = Committer::spawn(store.clone(), &tracker, config.commit_max_updates);
    let boards = Boards::new(
        store.clone(),
        committer,
        RegistryConfig {
            board: config.board.clone(),
        },
        tracker.clone(),
        cancel.clone(),
    );
    let state = AppState(Arc::new(Inner {
        boards,
        limits: config.limits.clone(),
        tracker: tracker.clone(),
        shutdown: cancel.clone(),
        next_conn: AtomicU64::new(1),
    }));
    let app = crate::http::router(state);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let stop = cancel.clone();
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
