//! Shutting an application down, in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::cluster::Cluster;
use crate::storage::Storage;

/// Shuts down what an [`App`](super::App) started. Cheap to clone; every clone shuts down the
/// same application, once.
#[derive(Debug, Clone)]
pub struct AppHandle(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    store: Arc<dyn Storage>,
    timeout: Duration,
    cluster: Cluster,
    done: OnceCell<()>,
}

impl AppHandle {
    pub(super) fn new(
        shutdown: CancellationToken,
        tracker: TaskTracker,
        store: Arc<dyn Storage>,
        timeout: Duration,
        cluster: Cluster,
    ) -> Self {
        Self(Arc::new(Inner {
            shutdown,
            tracker,
            store,
            timeout,
            cluster,
            done: OnceCell::new(),
        }))
    }

    /// Starts shutting down, and returns at once: every WebSocket closes with 1012 (clients
    /// reconnect), assistant runs are cancelled, `/readyz` answers 503. Serving goes on; stop
    /// accepting connections first, then call this.
    pub fn cancel(&self) {
        self.0.shutdown.cancel();
    }

    /// Test hook (fault injection): while `drop` is set, nothing this node publishes to the
    /// other nodes reaches Redis, as if Redis lost it; they heal from the database. No effect
    /// on a node alone.
    pub fn drop_cluster_publishes(&self, drop: bool) {
        self.0.cluster.set_drop_publishes(drop);
    }

    /// Whether shutting down has started.
    pub fn is_cancelled(&self) -> bool {
        self.0.shutdown.is_cancelled()
    }

    /// Shuts down: [`cancel`](Self::cancel)s if that was not done, then waits for every task
    /// the application tracks (connections close; board actors commit what they hold and stop;
    /// the group committer stops once the last actor drops its handle, after committing
    /// everything it was sent), at most the configured `shutdown_timeout`, and closes the
    /// store. Done once, whichever clone asks; every caller returns when it is done.
    ///
    /// Stop serving and drop the router first: it holds the boards, and so a handle to the
    /// committer, which would otherwise wait for commits until the timeout.
    pub async fn shutdown(&self) {
        let inner = &self.0;
        inner
            .done
            .get_or_init(|| async {
                inner.shutdown.cancel();
                inner.tracker.close();
                if tokio::time::timeout(inner.timeout, inner.tracker.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        remaining = inner.tracker.len(),
                        "shutdown timed out with tasks still running"
                    );
                }
                inner.store.close().await;
            })
            .await;
    }
}
