//! Stores that can be told to fail, to be slow, or to hold calls at a [`Gate`], so a test can
//! put the server exactly where it wants.
//!
//! Each wrapper implements one part of [`Storage`] over the same part of the store it wraps:
//! [`LogFaults`] the update log, [`BoardGates`] the boards, [`VersionFaults`] the versions,
//! [`CompactionGate`] the snapshots. [`Layered`] answers everything else from the wrapped
//! store, so no wrapper passes on calls it does not change by hand (except the few calls of its
//! own part it leaves alone). [`TestStore`] puts all four over one store.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sync_server::ids::{BoardId, Seq, VersionId};
use sync_server::storage::layered::Layered;
use sync_server::storage::{
    Backend, BoardInfo, Boards, MaintenanceLock, NewSnapshot, NewUpdate, NewVersion,
    PendingCompaction, Snapshots, Storage, StorageError, StoredBoard, UpdateLog, Version,
    VersionInfo, Versions,
};

use crate::WAIT;

/// A failure injected by a test, as the database would report one.
fn injected(op: &'static str) -> StorageError {
    StorageError::Database {
        op,
        source: sqlx::Error::Protocol(format!("injected {op} failure")),
    }
}

async fn delay(ms: &AtomicU64) {
    let ms = ms.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The update log

/// The update log, made to fail appends or to take longer, with calls counted.
#[derive(Debug)]
pub struct LogFaults {
    inner: Arc<dyn UpdateLog>,
    /// Appends fail (after their delay and gate) while set.
    pub fail_appends: AtomicBool,
    pub append_delay_ms: AtomicU64,
    pub load_delay_ms: AtomicU64,
    pub loads: AtomicUsize,
    pub appends: AtomicUsize,
    /// Passed by `append` after its delay, before it fails or reaches the store.
    pub append_gate: Gate,
    /// Passed by `load` after its delay, before it reaches the store.
    pub load_gate: Gate,
}

impl LogFaults {
    pub fn new(inner: Arc<dyn UpdateLog>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_appends: AtomicBool::new(false),
            append_delay_ms: AtomicU64::new(0),
            load_delay_ms: AtomicU64::new(0),
            loads: AtomicUsize::new(0),
            appends: AtomicUsize::new(0),
            append_gate: Gate::default(),
            load_gate: Gate::default(),
        })
    }

    pub fn set_fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::SeqCst);
    }

    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl UpdateLog for LogFaults {
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        delay(&self.append_delay_ms).await;
        self.append_gate.pass().await;
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(injected("append"));
        }
        self.inner.append(updates).await
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        delay(&self.load_delay_ms).await;
        self.load_gate.pass().await;
        self.inner.load(id).await
    }
}

// ---------------------------------------------------------------------------------------------
// Boards

/// Boards, with creations and deletions held at gates and `ensure_board` calls counted.
#[derive(Debug)]
pub struct BoardGates {
    inner: Arc<dyn Boards>,
    pub ensures: AtomicUsize,
    /// Passed by `create_board` and `create_board_with` after the store created the board,
    /// before they answer.
    pub created_gate: Gate,
    /// Passed by `delete_board` before it reaches the store.
    pub delete_gate: Gate,
}

impl BoardGates {
    pub fn new(inner: Arc<dyn Boards>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            ensures: AtomicUsize::new(0),
            created_gate: Gate::default(),
            delete_gate: Gate::default(),
        })
    }

    pub fn ensures(&self) -> usize {
        self.ensures.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Boards for BoardGates {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let created = self.inner.create_board(id).await;
        self.created_gate.pass().await;
        created
    }

    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError> {
        let created = self.inner.create_board_with(id, content).await;
        self.created_gate.pass().await;
        created
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.ensures.fetch_add(1, Ordering::SeqCst);
        self.inner.ensure_board(id).await
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        self.inner.get_board(id).await
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        self.inner.list_boards(after, limit).await
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        self.delete_gate.pass().await;
        self.inner.delete_board(id).await
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Versions

/// Versions, with saves and reads held at gates and saves made to fail.
#[derive(Debug)]
pub struct VersionFaults {
    inner: Arc<dyn Versions>,
    /// Passed by `save_version` before it reaches the store.
    pub save_version_gate: Gate,
    /// Passed by `get_version` before it reaches the store.
    pub get_version_gate: Gate,
    /// `save_version` calls still to fail (each failure counts one down).
    pub fail_save_versions: AtomicUsize,
    /// `save_version` calls that failed because of `fail_save_versions`.
    pub save_version_failures: AtomicUsize,
}

impl VersionFaults {
    pub fn new(inner: Arc<dyn Versions>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            save_version_gate: Gate::default(),
            get_version_gate: Gate::default(),
            fail_save_versions: AtomicUsize::new(0),
            save_version_failures: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Versions for VersionFaults {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        self.save_version_gate.pass().await;
        let fail = self
            .fail_save_versions
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            self.save_version_failures.fetch_add(1, Ordering::SeqCst);
            return Err(injected("save_version"));
        }
        self.inner.save_version(id, version).await
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        self.inner.list_versions(id).await
    }

    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError> {
        self.get_version_gate.pass().await;
        self.inner.get_version(id, version).await
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        self.inner.delete_version(id, version).await
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        self.inner.prune_versions(id, keep_auto).await
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/// Compactions, held at a gate.
#[derive(Debug)]
pub struct CompactionGate {
    inner: Arc<dyn Snapshots>,
    /// Passed by `begin_compaction` before it reaches the store.
    pub gate: Gate,
}

impl CompactionGate {
    pub fn new(inner: Arc<dyn Snapshots>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gate: Gate::default(),
        })
    }
}

#[async_trait]
impl Snapshots for CompactionGate {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        self.gate.pass().await;
        self.inner.begin_compaction(id, snapshot).await
    }

    async fn try_lock_maintenance(
        &self,
        id: &BoardId,
    ) -> Result<Option<Box<dyn MaintenanceLock>>, StorageError> {
        self.inner.try_lock_maintenance(id).await
    }
}

// ---------------------------------------------------------------------------------------------
// All of them

/// A store with every wrapper above over one store; runs pass straight through.
#[derive(Debug)]
pub struct TestStore {
    pub log: Arc<LogFaults>,
    pub boards: Arc<BoardGates>,
    pub versions: Arc<VersionFaults>,
    pub compaction: Arc<CompactionGate>,
    store: Arc<dyn Storage>,
}

impl TestStore {
    pub fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        let log = LogFaults::new(inner.clone());
        let boards = BoardGates::new(inner.clone());
        let versions = VersionFaults::new(inner.clone());
        let compaction = CompactionGate::new(inner.clone());
        let store = Layered::over(inner)
            .with_log(log.clone())
            .with_boards(boards.clone())
            .with_versions(versions.clone())
            .with_snapshots(compaction.clone());
        Arc::new(Self {
            log,
            boards,
            versions,
            compaction,
            store: Arc::new(store),
        })
    }

    /// The store to give the server: every call through the wrappers.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.store.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Gates

/// Where calls of one kind wait while a test holds them. Open by default; while closed, a call
/// waits until the gate opens or a pass is granted ([`Gate::let_through`]). Counts the calls
/// waiting (a call whose future is dropped while it waits stops counting).
#[derive(Debug, Default)]
pub struct Gate {
    /// (closed, passes granted while closed)
    state: Mutex<(bool, usize)>,
    waiting: AtomicUsize,
    arrived: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Gate {
    /// Holds every call that comes from now on.
    pub fn close(&self) {
        *self.state.lock().unwrap() = (true, 0);
    }

    /// Lets every call through, those waiting included.
    pub fn open(&self) {
        *self.state.lock().unwrap() = (false, 0);
        self.notify.notify_waiters();
    }

    /// Lets `n` more calls through while the gate stays closed.
    pub fn let_through(&self, n: usize) {
        self.state.lock().unwrap().1 += n;
        self.notify.notify_waiters();
    }

    /// Calls waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Calls that reached the gate so far (open or closed).
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Waits until `n` calls wait at the gate, failing after [`WAIT`].
    pub async fn wait_for_waiting(&self, n: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.waiting() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {n} calls reached the gate within {WAIT:?}",
                self.waiting()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let mut counted = None;
        loop {
            // Created before the state is checked: `notify_waiters` wakes it from then on.
            let notified = self.notify.notified();
            {
                let mut state = self.state.lock().unwrap();
                match &mut *state {
                    (false, _) => return,
                    (true, passes) if *passes > 0 => {
                        *passes -= 1;
                        return;
                    }
                    _ => {}
                }
            }
            if counted.is_none() {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                counted = Some(Waiting(&self.waiting));
            }
            notified.await;
        }
    }
}
