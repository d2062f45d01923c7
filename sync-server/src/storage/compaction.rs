//! Folding a board's update log into a snapshot.
//!
//! The merge replays the snapshot and the log into a `yrs::Doc` and re-encodes it: linear in
//! the log, and garbage-collected, unlike `merge_updates_v1` over many updates, which is
//! quadratic. The new snapshot and the deletion of the rows it covers commit in one transaction.

use super::replay::{ReplayError, merged_state};
use super::{CompactionStats, NewSnapshot, Storage, StorageError};
use crate::ids::BoardId;

/// Why a compaction failed. The board is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored row is corrupt, so the log cannot be folded.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The merge task died.
    #[error("the merge task for board `{0}` failed")]
    MergeTask(BoardId),
}

/// Compacts one board: everything in its log now becomes its snapshot. Returns `None` when
/// the log after the snapshot is empty. Appends made meanwhile keep their rows and stay after
/// the snapshot.
pub async fn compact_board(
    store: &dyn Storage,
    id: &BoardId,
) -> Result<Option<CompactionStats>, CompactionError> {
    let stored = store.load(id).await?;
    let Some(upto) = stored.updates.last().map(|u| u.seq) else {
        return Ok(None);
    };
    let (state, _) = tokio::task::spawn_blocking(move || merged_state(&stored))
        .await
        .map_err(|_| CompactionError::MergeTask(id.clone()))??;
    let pending = store
        .begin_compaction(id, NewSnapshot { upto, data: &state })
        .await?;
    Ok(Some(pending.commit().await?))
}
