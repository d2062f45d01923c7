//! The loaded boards: atomic get-or-spawn of actors.
//!
//! The map holds one handle per loaded board. [`Boards::handle`] inserts the handle before the
//! actor has loaded anything, under the map's lock, so two first connections always reach the
//! same actor; the actor loads the board itself and queues commands meanwhile. An actor removes
//! its own entry when it stops (`remove_if`, checked by actor id so a newer actor for the same
//! board is never removed by an older one). A handle whose actor stopped fails to send, and the
//! caller asks again.
//!
//! Deleting a board ([`Boards::delete`]) marks its id first, under the same lock: until the
//! deletion is done in storage no actor can be spawned for it, so nothing can load the board
//! between its actor stopping and its rows going, and nobody can join a stale actor once the
//! id is created again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::Either;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::peer::CloseReason;
use super::{BoardCmd, BoardConfig, BoardError, actor};
use crate::cluster::Cluster;
use crate::commit::Committer;
use crate::ids::BoardId;
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};

/// Everything board actors share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) committer: Committer,
    pub(crate) config: RegistryConfig,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    /// The other nodes (publishing what this node commits, hearing what they do).
    pub(crate) cluster: Cluster,
    boards: Mutex<Loaded>,
    /// Woken whenever a board's last background job ends.
    jobs_done: Notify,
    next_actor: AtomicU64,
}

/// A background job of one board (a compaction, a version being saved, a read of stored rows)
/// counted while it runs: deleting the board waits for it, so that it can never land on a board
/// created later under the same id.
#[derive(Debug)]
pub(crate) struct JobGuard {
    shared: Arc<Shared>,
    id: BoardId,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let mut boards = self.shared.lock();
        if let Some(count) = boards.jobs.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                boards.jobs.remove(&self.id);
                self.shared.jobs_done.notify_waiters();
            }
        }
    }
}

/// The registry's map, the boards being deleted (with how many deletions of each run), and
/// the background jobs of each board still running.
#[derive(Debug, Default)]
struct Loaded {
    actors: HashMap<BoardId, Entry>,
    deleting: HashMap<BoardId, usize>,
    jobs: HashMap<BoardId, usize>,
}

/// Settings the registry hands to its actors.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegistryConfig {
    pub(crate) board: BoardConfig,
}

#[derive(Debug)]
struct Entry {
    actor_id: u64,
    tx: mpsc::Sender<BoardCmd>,
}

/// The loaded boards. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Boards {
    shared: Arc<Shared>,
}

/// A way to send commands to one board's actor.
#[derive(Debug, Clone)]
pub(crate) struct BoardHandle {
    tx: mpsc::Sender<BoardCmd>,
}

impl BoardHandle {
    /// Sends a command, waiting if the actor's inbox is full. Fails if the actor stopped.
    ///
    /// The command goes in at once when there is room (almost always); only a wait is a future
    /// of its own, boxed. Each connection's reader awaits this, so its future would otherwise
    /// hold room for a command and a waiting send for as long as the connection lives.
    pub(crate) fn send(
        &self,
        cmd: BoardCmd,
    ) -> impl Future<Output = Result<(), BoardError>> + Send + '_ {
        match self.tx.try_send(cmd) {
            Ok(()) => Either::Left(std::future::ready(Ok(()))),
            Err(TrySendError::Closed(_)) => Either::Left(std::future::ready(Err(BoardError::Gone))),
            Err(TrySendError::Full(cmd)) => Either::Right(Box::pin(async move {
                self.tx.send(cmd).await.map_err(|_| BoardError::Gone)
            })),
        }
    }
}

impl Shared {
    /// Removes the board's entry if it still belongs to actor `actor_id`.
    pub(crate) fn remove_if(&self, id: &BoardId, actor_id: u64) -> bool {
        let mut boards = self.lock();
        match boards.actors.get(id) {
            Some(entry) if entry.actor_id == actor_id => {
                boards.actors.remove(id);
                true
            }
            _ => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.boards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a background job of board `id` until the guard is dropped.
    pub(crate) fn job(self: &Arc<Self>, id: &BoardId) -> JobGuard {
        *self.lock().jobs.entry(id.clone()).or_insert(0) += 1;
        JobGuard {
            shared: self.clone(),
            id: id.clone(),
        }
    }

    /// Resolves once board `id` has no background job running.
    async fn jobs_finished(&self, id: &BoardId) {
        loop {
            let notified = self.jobs_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.lock().jobs.contains_key(id) {
                return;
            }
            notified.await;
        }
    }
}

impl Boards {
    pub(crate) fn new(
        store: Arc<dyn Storage>,
        committer: Committer,
        config: RegistryConfig,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        cluster: Cluster,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                committer,
                config,
                tracker,
                shutdown,
                metrics,
                cluster,
                boards: Mutex::default(),
                jobs_done: Notify::new(),
                next_actor: AtomicU64::new(1),
            }),
        }
    }

    /// The link to the other nodes.
    pub(crate) fn cluster(&self) -> Cluster {
        self.shared.cluster.clone()
    }

    /// The board's actor, spawned (and loading) if the board is not loaded; refused while the
    /// board is being deleted.
    pub(crate) fn handle(&self, id: &BoardId) -> Result<BoardHandle, BoardError> {
        let mut boards = self.shared.lock();
        if boards.deleting.contains_key(id) {
            return Err(BoardError::Deleted);
        }
        if let Some(entry) = boards.actors.get(id).filter(|e| !e.tx.is_closed()) {
            return Ok(BoardHandle {
                tx: entry.tx.clone(),
            });
        }
        let actor_id = self.shared.next_actor.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.shared.config.board.inbox.max(1));
        boards.actors.insert(
            id.clone(),
            Entry {
                actor_id,
                tx: tx.clone(),
            },
        );
        drop(boards);
        let span = tracing::info_span!("board", board = %id);
        self.shared
            .tracker
            .spawn(actor::run(self.shared.clone(), id.clone(), actor_id, rx).instrument(span));
        Ok(BoardHandle { tx })
    }

    /// Sends a stateless message (an application's signal between peers, never stored) to
    /// every connection of board `id` that takes them (Hocuspocus documents); returns to how
    /// many it was queued. The server-side hook for stateless messages: the HTTP API's
    /// `POST /v1/boards/{id}/stateless`, and any service that signals clients (the assistant
    /// could). A board that is not loaded has no connection: it is not loaded for this.
    pub(crate) async fn send_stateless(&self, id: &BoardId, payload: &str) -> usize {
        let Some(board) = self.loaded(id) else {
            return 0;
        };
        let (reply, answer) = oneshot::channel();
        let cmd = BoardCmd::Stateless {
            from: None,
            frame: crate::protocol::stateless(payload),
            reply: Some(reply),
        };
        // An actor that stopped meanwhile had no one to send it to.
        if board.send(cmd).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    /// The board's actor if the board is loaded (never loads it).
    pub(crate) fn loaded(&self, id: &BoardId) -> Option<BoardHandle> {
        let boards = self.shared.lock();
        boards
            .actors
            .get(id)
            .filter(|e| !e.tx.is_closed())
            .map(|e| BoardHandle { tx: e.tx.clone() })
    }

    /// Sends a command built by `make` to the board's actor, asking again if the actor it
    /// reached had just stopped (evicted between lookup and send).
    pub(crate) async fn call<T>(
        &self,
        id: &BoardId,
        make: impl FnMut(oneshot::Sender<T>) -> BoardCmd,
    ) -> Result<T, BoardError> {
        self.call_with_handle(id, make)
            .await
            .map(|(value, _)| value)
    }

    /// [`Boards::call`], also returning the handle of the actor that answered (a connection
    /// keeps talking to the actor it joined).
    pub(crate) async fn call_with_handle<T>(
        &self,
        id: &BoardId,
        mut make: impl FnMut(oneshot::Sender<T>) -> BoardCmd,
    ) -> Result<(T, BoardHandle), BoardError> {
        for _ in 0..3 {
            let (reply, rx) = oneshot::channel();
            let handle = self.handle(id)?;
            if handle.send(make(reply)).await.is_err() {
                continue;
            }
            if let Ok(value) = rx.await {
                return Ok((value, handle));
            }
        }
        Err(BoardError::Gone)
    }

    /// Deletes a board: closes its connections with `reason`, stops its actor (which first
    /// sees its commits in flight answered), waits for the board's background jobs, and
    /// deletes it with its history in storage. While this runs no actor can be spawned for the
    /// board (see the module docs), so nothing of the deleted board can land on one created
    /// later under the same id. Returns whether the board existed.
    pub(crate) async fn delete(
        &self,
        id: &BoardId,
        reason: CloseReason,
    ) -> Result<bool, StorageError> {
        let actor = {
            let mut boards = self.shared.lock();
            *boards.deleting.entry(id.clone()).or_insert(0) += 1;
            boards.actors.get(id).map(|e| e.tx.clone())
        };
        // Unmarked however this future ends (even if its caller goes away).
        let _unmark = Unmark {
            shared: &self.shared,
            id,
        };
        if let Some(tx) = actor {
            let (reply, rx) = oneshot::channel();
            if tx.send(BoardCmd::Shutdown { reason, reply }).await.is_ok() {
                let _ = rx.await;
            }
        }
        self.shared.jobs_finished(id).await;
        let existed = self.shared.store.delete_board(id).await?;
        // The other nodes close their clients of it (one that misses this finds the board
        // gone at its next check of the database).
        self.shared.cluster.publish_deleted(id);
        Ok(existed)
    }
}

/// Takes a board's deletion mark off when dropped.
struct Unmark<'a> {
    shared: &'a Shared,
    id: &'a BoardId,
}

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        let mut boards = self.shared.lock();
        if let Some(count) = boards.deleting.get_mut(self.id) {
            *count -= 1;
            if *count == 0 {
                boards.deleting.remove(self.id);
            }
        }
    }
}
