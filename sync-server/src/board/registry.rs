//! The loaded boards: atomic get-or-spawn of actors.
//!
//! The map holds one handle per loaded board. [`Boards::handle`] inserts the handle before the
//! actor has loaded anything, under the map's lock, so two first connections always reach the
//! same actor; the actor loads the board itself and queues commands meanwhile. An actor removes
//! its own entry when it stops (`remove_if`, checked by actor id so a newer actor for the same
//! board is never removed by an older one). A handle whose actor stopped fails to send, and the
//! caller asks again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::peer::CloseReason;
use super::{BoardCmd, BoardConfig, BoardError, actor};
use crate::commit::Committer;
use crate::ids::BoardId;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Everything board actors share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) committer: Committer,
    pub(crate) config: RegistryConfig,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Arc<Metrics>,
    boards: Mutex<HashMap<BoardId, Entry>>,
    next_actor: AtomicU64,
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
    pub(crate) async fn send(&self, cmd: BoardCmd) -> Result<(), BoardError> {
        self.tx.send(cmd).await.map_err(|_| BoardError::Gone)
    }
}

impl Shared {
    /// Removes the board's entry if it still belongs to actor `actor_id`.
    pub(crate) fn remove_if(&self, id: &BoardId, actor_id: u64) -> bool {
        let mut boards = self.boards.lock().unwrap_or_else(PoisonError::into_inner);
        match boards.get(id) {
            Some(entry) if entry.actor_id == actor_id => {
                boards.remove(id);
                true
            }
            _ => false,
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
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                committer,
                config,
                tracker,
                shutdown,
                metrics,
                boards: Mutex::new(HashMap::new()),
                next_actor: AtomicU64::new(1),
            }),
        }
    }

    /// The board's actor, spawned (and loading) if the board is not loaded.
    pub(crate) fn handle(&self, id: &BoardId) -> BoardHandle {
        let mut boards = self
            .shared
            .boards
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = boards.get(id).filter(|e| !e.tx.is_closed()) {
            return BoardHandle {
                tx: entry.tx.clone(),
            };
        }
        let actor_id = self.shared.next_actor.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.shared.config.board.inbox.max(1));
        boards.insert(
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
        BoardHandle { tx }
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
            let handle = self.handle(id);
            if handle.send(make(reply)).await.is_err() {
                continue;
            }
            if let Ok(value) = rx.await {
                return Ok((value, handle));
            }
        }
        Err(BoardError::Gone)
    }

    /// Closes every connection of a loaded board with `reason` and stops its actor.
    pub(crate) async fn close_board(&self, id: &BoardId, reason: CloseReason) {
        let entry = {
            let boards = self
                .shared
                .boards
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            boards.get(id).map(|e| e.tx.clone())
        };
        if let Some(tx) = entry {
            let (reply, rx) = oneshot::channel();
            if tx.send(BoardCmd::Shutdown { reason, reply }).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// The store behind the boards.
    pub(crate) fn store(&self) -> &Arc<dyn Storage> {
        &self.shared.store
    }
}
