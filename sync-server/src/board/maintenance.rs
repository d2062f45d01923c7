//! A board's background work on its stored history: compaction, automatic versions, and
//! versions saved on request. Each runs as a tracked task and answers the actor through a
//! oneshot.
//!
//! Everything here is written from **durable state only**, so a compaction can never delete a
//! row whose content is not in the snapshot it writes, and a version never holds what was not
//! committed. The live document is used only at a moment it holds exactly the stored rows up
//! to the actor's sequence: nothing whose commit is still in flight (and may yet fail), no
//! rows of another writer still unread. Otherwise the stored rows themselves are folded; the
//! actor does that only when no such quiet moment came for a while (folding costs a read and a
//! replay, encoding the doc costs neither).
//!
//! **One server at a time.** Compaction, automatic versions and retention of a board run
//! under the board's maintenance lock ([`Snapshots::try_lock_maintenance`]: an advisory lock
//! on PostgreSQL, where several servers share the database). A job that finds it held is
//! skipped ([`JobError::LockHeld`]: counted, not logged as a failure) and tried again later.
//! On a shared database ([`folds_stored_rows`]) the jobs always fold the stored rows, never a
//! server's doc: another server may have appended rows this one has not read yet.
//!
//! [`Snapshots::try_lock_maintenance`]: crate::storage::Snapshots::try_lock_maintenance

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::VersionMeta;
use super::registry::Shared;
use crate::ids::{BoardId, Seq};
use crate::storage::compaction::{CompactionError, compact_board};
use crate::storage::{
    Backend, CompactionStats, NewSnapshot, NewVersion, StorageError, VersionInfo, VersionKind,
};
use crate::transfer::{TransferError, stored_state};

/// Why background work on a board failed. The board is unchanged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The stored rows could not be folded.
    #[error(transparent)]
    Compaction(#[from] CompactionError),
    /// The stored state could not be read.
    #[error(transparent)]
    State(#[from] TransferError),
    /// The task ended without answering (the runtime is shutting down).
    #[error("the task stopped before it answered")]
    Stopped,
    /// Skipped: the board's maintenance lock is held (another server is compacting the
    /// board or saving its automatic version). Not a failure.
    #[error("another server holds the board's maintenance lock")]
    LockHeld,
}

/// Whether the board's upkeep folds its stored rows rather than the doc: on a database
/// several servers share (PostgreSQL), another server may have appended rows this one has not
/// read yet, so only the stored rows are the board. SQLite and memory serve one server.
pub(super) fn folds_stored_rows(shared: &Shared) -> bool {
    shared.store.backend() == Backend::Postgres
}

/// A job's answer, once it comes.
pub(super) type Job<T> = oneshot::Receiver<Result<T, JobError>>;

/// Resolves when `job` answers (never, if there is none). Take the job out once it has.
pub(super) async fn finished<T>(job: &mut Option<Job<T>>) -> Result<T, JobError> {
    match job {
        Some(rx) => rx.await.unwrap_or(Err(JobError::Stopped)),
        None => std::future::pending().await,
    }
}

/// Where a version's content comes from.
#[derive(Debug)]
pub(super) enum Source {
    /// The live document's state, taken when it held only durable data, and the log sequence
    /// it covers.
    Doc { state: Bytes, seq: Seq },
    /// The stored rows, folded (for when the document holds updates still being committed).
    Stored,
}

/// Runs `work` as a tracked task counted as a job of board `id` (see
/// [`super::registry::JobGuard`]).
fn spawn<T: Send + 'static>(
    shared: &Arc<Shared>,
    id: &BoardId,
    work: impl Future<Output = Result<T, JobError>> + Send + 'static,
) -> Job<T> {
    let (tx, rx) = oneshot::channel();
    let job = shared.job(id);
    shared.tracker.spawn(async move {
        let _ = tx.send(work.await);
        drop(job);
    });
    rx
}

/// Folds the board's log into a snapshot; `None` if there was nothing to fold. From the doc's
/// state if the actor could vouch for it ([`Source::Doc`]: the doc held exactly the stored
/// rows up to `seq`), otherwise from the stored rows themselves. Under the board's maintenance
/// lock ([`JobError::LockHeld`] if another holds it).
pub(super) fn compact(
    shared: &Arc<Shared>,
    id: &BoardId,
    source: Source,
) -> Job<Option<CompactionStats>> {
    let store = shared.store.clone();
    let board = id.clone();
    spawn(shared, id, async move {
        let Some(_lock) = store.try_lock_maintenance(&board).await? else {
            return Err(JobError::LockHeld);
        };
        match source {
            Source::Stored => Ok(compact_board(store.as_ref(), &board).await?),
            Source::Doc { state, seq } => {
                let snapshot = NewSnapshot {
                    upto: seq,
                    data: &state,
                };
                let pending = store.begin_compaction(&board, snapshot).await?;
                Ok(Some(pending.commit().await?))
            }
        }
    })
}

/// Saves an automatic version (author `server`, `reason`) of the board from `source`, then
/// applies retention, under the board's maintenance lock ([`JobError::LockHeld`] if another
/// holds it). If an automatic version of the server's covering more than `since` (the newest
/// this actor knows of) was saved meanwhile, by another server, that one is the answer and
/// nothing is saved.
pub(super) fn checkpoint(
    shared: &Arc<Shared>,
    board: &BoardId,
    source: Source,
    reason: &'static str,
    since: Seq,
) -> Job<VersionInfo> {
    let (store, id) = (shared.store.clone(), board.clone());
    let keep = shared.config.board.keep_auto_versions;
    let metrics = shared.metrics.clone();
    spawn(shared, board, async move {
        let Some(_lock) = store.try_lock_maintenance(&id).await? else {
            return Err(JobError::LockHeld);
        };
        let meta = automatic(reason);
        let taken = store.list_versions(&id).await?.into_iter().find(|v| {
            v.kind == VersionKind::Auto && v.author == meta.author && v.covers_seq > since
        });
        if let Some(taken) = taken {
            return Ok(taken);
        }
        let saved = write_version(store.as_ref(), &id, source, &meta).await?;
        metrics.versions_saved.inc();
        if let Err(e) = store.prune_versions(&id, keep).await {
            tracing::warn!(board = %id, error = %e, "version retention failed");
        }
        Ok(saved)
    })
}

/// Saves a version of the board from `source` (on request: named, or automatic before a
/// restore or an assistant run), then, for automatic versions, applies retention (keeping
/// `keep_auto`) if the board's maintenance lock is free (otherwise the server holding it
/// applies retention).
pub(super) fn save_version(
    shared: &Arc<Shared>,
    board: &BoardId,
    source: Source,
    meta: VersionMeta,
) -> Job<VersionInfo> {
    let (store, id) = (shared.store.clone(), board.clone());
    let keep = shared.config.board.keep_auto_versions;
    let metrics = shared.metrics.clone();
    spawn(shared, board, async move {
        let saved = write_version(store.as_ref(), &id, source, &meta).await?;
        metrics.versions_saved.inc();
        if meta.kind == VersionKind::Auto {
            let pruned = match store.try_lock_maintenance(&id).await {
                Ok(Some(_lock)) => store.prune_versions(&id, keep).await.map(drop),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = pruned {
                tracing::warn!(board = %id, error = %e, "version retention failed");
            }
        }
        Ok(saved)
    })
}

/// Writes a version of the board from `source`.
async fn write_version(
    store: &dyn crate::storage::Storage,
    id: &BoardId,
    source: Source,
    meta: &VersionMeta,
) -> Result<VersionInfo, JobError> {
    let (state, seq) = match source {
        Source::Doc { state, seq } => (state, seq),
        Source::Stored => {
            let (state, seq) = stored_state(store, id).await?;
            (Bytes::from(state), seq)
        }
    };
    let version = NewVersion {
        kind: meta.kind,
        label: meta.label.as_deref(),
        author: meta.author.as_deref(),
        reason: meta.reason.as_deref(),
        covers_seq: seq,
        data: &state,
    };
    Ok(store.save_version(id, version).await?)
}

/// Reads the board's stored rows with `after < seq < before`: rows another writer committed
/// between this actor's own (see [`crate::storage::UpdateLog::read_range`]).
pub(super) fn read_rows(
    shared: &Arc<Shared>,
    board: &BoardId,
    after: Seq,
    before: Seq,
) -> Job<Vec<Vec<u8>>> {
    let (store, id) = (shared.store.clone(), board.clone());
    spawn(shared, board, async move {
        Ok(store.read_range(&id, after, before).await?)
    })
}

/// The board's last sequence number in the database (`None`: the board is gone).
pub(super) fn stored_seq(shared: &Arc<Shared>, board: &BoardId) -> Job<Option<Seq>> {
    let (store, id) = (shared.store.clone(), board.clone());
    spawn(shared, board, async move {
        Ok(store.get_board(&id).await?.map(|b| b.last_seq))
    })
}

/// What an automatic version records.
pub(super) fn automatic(reason: &str) -> VersionMeta {
    VersionMeta {
        kind: VersionKind::Auto,
        label: None,
        author: Some("server".into()),
        reason: Some(reason.into()),
    }
}
