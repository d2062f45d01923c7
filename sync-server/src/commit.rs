//! Group commit: one task turns the updates of every board into as few transactions as it can.
//!
//! Board actors each keep at most one request in flight. The committer takes the first request
//! waiting, then everything else already queued (up to a cap), and appends it all in one
//! transaction. While that transaction commits, new requests queue up and form the next group,
//! so the cost of a commit is shared by every update that arrived during the previous one.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::ids::{BoardId, Seq};
use crate::metrics::{Metrics, kind};
use crate::storage::{NewUpdate, Storage, StorageError};

/// Updates of one board to make durable, in order.
#[derive(Debug)]
pub(crate) struct CommitRequest {
    pub(crate) board: BoardId,
    pub(crate) updates: Vec<Vec<u8>>,
    /// Receives the sequence number of the last update once all are durable.
    pub(crate) reply: oneshot::Sender<Result<Seq, Arc<StorageError>>>,
}

/// Where board actors send their updates.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    tx: mpsc::UnboundedSender<CommitRequest>,
}

impl Committer {
    /// Starts the committer task. It ends when every `Committer` clone is dropped, after
    /// committing everything already sent.
    pub(crate) fn spawn(
        store: Arc<dyn Storage>,
        tracker: &TaskTracker,
        max_updates: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Unbounded is bounded in practice: each board has at most one request in flight.
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(run(store, rx, max_updates.max(1), metrics));
        Self { tx }
    }

    /// Queues a request. Fails only if the committer has stopped.
    pub(crate) fn submit(&self, request: CommitRequest) -> Result<(), CommitRequest> {
        self.tx.send(request).map_err(|e| e.0)
    }
}

async fn run(
    store: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<CommitRequest>,
    max_updates: usize,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let mut n = group[0].updates.len();
        while n < max_updates {
            match rx.try_recv() {
                Ok(next) => {
                    n += next.updates.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        commit_group(store.as_ref(), group, &metrics).await;
    }
    debug!("committer stopped");
}

/// Commits a group. A board deleted meanwhile fails only its own requests: the rest of the
/// group is retried without it.
async fn commit_group(store: &dyn Storage, mut group: Vec<CommitRequest>, metrics: &Metrics) {
    loop {
        let started = std::time::Instant::now();
        let items: Vec<NewUpdate<'_>> = group
            .iter()
            .flat_map(|r| {
                r.updates.iter().map(|data| NewUpdate {
                    board: &r.board,
                    data,
                })
            })
            .collect();
        let result = store.append(&items).await;
        drop(items);
        match result {
            Ok(seqs) => {
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.commit_updates.observe(seqs.len() as f64);
                debug!(
                    updates = seqs.len(),
                    requests = group.len(),
                    micros = started.elapsed().as_micros() as u64,
                    "group committed"
                );
                let mut seqs = seqs.into_iter();
                for r in group {
                    let last = seqs.by_ref().take(r.updates.len()).last().unwrap_or(0);
                    let _ = r.reply.send(Ok(last));
                }
                return;
            }
            Err(StorageError::BoardNotFound(missing)) => {
                let (gone, rest): (Vec<_>, Vec<_>) =
                    group.into_iter().partition(|r| r.board == missing);
                let error = Arc::new(StorageError::BoardNotFound(missing));
                for r in gone {
                    let _ = r.reply.send(Err(error.clone()));
                }
                if rest.is_empty() {
                    return;
                }
                group = rest;
            }
            Err(e) => {
                warn!(error = %e, requests = group.len(), "group commit failed");
                metrics.error(kind::COMMIT_FAILED);
                let error = Arc::new(e);
                for r in group {
                    let _ = r.reply.send(Err(error.clone()));
                }
                return;
            }
        }
    }
}
