//! Export and import of whole boards as one Yjs update v1 (the format of
//! `Y.encodeStateAsUpdate`), shared by the HTTP API and the command line.

use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::ids::{BoardId, Seq};
use crate::protocol::{ProtocolError, decode_update};
use crate::storage::replay::{ReplayError, replay_into};
use crate::storage::{BoardInfo, Storage, StorageError};

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
    stored_state(store, id).await.map(|(state, _)| state)
}

/// [`export_board`], with the log sequence the state covers.
pub(crate) async fn stored_state(
    store: &dyn Storage,
    id: &BoardId,
) -> Result<(Vec<u8>, Seq), TransferError> {
    let stored = store.load(id).await?;
    tokio::task::spawn_blocking(move || {
        let doc = Doc::new();
        let stats = replay_into(&doc, &stored)?;
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        Ok::<_, ReplayError>((state, stats.last_seq))
    })
    .await
    .map_err(|_| TransferError::Task(id.clone()))?
    .map_err(TransferError::from)
}

/// Creates board `id` holding `snapshot` (checked to be a Yjs update first), in one
/// transaction: no connection can ever see the board without its content, and a failed import
/// leaves no board behind. Fails with [`StorageError::BoardExists`] if the id is taken.
pub async fn import_board(
    store: &dyn Storage,
    id: &BoardId,
    snapshot: &[u8],
) -> Result<BoardInfo, TransferError> {
    decode_update(snapshot).map_err(TransferError::InvalidSnapshot)?;
    if snapshot == yrs::Update::EMPTY_V1 {
        return Ok(store.create_board(id).await?);
    }
    Ok(store.create_board_with(id, snapshot).await?)
}
