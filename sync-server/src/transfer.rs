//! Export and import of whole boards as one Yjs update v1 (the format of
//! `Y.encodeStateAsUpdate`), shared by the HTTP API and the command line.

use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::ids::BoardId;
use crate::protocol::{ProtocolError, decode_update};
use crate::storage::replay::{ReplayError, replay_into};
use crate::storage::{BoardInfo, NewUpdate, Storage, StorageError};

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The store failed, or the board is missing or taken.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored row is corrupt.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The snapshot to import is not a Yjs update.
    #[error("not a Yjs update (v1): {0}")]
    InvalidSnapshot(ProtocolError),
    /// The task rebuilding the board stopped.
    #[error("the export task of board `{0}` failed")]
    Task(BoardId),
}

/// The board's whole durable state, read from the store (not from a running server's memory,
/// so it is safe while a server runs on the same database).
pub async fn export_board(store: &dyn Storage, id: &BoardId) -> Result<Vec<u8>, TransferError> {
    let stored = store.load(id).await?;
    let state = tokio::task::spawn_blocking(move || {
        let doc = Doc::new();
        replay_into(&doc, &stored)?;
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Ok::<_, ReplayError>(state)
    })
    .await
    .map_err(|_| TransferError::Task(id.clone()))??;
    Ok(state)
}

/// Creates board `id` holding `snapshot` (checked to be a Yjs update first). Fails with
/// [`StorageError::BoardExists`] if the id is taken; a failed import leaves no board behind.
pub async fn import_board(
    store: &dyn Storage,
    id: &BoardId,
    snapshot: &[u8],
) -> Result<BoardInfo, TransferError> {
    decode_update(snapshot).map_err(TransferError::InvalidSnapshot)?;
    let mut info = store.create_board(id).await?;
    if snapshot == yrs::Update::EMPTY_V1 {
        return Ok(info);
    }
    match store
        .append(&[NewUpdate {
            board: id,
            data: snapshot,
        }])
        .await
    {
        Ok(seqs) => {
            info.last_seq = seqs.last().copied().unwrap_or(0);
            Ok(info)
        }
        Err(e) => {
            let _ = store.delete_board(id).await;
            Err(e.into())
        }
    }
}
