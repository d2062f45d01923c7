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

pub(super) async fn load(
    shared: &Shared,
    id: &BoardId,
) -> Result<(Doc, Nesting, ReplayStats, u64), BoardError> {
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
        let size = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len() as u64;
        Ok::<_, ReplayError>((doc, nesting, stats, size))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    debug!(board = %id, rows, "board loaded");
    Ok(replayed)
}
