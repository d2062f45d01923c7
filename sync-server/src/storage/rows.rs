//! Row shapes and conversions shared by the SQL backends.

use super::{BlobFormat, BoardInfo, RunRecord, RunState, StorageError, VersionInfo, VersionKind};
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

/// The columns of `assistant_runs` that [`RunRow`] reads, in its order (no `board_id`: runs
/// are always read through their board).
pub(super) const RUN_COLUMNS: &str = "id, user_id, prompt, model, state, error, summary, \
     tool_calls, prompt_tokens, completion_tokens, objects_created, objects_deleted, steps, \
     started_at, finished_at, alive_at, before_version, changes, undone_at, undone_by";

/// A row of `assistant_runs`, as both SQL backends read it ([`RUN_COLUMNS`]). Every count
/// is a 64-bit integer column in both dialects.
#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    id: String,
    user_id: Option<String>,
    prompt: String,
    model: String,
    state: String,
    error: Option<String>,
    summary: String,
    tool_calls: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    objects_created: i64,
    objects_deleted: i64,
    steps: i64,
    started_at: i64,
    finished_at: Option<i64>,
    alive_at: i64,
    before_version: Option<i64>,
    changes: Vec<u8>,
    undone_at: Option<i64>,
    undone_by: Option<String>,
}

pub(super) fn run_record(board: &BoardId, row: RunRow) -> Result<RunRecord, StorageError> {
    let state = RunState::parse(&row.state).ok_or_else(|| StorageError::CorruptRow {
        board: board.clone(),
        row: format!("run {}", row.id),
        reason: format!("unknown state {:?}", row.state),
    })?;
    Ok(RunRecord {
        id: row.id,
        board: board.clone(),
        user: row.user_id,
        prompt: row.prompt,
        model: row.model,
        state,
        error: row.error,
        summary: row.summary,
        tool_calls: row.tool_calls,
        prompt_tokens: u64::try_from(row.prompt_tokens).unwrap_or(0),
        completion_tokens: u64::try_from(row.completion_tokens).unwrap_or(0),
        objects_created: u32::try_from(row.objects_created).unwrap_or(0),
        objects_deleted: u32::try_from(row.objects_deleted).unwrap_or(0),
        steps: u32::try_from(row.steps).unwrap_or(0),
        started_at: row.started_at,
        finished_at: row.finished_at,
        alive_at: row.alive_at,
        before_version: row.before_version.map(VersionId),
        changes: row.changes,
        undone_at: row.undone_at,
        undone_by: row.undone_by,
    })
}

/// A token count as stored (saturating: no model reports 2^63 tokens).
pub(super) fn count_to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
