//! Group commit: one task turns the updates of every board into as few transactions as it can.
//!
//! Board actors send each update as soon as it is applied (a few dozen requests in flight per
//! board at most), and get their answers in order. The committer takes the first request
//! waiting, then everything else already queued (up to a cap), and appends it all in one
//! transaction. While that transaction commits, new requests queue up and form the next group,
//! so the cost of a commit is shared by every update that arrived during the previous one.
//!
//! On a busy server that alone makes many small transactions: the cheaper a commit, the sooner
//! the next one starts, with whatever little arrived meanwhile. So under load groups are also
//! paced: a group starts at least `interval` after the previous one started, and takes
//! everything that arrived meanwhile, which also lets every connection receive the group's
//! updates in one write. "Under load" means updates arrived faster than `min_rate` per second
//! over the last window of 100 ms; below that rate, or when the committer has been idle for
//! longer than the interval, an update is committed at once: pacing costs latency (about an
//! interval and a timer tick), so it is spent only where the commits' CPU is worth saving.

use std::sync::Arc;
use std::time::Duration;

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

/// How the committer groups updates.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Most updates in one transaction.
    pub max_updates: usize,
    /// Least time between the starts of two transactions under load (zero: none).
    pub interval: Duration,
    /// Updates per second from which on the committer is under load and paces its groups.
    pub min_rate: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            max_updates: 4096,
            interval: Duration::from_millis(1),
            min_rate: 2000,
        }
    }
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
        pacing: Pacing,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Unbounded is bounded in practice: each board has a few dozen requests in flight at
        // most (the actor's `MAX_IN_FLIGHT`).
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(run(store, rx, pacing, metrics));
        Self { tx }
    }

    /// A committer the caller plays: it receives every request and answers it (or not) when
    /// it likes. For tests of what waits on commits.
    #[cfg(test)]
    pub(crate) fn manual() -> (Self, mpsc::UnboundedReceiver<CommitRequest>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues a request. Fails only if the committer has stopped.
    pub(crate) fn submit(&self, request: CommitRequest) -> Result<(), CommitRequest> {
        self.tx.send(request).map_err(|e| e.0)
    }
}

async fn run(
    store: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<CommitRequest>,
    pacing: Pacing,
    metrics: Arc<Metrics>,
) {
    let max_updates = pacing.max_updates.max(1);
    let mut last_start: Option<tokio::time::Instant> = None;
    let mut rate = RateWindow::new(tokio::time::Instant::now());
    while let Some(first) = rx.recv().await {
        if let Some(due) = last_start.map(|at| at + pacing.interval)
            && rate.per_second(tokio::time::Instant::now()) >= f64::from(pacing.min_rate)
            && due > tokio::time::Instant::now()
        {
            tokio::time::sleep_until(due).await;
        }
        last_start = Some(tokio::time::Instant::now());
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
        rate.count(n);
        commit_group(store.as_ref(), group, &metrics).await;
    }
    debug!("committer stopped");
}

/// How fast updates reach the committer: counted over windows of [`RateWindow::LENGTH`], the
/// rate being that of the last whole window (or of the current one, once it is longer).
#[derive(Debug)]
struct RateWindow {
    start: tokio::time::Instant,
    count: usize,
    last: f64,
}

impl RateWindow {
    const LENGTH: Duration = Duration::from_millis(100);

    fn new(now: tokio::time::Instant) -> Self {
        Self {
            start: now,
            count: 0,
            last: 0.0,
        }
    }

    fn count(&mut self, updates: usize) {
        self.count += updates;
    }

    /// Updates per second lately.
    fn per_second(&mut self, now: tokio::time::Instant) -> f64 {
        let elapsed = now.duration_since(self.start);
        if elapsed >= Self::LENGTH {
            // After a quiet spell the window is long and the rate it gives is low: right.
            self.last = self.count as f64 / elapsed.as_secs_f64();
            self.start = now;
            self.count = 0;
        }
        self.last
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use super::*;
    use crate::storage::Boards;
    use crate::storage::memory::MemoryStore;

    fn metric(metrics: &Metrics, name: &str) -> f64 {
        let text = metrics.render();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        line[name.len() + 1..].trim().parse().unwrap()
    }

    fn request(
        board: &BoardId,
    ) -> (
        CommitRequest,
        oneshot::Receiver<Result<Seq, Arc<StorageError>>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let request = CommitRequest {
            board: board.clone(),
            updates: vec![vec![0, 0]],
            reply,
        };
        (request, rx)
    }

    /// A committer over an in-memory store holding `boards`.
    async fn committer(
        boards: &[&BoardId],
        interval: Duration,
        min_rate: u32,
    ) -> (Committer, TaskTracker, Arc<Metrics>) {
        let store = Arc::new(MemoryStore::new());
        for board in boards {
            store.create_board(board).await.unwrap();
        }
        let metrics = Arc::new(Metrics::new());
        let tracker = TaskTracker::new();
        let pacing = Pacing {
            max_updates: 100,
            interval,
            min_rate,
        };
        let committer = Committer::spawn(store, &tracker, pacing, metrics.clone());
        (committer, tracker, metrics)
    }

    /// A commit arriving at an idle committer starts at once; under load, what arrives within
    /// the interval after a group started waits and shares the next transaction.
    #[tokio::test]
    async fn groups_are_paced_only_under_load() {
        let (a, b) = ("a".parse::<BoardId>().unwrap(), "b".parse().unwrap());
        let interval = Duration::from_secs(1);
        let (committer, tracker, metrics) = committer(&[&a, &b], interval, 0).await;

        let started = Instant::now();
        let (first, first_rx) = request(&a);
        committer.submit(first).unwrap();
        assert_eq!(first_rx.await.unwrap().unwrap(), 1);
        assert!(
            started.elapsed() < interval / 2,
            "an idle commit waits for nothing"
        );

        let (second, mut second_rx) = request(&a);
        let (third, third_rx) = request(&b);
        committer.submit(second).unwrap();
        committer.submit(third).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut second_rx)
                .await
                .is_err(),
            "a commit right after another waits for the interval"
        );
        assert_eq!(second_rx.await.unwrap().unwrap(), 2);
        assert_eq!(third_rx.await.unwrap().unwrap(), 1);
        assert!(started.elapsed() >= interval);
        assert_eq!(metric(&metrics, "sync_commit_updates_count"), 2.0);
        assert_eq!(metric(&metrics, "sync_commit_updates_sum"), 3.0);

        // Idle again: the next commit starts at once.
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let idle = Instant::now();
        let (fourth, fourth_rx) = request(&b);
        committer.submit(fourth).unwrap();
        assert_eq!(fourth_rx.await.unwrap().unwrap(), 2);
        assert!(idle.elapsed() < interval / 2);
        drop(committer);
        tracker.close();
        tracker.wait().await;
    }

    /// Below the rate that counts as load, a commit right after another does not wait.
    #[tokio::test]
    async fn light_load_is_not_paced() {
        let a = "a".parse::<BoardId>().unwrap();
        let interval = Duration::from_secs(1);
        let (committer, tracker, _) = committer(&[&a], interval, 1_000_000).await;
        let started = Instant::now();
        for seq in 1..=3 {
            let (next, rx) = request(&a);
            committer.submit(next).unwrap();
            assert_eq!(rx.await.unwrap().unwrap(), seq);
        }
        assert!(
            started.elapsed() < interval / 2,
            "three commits in a row, none paced"
        );
        drop(committer);
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn the_rate_is_that_of_the_last_whole_window() {
        let t0 = tokio::time::Instant::now();
        let mut rate = RateWindow::new(t0);
        rate.count(300);
        assert_eq!(rate.per_second(t0 + Duration::from_millis(50)), 0.0);
        let at = t0 + RateWindow::LENGTH;
        assert!((rate.per_second(at) - 3000.0).abs() < 1e-6);
        // Within the next window the last whole window's rate holds.
        rate.count(10);
        assert!((rate.per_second(at + Duration::from_millis(10)) - 3000.0).abs() < 1e-6);
        // After a quiet second, the long window's rate is low.
        assert!(rate.per_second(at + Duration::from_secs(1)) < 11.0);
    }
}
