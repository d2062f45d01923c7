//! The board actor as the assistant's [`BoardPeer`]: edits run on the actor like any other
//! change to the board (durable before anyone sees them, then broadcast to every connection),
//! and the assistant's presence is the server's own awareness entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ai_agent::{BoardPeer, Edit, Edited, PeerError, Presence};
use serde_json::{Value, json};
use tracing::warn;

use super::changes::RunChanges;
use crate::board::registry::Boards;
use crate::board::{BoardCmd, BoardError, Read};
use crate::ids::BoardId;
use crate::storage::Storage;

/// One run's view of its board.
pub(crate) struct ActorPeer {
    boards: Boards,
    /// Where the run's changes are kept as it goes.
    store: Arc<dyn Storage>,
    board: BoardId,
    run_id: String,
    /// What the run's edits inserted and deleted so far.
    changes: Arc<Mutex<RunChanges>>,
}

impl ActorPeer {
    pub(crate) fn new(
        boards: Boards,
        store: Arc<dyn Storage>,
        board: BoardId,
        run_id: String,
    ) -> Self {
        Self {
            boards,
            store,
            board,
            run_id,
            changes: Arc::default(),
        }
    }

    /// What the run changed, for undo.
    pub(crate) fn changes(&self) -> RunChanges {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type SlotEdit = Box<dyn FnOnce(&yrs::Doc) -> Edited + Send>;

#[async_trait::async_trait]
impl BoardPeer for ActorPeer {
    async fn edit(&self, edit: Edit) -> Result<Value, PeerError> {
        let changes = self.changes.clone();
        let changed = Arc::new(AtomicBool::new(false));
        let changed_in = changed.clone();
        let recorded: SlotEdit = Box::new(move |doc| {
            let edited = edit(doc);
            if let Some(update) = &edited.update {
                changed_in.store(true, Ordering::Relaxed);
                changes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(update);
            }
            edited
        });
        // `call` asks again if the actor it reached stopped first. The edit runs at most
        // once: a second attempt finds the slot empty and says so, since the first actor may
        // have run it and failed to make it durable.
        let slot = Arc::new(Mutex::new(Some(recorded)));
        let lost = Arc::new(AtomicBool::new(false));
        let answer = self
            .boards
            .call(&self.board, |reply| {
                let (slot, lost) = (slot.clone(), lost.clone());
                BoardCmd::Read(Read::Edit {
                    edit: Box::new(move |doc| {
                        let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                        match taken {
                            Some(edit) => edit(doc),
                            None => {
                                lost.store(true, Ordering::Relaxed);
                                Edited {
                                    update: None,
                                    result: Value::Null,
                                }
                            }
                        }
                    }),
                    reply,
                })
            })
            .await;
        if lost.load(Ordering::Relaxed) {
            return Err(PeerError::CommitFailed(
                "the board restarted during the edit".into(),
            ));
        }
        let value = match answer {
            Ok(Ok(value)) => value,
            Ok(Err(e)) | Err(e) => return Err(peer_error(e)),
        };
        if changed.load(Ordering::Relaxed) {
            // Kept with the run as it goes, so a run whose server stops can still be undone.
            let bytes = self.changes().encode();
            if let Err(e) = self
                .store
                .save_run_changes(&self.board, &self.run_id, &bytes)
                .await
            {
                warn!(board = %self.board, run_id = self.run_id, error = %e, "could not save the run's changes so far");
            }
        }
        Ok(value)
    }

    async fn presence(&self, presence: Option<Presence>) -> Result<(), PeerError> {
        let state = presence.map(|p| awareness_state(&self.run_id, &p).to_string());
        self.boards
            .call(&self.board, |reply| BoardCmd::ServerPresence {
                state: state.clone(),
                reply,
            })
            .await
            .map_err(peer_error)
    }
}

/// The assistant's awareness state, shaped like the `user` field y-websocket apps use, plus
/// what it is doing.
fn awareness_state(run_id: &str, p: &Presence) -> Value {
    json!({
        "user": { "name": p.name, "color": p.color, "assistant": true },
        "assistant": { "run": run_id, "status": p.status },
        "cursor": p.cursor.map(|[x, y]| json!({ "x": x, "y": y })),
    })
}

fn peer_error(e: BoardError) -> PeerError {
    match e {
        BoardError::Gone | BoardError::NotFound | BoardError::Deleted | BoardError::LoadFailed => {
            PeerError::BoardClosed
        }
        BoardError::CommitFailed => {
            PeerError::CommitFailed("the board could not store the edit".into())
        }
        BoardError::Full | BoardError::Busy => PeerError::Busy,
        other @ (BoardError::Rejected(_) | BoardError::TooLarge(_) | BoardError::TooDeep(_)) => {
            PeerError::Other(other.to_string())
        }
    }
}
