//! The application: every service built from a [`Config`] and a store, wired together, and
//! returned as the HTTP router (the WebSocket route included) and the [`AppHandle`] that shuts
//! it all down. It opens no socket: `server.rs` serves the router on a listener, and tests
//! drive it with `tower::ServiceExt::oneshot`.
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn sync_server::storage::Storage>)
//! # -> Result<(), sync_server::app::ServerError> {
//! use sync_server::app::{App, Config};
//!
//! let App { router, handle } = App::builder(Config::default()).store(store).build().await?;
//! // ... serve `router`, or call it; then drop it ...
//! drop(router);
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layering
//!
//! From the top: `server` (the listener, signals) → `app` (builds and wires the services) →
//! `http` (routes, handlers, middleware, the WebSocket upgrade) → the services `ws` (sessions),
//! `assistant`, `restore` → `board` (actors, registry) and `commit` → `transfer` (whole boards
//! from stored rows) → `storage`. A module may use any module below it and none above it; the
//! leaves (`protocol`, `refusal`, `auth`, `ids`, `limits`, `metrics`) are used from anywhere.
//! Services are given what they use when they are built; only `http` has a router state.

mod config;
mod handle;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use self::config::Config;
pub use self::handle::AppHandle;
use crate::assistant::{Assistant, AssistantDeps, Model};
use crate::board::registry::{Boards, RegistryConfig};
use crate::cluster::{Cluster, ClusterError};
use crate::commit::Committer;
use crate::http::Services;
use crate::metrics::Metrics;
use crate::restore::Restorer;
use crate::storage::{self, Storage, StorageError};
use crate::ws::{SessionDeps, Sessions};

/// Why the server could not be built or run.
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
    /// Several nodes cannot be set up as asked.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A built application: its router and the handle that shuts it down.
#[derive(Debug)]
pub struct App {
    /// Every route. Its middleware reads the client's address from `ConnectInfo<SocketAddr>`:
    /// serve it with `into_make_service_with_connect_info::<SocketAddr>()`, or (in tests) add
    /// `axum::extract::connect_info::MockConnectInfo`.
    pub router: Router,
    /// Shuts the application down: see [`AppHandle::shutdown`].
    pub handle: AppHandle,
}

impl App {
    /// Starts building an application from `config`.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            store: None,
        }
    }
}

/// Builds an [`App`]; see [`App::builder`].
#[derive(Debug)]
#[must_use = "an AppBuilder does nothing until `build` is called"]
pub struct AppBuilder {
    config: Config,
    store: Option<Arc<dyn Storage>>,
}

impl AppBuilder {
    /// Serves `store`, opened by the caller, instead of opening `config.database_url`: for
    /// embedding, and for tests that wrap a store (to make commits fail, say).
    pub fn store(mut self, store: Arc<dyn Storage>) -> Self {
        self.store = Some(store);
        self
    }

    /// Opens the store (unless one was given), marks assistant runs a stopped server left as
    /// interrupted, starts the group committer, and builds the services and the router.
    pub async fn build(self) -> Result<App, ServerError> {
        let Self { config, store } = self;
        let store = match store {
            Some(store) => store,
            None => {
                let store = storage::open(&config.database_url, &config.storage).await?;
                info!(
                    backend = %store.backend(),
                    database = %storage::redact(&config.database_url),
                    "storage ready"
                );
                store
            }
        };
        // Checked before anything starts.
        let model = config.assistant.clone().map(Model::new).transpose()?;
        match &model {
            Some(model) => info!(model = model.name(), "assistant ready"),
            None => info!("assistant off: set OPENAI_BASE_URL or OPENAI_API_KEY to enable it"),
        }
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::for_node(&config.node));
        let cluster = match &config.cluster {
            None => Cluster::single(),
            Some(cluster) => {
                let backend = store.backend();
                if backend != storage::Backend::Postgres {
                    return Err(ClusterError::NeedsPostgres(backend).into());
                }
                let started = Cluster::start(
                    config.node.as_str().into(),
                    cluster.clone(),
                    store.clone(),
                    metrics.clone(),
                    &tracker,
                    shutdown.clone(),
                )?;
                info!(node = %config.node, prefix = %cluster.prefix, heal_interval = ?cluster.heal_interval, "one of several nodes: fan-out through Redis");
                started
            }
        };
        let committer = Committer::spawn(store.clone(), &tracker, config.commit, metrics.clone());
        let boards = Boards::new(
            store.clone(),
            committer,
            RegistryConfig {
                board: config.board.clone(),
            },
            tracker.clone(),
            shutdown.clone(),
            metrics.clone(),
            cluster.clone(),
        );
        let assistant = Arc::new(Assistant::new(
            model,
            AssistantDeps {
                store: store.clone(),
                boards: boards.clone(),
                metrics: metrics.clone(),
                tracker: tracker.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        match assistant.interrupt_runs_at_start().await {
            Ok(0) => {}
            Ok(n) => info!(
                runs = n,
                "assistant runs left by a stopped server marked interrupted"
            ),
            Err(e) => warn!(error = %e, "could not mark stale assistant runs"),
        }
        let sessions = Arc::new(Sessions::new(SessionDeps {
            boards: boards.clone(),
            store: store.clone(),
            auth: config.auth.clone(),
            limits: config.limits.clone(),
            metrics: metrics.clone(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        }));
        let router = crate::http::router(Services {
            restorer: Restorer::new(store.clone(), boards.clone()),
            store: store.clone(),
            boards,
            sessions,
            assistant,
            auth: config.auth,
            metrics,
            limits: config.limits,
            open_any_host: config.open_any_host,
            shutdown: shutdown.clone(),
        });
        Ok(App {
            router,
            handle: AppHandle::new(shutdown, tracker, store, config.shutdown_timeout, cluster),
        })
    }
}
