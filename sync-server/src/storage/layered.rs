//! A store assembled from parts of others: each part of [`Storage`] ([`Boards`],
//! [`UpdateLog`], [`Snapshots`], [`Versions`], [`Runs`]) answered by a store of its own.
//!
//! A wrapper that changes one part (counts, delays or fails appends, say) implements that part
//! alone over the part it wraps, and [`Layered`] supplies everything else from the store
//! underneath, so the delegation is written once, here: for instance
//! `Layered::over(base.clone()).with_log(Arc::new(SlowLog { inner: base }))`, where `SlowLog`
//! implements [`UpdateLog`] only.
//!
//! The parts must keep one database between them (wrap the same store's parts): the backends'
//! guarantees, such as a board's log being deleted with it, hold across parts only then.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Backend, BoardInfo, Boards, BudgetUpdate, MaintenanceLock, NewRun, NewSnapshot, NewUpdate,
    NewVersion, PendingCompaction, RunRecord, RunResult, Runs, Snapshots, Storage, StorageError,
    StoredBoard, UnixMillis, UpdateLog, Version, VersionInfo, Versions,
};
use crate::ids::{BoardId, Seq, VersionId};

/// A [`Storage`] whose parts each come from a store of their own; see the [module](self).
#[derive(Clone, Debug)]
pub struct Layered {
    boards: Arc<dyn Boards>,
    log: Arc<dyn UpdateLog>,
    snapshots: Arc<dyn Snapshots>,
    versions: Arc<dyn Versions>,
    runs: Arc<dyn Runs>,
}

impl Layered {
    /// Every part from `base`; replace parts with the `with_` methods.
    pub fn over(base: Arc<dyn Storage>) -> Self {
        Self {
            boards: base.clone(),
            log: base.clone(),
            snapshots: base.clone(),
            versions: base.clone(),
            runs: base,
        }
    }

    /// Boards (and the backend, readiness checks and closing) from `boards`.
    #[must_use]
    pub fn with_boards(mut self, boards: Arc<dyn Boards>) -> Self {
        self.boards = boards;
        self
    }

    /// The update log (appends and loads) from `log`.
    #[must_use]
    pub fn with_log(mut self, log: Arc<dyn UpdateLog>) -> Self {
        self.log = log;
        self
    }

    /// Compactions from `snapshots`.
    #[must_use]
    pub fn with_snapshots(mut self, snapshots: Arc<dyn Snapshots>) -> Self {
        self.snapshots = snapshots;
        self
    }

    /// Versions from `versions`.
    #[must_use]
    pub fn with_versions(mut self, versions: Arc<dyn Versions>) -> Self {
        self.versions = versions;
        self
    }

    /// Assistant runs from `runs`.
    #[must_use]
    pub fn with_runs(mut self, runs: Arc<dyn Runs>) -> Self {
        self.runs = runs;
        self
    }
}

#[async_trait]
impl Boards for Layered {
    fn backend(&self) -> Backend {
        self.boards.backend()
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.boards.create_board(id).await
    }

    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError> {
        self.boards.create_board_with(id, content).await
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.boards.ensure_board(id).await
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        self.boards.get_board(id).await
    }

    async fn last_seqs(
        &self,
        ids: &[BoardId],
    ) -> Result<std::collections::HashMap<BoardId, Seq>, StorageError> {
        self.boards.last_seqs(ids).await
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        self.boards.list_boards(after, limit).await
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        self.boards.delete_board(id).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.boards.ping().await
    }

    async fn close(&self) {
        self.boards.close().await;
    }
}

#[async_trait]
impl UpdateLog for Layered {
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
        self.log.append(updates).await
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        self.log.load(id).await
    }

    async fn read_range(
        &self,
        id: &BoardId,
        after: Seq,
        before: Seq,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        self.log.read_range(id, after, before).await
    }
}

#[async_trait]
impl Snapshots for Layered {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        self.snapshots.begin_compaction(id, snapshot).await
    }

    async fn try_lock_maintenance(
        &self,
        id: &BoardId,
    ) -> Result<Option<Box<dyn MaintenanceLock>>, StorageError> {
        self.snapshots.try_lock_maintenance(id).await
    }
}

#[async_trait]
impl Versions for Layered {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        self.versions.save_version(id, version).await
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        self.versions.list_versions(id).await
    }

    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError> {
        self.versions.get_version(id, version).await
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        self.versions.delete_version(id, version).await
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        self.versions.prune_versions(id, keep_auto).await
    }
}

#[async_trait]
impl Runs for Layered {
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        self.runs.start_run(id, run).await
    }

    async fn touch_run(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        self.runs.touch_run(id, run).await
    }

    async fn request_cancel(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        self.runs.request_cancel(id, run).await
    }

    async fn cancel_requested(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        self.runs.cancel_requested(id, run).await
    }

    async fn set_run_version(
        &self,
        id: &BoardId,
        run: &str,
        version: VersionId,
    ) -> Result<bool, StorageError> {
        self.runs.set_run_version(id, run, version).await
    }

    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError> {
        self.runs.finish_run(id, run, result).await
    }

    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        self.runs.save_run_changes(id, run, changes).await
    }

    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        self.runs.list_runs(id, limit).await
    }

    async fn get_run(&self, id: &BoardId, run: &str) -> Result<Option<RunRecord>, StorageError> {
        self.runs.get_run(id, run).await
    }

    async fn claim_undo(
        &self,
        id: &BoardId,
        run: &str,
        by: Option<&str>,
    ) -> Result<bool, StorageError> {
        self.runs.claim_undo(id, run, by).await
    }

    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError> {
        self.runs.release_undo(id, run).await
    }

    async fn interrupt_stale_runs(&self, alive_before: UnixMillis) -> Result<u64, StorageError> {
        self.runs.interrupt_stale_runs(alive_before).await
    }

    async fn update_budgets(
        &self,
        scopes: &[&str],
        update: BudgetUpdate<'_>,
    ) -> Result<bool, StorageError> {
        self.runs.update_budgets(scopes, update).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::storage::{StorageOptions, open};

    /// Counts appends, passes both calls on.
    #[derive(Debug)]
    struct CountingLog {
        inner: Arc<dyn UpdateLog>,
        appends: AtomicUsize,
    }

    #[async_trait]
    impl UpdateLog for CountingLog {
        async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.inner.append(updates).await
        }

        async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
            self.inner.load(id).await
        }
    }

    #[tokio::test]
    async fn a_replaced_part_answers_its_calls_and_the_base_the_rest() {
        let base = open("memory:", &StorageOptions::default()).await.unwrap();
        let log = Arc::new(CountingLog {
            inner: base.clone(),
            appends: AtomicUsize::new(0),
        });
        let store: Arc<dyn Storage> = Arc::new(Layered::over(base.clone()).with_log(log.clone()));
        let id = BoardId::parse("layered").unwrap();
        store.create_board(&id).await.unwrap();
        let seqs = store
            .append(&[NewUpdate {
                board: &id,
                data: b"row",
            }])
            .await
            .unwrap();
        assert_eq!(seqs, [1]);
        assert_eq!(log.appends.load(Ordering::SeqCst), 1);
        // Both views see one database.
        assert_eq!(base.load(&id).await.unwrap().updates.len(), 1);
        assert_eq!(store.get_board(&id).await.unwrap().unwrap().last_seq, 1);
        assert_eq!(store.backend(), Backend::Memory);
    }
}
