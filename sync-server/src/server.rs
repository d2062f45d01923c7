//! Running the server on a listener: serves the [`App`]'s router until told to stop, then shuts
//! down in order: stop accepting, cancel connections (they close with 1012), board actors
//! commit what they hold, the committer drains, the task tracker empties, the store closes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::app::App;
pub use crate::app::{Config, ServerError};
pub use crate::commit::Pacing;
pub use crate::limits::Limits;
use crate::storage::Storage;

/// Runs the server on `listener` until `shutdown` resolves, then shuts down gracefully: stops
/// accepting, closes sockets with 1012 (clients reconnect), commits everything received, and
/// waits for every tracked task (bounded by `config.shutdown_timeout`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve(App::builder(config).build().await?, listener, shutdown).await
}

/// [`run`] on a store opened by the caller (`config.database_url` is ignored): for embedding
/// and for tests that wrap a store, e.g. to make commits fail.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Storage>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = App::builder(config).store(store).build().await?;
    serve(app, listener, shutdown).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts it down.
async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let App { router, handle } = app;
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let stopping = handle.clone();
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        info!("shutting down: closing connections and committing what they sent");
        stopping.cancel();
    })
    .await?;
    // Connections see the cancelled token and close; actors commit what they hold and stop;
    // the committer stops once the last actor drops its handle.
    handle.shutdown().await;
    info!("stopped");
    Ok(())
}
