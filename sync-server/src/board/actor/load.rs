//! Loading a board into a fresh doc.

use super::*;

/// A fresh doc for a board: text offsets as Yjs counts them, roots declared.
pub(super) fn new_doc() -> Doc {
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    crdt_schema::declare_roots(&doc);
    doc
}

/// A loaded board's whole state as a sync step 2 frame: encoded to measure the board, and
/// kept for the first client that joins with nothing (see `FullState`).
pub(super) struct LoadedState {
    pub(super) frame: Bytes,
    /// The length of the update inside: the board's encoded size.
    pub(super) update_len: usize,
}

/// Loads a board's rows and rebuilds its doc on a blocking thread. The rows are let go as soon
/// as the doc holds them, before the state is encoded: a large board's memory at load is its doc
/// and one encoding, not also the rows it came from.
pub(super) async fn load(
    shared: &Shared,
    id: &BoardId,
) -> Result<(Doc, Nesting, ReplayStats, LoadedState), BoardError> {
    let failed = |e: &dyn std::fmt::Display| {
        warn!(board = %id, error = %e, "board load failed");
        BoardError::LoadFailed
    };
    let stored = match shared.store.load(id).await {
        Ok(stored) => stored,
        Err(StorageError::BoardNotFound(_)) => {
            match shared.store.ensure_board(id).await {
                Ok(_) => {}
                Err(StorageError::BoardDeleted(_)) => return Err(BoardError::Deleted),
                Err(e) => return Err(failed(&e)),
            }
            shared.store.load(id).await.map_err(|e| failed(&e))?
        }
        Err(e) => return Err(failed(&e)),
    };
    let rows = stored.updates.len();
    let replayed = tokio::task::spawn_blocking(move || {
        let doc = new_doc();
        let (stats, nesting) = replay_with_nesting(&doc, &stored)?;
        drop(stored);
        let (frame, update_len) = protocol::sync_step2_of(&doc.transact(), &StateVector::default());
        let state = LoadedState { frame, update_len };
        Ok::<_, ReplayError>((doc, nesting, stats, state))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    debug!(board = %id, rows, "board loaded");
    Ok(replayed)
}
