//! Row shapes and conversions shared by the SQL backends.

use super::{BlobFormat, BoardInfo, StorageError, VersionInfo, VersionKind};
use crate::ids::{BoardId, VersionId};

pub(super) type BoardRow = (String, i64, i64, i64);
pub(super) type VersionRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

pub(super) fn board_info(row: BoardRow) -> Result<BoardInfo, StorageError> {
    let (id, created_at, updated_at, last_seq) = row;
    let id = BoardId::parse(&id).map_err(|_| StorageError::InvalidStoredBoardId(id.clone()))?;
    Ok(BoardInfo {
        id,
        created_at,
        updated_at,
        last_seq,
    })
}

pub(super) fn version_info(board: &BoardId, row: VersionRow) -> Result<VersionInfo, StorageError> {
    let (id, kind, label, author, reason, created_at, covers_seq, size) = row;
    let kind = VersionKind::parse(&kind).ok_or_else(|| StorageError::CorruptRow {
        board: board.clone(),
        row: format!("version {id}"),
        reason: format!("unknown kind {kind:?}"),
    })?;
    Ok(VersionInfo {
        id: VersionId(id),
        board: board.clone(),
        kind,
        label,
        author,
        reason,
        created_at,
        covers_seq,
        size: u64::try_from(size).unwrap_or(0),
    })
}

pub(super) fn blob_format(
    board: &BoardId,
    row: &str,
    code: i64,
) -> Result<BlobFormat, StorageError> {
    i16::try_from(code)
        .ok()
        .and_then(BlobFormat::from_code)
        .ok_or_else(|| StorageError::CorruptRow {
            board: board.clone(),
            row: row.to_owned(),
            reason: format!("unknown format code {code}"),
        })
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub(super) fn is_fk_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}
