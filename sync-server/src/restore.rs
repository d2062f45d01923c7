//! Restoring a board to one of its versions or to an uploaded snapshot, as one forward change
//! that connected clients receive like any other edit (`PROTOCOL.md`, Restore). The state just
//! before is saved as an automatic version (reason `before restore`) by the board's actor, with
//! no change in between, so restoring that version undoes exactly this restore.

use std::sync::Arc;

use crdt_schema::restore::RestoreReport;
use yrs::{Doc, ReadTxn, Transact};

use crate::board::registry::Boards;
use crate::board::{BoardCmd, BoardError, Read, VersionMeta};
use crate::ids::{BoardId, VersionId};
use crate::protocol::decode_update;
use crate::storage::{Storage, StorageError, VersionInfo, VersionKind};

/// What to restore the board to.
#[derive(Debug)]
pub(crate) enum Target {
    /// One of the board's versions.
    Version(VersionId),
    /// An upload: it must be a complete Yjs state (update v1).
    Snapshot(Vec<u8>),
}

/// A restore that is durable.
#[derive(Debug)]
pub(crate) struct Restored {
    /// Its id; its change has origin `restore:<id>`.
    pub(crate) restore_id: String,
    /// The version saved just before it.
    pub(crate) before_version: VersionInfo,
    /// What changed.
    pub(crate) report: RestoreReport,
}

/// Why a restore did not happen. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RestoreError {
    /// The board has no such version.
    #[error("no such version")]
    VersionNotFound,
    /// The snapshot is not a Yjs update, or does not apply.
    #[error("{0}")]
    InvalidSnapshot(String),
    /// The snapshot depends on updates it does not hold: restoring it would delete everything
    /// it does not mention.
    #[error("the snapshot depends on updates it does not contain; restore needs a full state")]
    IncompleteSnapshot,
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The board refused or failed.
    #[error(transparent)]
    Board(#[from] BoardError),
}

/// Restores boards: reads versions from the store, and has the board's actor apply the restore.
#[derive(Debug, Clone)]
pub(crate) struct Restorer {
    store: Arc<dyn Storage>,
    boards: Boards,
}

impl Restorer {
    pub(crate) fn new(store: Arc<dyn Storage>, boards: Boards) -> Self {
        Self { store, boards }
    }

    /// Restores `board` to `target`, recording `author` as the author of the version saved
    /// before it. Answers once the restore is durable.
    pub(crate) async fn restore(
        &self,
        board: &BoardId,
        target: Target,
        author: Option<String>,
    ) -> Result<Restored, RestoreError> {
        let (target, from_version) = match target {
            Target::Version(version) => {
                let version = self
                    .store
                    .get_version(board, version)
                    .await?
                    .ok_or(RestoreError::VersionNotFound)?;
                (version.data, true)
            }
            Target::Snapshot(snapshot) => {
                // An upload must be a whole state; a version is one the board had (parts of it
                // that waited for dependencies when it was saved are left out by the restore).
                check_full_state(&snapshot)?;
                (snapshot, false)
            }
        };
        let restore_id = uuid::Uuid::now_v7().simple().to_string();
        let origin = format!("restore:{restore_id}");
        // The actor saves the state before as a version and applies the restore right after,
        // with no change in between: restoring that version undoes exactly this restore.
        let before = VersionMeta {
            kind: VersionKind::Auto,
            label: None,
            author,
            reason: Some("before restore".into()),
        };
        let (report, before_version) = self
            .boards
            .call(board, |reply| {
                BoardCmd::Read(Read::Restore {
                    target: target.clone(),
                    from_version,
                    origin: origin.clone(),
                    before: before.clone(),
                    reply,
                })
            })
            .await??;
        Ok(Restored {
            restore_id,
            before_version,
            report,
        })
    }
}

/// Refuses anything but a complete Yjs state: an incremental update would make the restore
/// delete everything it does not mention.
fn check_full_state(target: &[u8]) -> Result<(), RestoreError> {
    let update = decode_update(target)
        .map_err(|e| RestoreError::InvalidSnapshot(format!("not a Yjs update (v1): {e}")))?;
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    txn.apply_update(update)
        .map_err(|e| RestoreError::InvalidSnapshot(format!("the snapshot does not apply: {e}")))?;
    if txn.has_missing_updates() {
        return Err(RestoreError::IncompleteSnapshot);
    }
    Ok(())
}
