//! The in-memory backend: the same semantics as the SQL backends, kept in process memory.
//! For tests and throwaway servers (`--database-url memory:`); nothing survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::maintenance::{LocalLocks, MaintenanceLock};
use super::{
    Backend, BlobFormat, BoardInfo, Boards, BudgetRow, BudgetUpdate, CompactionStats, NewRun,
    NewSnapshot, NewUpdate, NewVersion, PendingCompaction, RunRecord, RunResult, RunState, Runs,
    Snapshots, StorageError, StoredBoard, StoredSnapshot, StoredUpdate, UnixMillis, UpdateLog,
    Version, VersionInfo, Versions, now_millis,
};
use crate::ids::{BoardId, Seq, VersionId};

#[derive(Debug)]
struct Board {
    info: BoardInfo,
    snapshot: Option<StoredSnapshot>,
    log: BTreeMap<Seq, Vec<u8>>,
    versions: BTreeMap<VersionId, Version>,
    /// Assistant runs by id; they go with the board.
    runs: HashMap<String, RunRecord>,
    /// Runs whose cancelling was asked for.
    cancel_requested: std::collections::HashSet<String>,
}

#[derive(Debug, Default)]
struct State {
    boards: BTreeMap<BoardId, Board>,
    /// Ids of deleted boards, until created again.
    deleted: BTreeSet<BoardId>,
    next_version: i64,
    /// The assistant's budgets by scope.
    budgets: HashMap<String, BudgetRow>,
}

/// The in-memory backend. Cloning shares the same data.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    maintenance: LocalLocks,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, and the state is valid between
        // statements, so a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn board_mut<'a>(state: &'a mut State, id: &BoardId) -> Result<&'a mut Board, StorageError> {
    state
        .boards
        .get_mut(id)
        .ok_or_else(|| StorageError::BoardNotFound(id.clone()))
}

fn run_mut<'a>(state: &'a mut State, id: &BoardId, run: &str) -> Option<&'a mut RunRecord> {
    state.boards.get_mut(id).and_then(|b| b.runs.get_mut(run))
}

impl MemoryStore {
    fn create(&self, id: &BoardId, content: Option<&[u8]>) -> Result<BoardInfo, StorageError> {
        let mut state = self.lock();
        if state.boards.contains_key(id) {
            return Err(StorageError::BoardExists(id.clone()));
        }
        state.deleted.remove(id);
        let mut board = new_board(id);
        if let Some(content) = content {
            board.log.insert(1, content.to_vec());
            board.info.last_seq = 1;
        }
        let info = board.info.clone();
        state.boards.insert(id.clone(), board);
        Ok(info)
    }
}

fn new_board(id: &BoardId) -> Board {
    let now = now_millis();
    Board {
        info: BoardInfo {
            id: id.clone(),
            created_at: now,
            updated_at: now,
            last_seq: 0,
        },
        snapshot: None,
        log: BTreeMap::new(),
        versions: BTreeMap::new(),
        runs: HashMap::new(),
        cancel_requested: std::collections::HashSet::new(),
    }
}

#[async_trait]
impl Boards for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.create(id, None)
    }

    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError> {
        self.create(id, Some(content))
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let mut state = self.lock();
        // A live board is never in `deleted`: creating it took the id off.
        if state.deleted.contains(id) {
            return Err(StorageError::BoardDeleted(id.clone()));
        }
        let board = state
            .boards
            .entry(id.clone())
            .or_insert_with(|| new_board(id));
        Ok(board.info.clone())
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        Ok(self.lock().boards.get(id).map(|b| b.info.clone()))
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        let state = self.lock();
        let boards = state.boards.iter();
        Ok(boards
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .map(|(_, b)| b.info.clone())
            .take(limit as usize)
            .collect())
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let existed = state.boards.remove(id).is_some();
        if existed {
            state.deleted.insert(id.clone());
        }
        Ok(existed)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn close(&self) {}
}

#[async_trait]
impl UpdateLog for MemoryStore {
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
        let mut state = self.lock();
        // Check everything before the first write: all or nothing, like a transaction.
        let mut next: HashMap<&BoardId, Seq> = HashMap::new();
        for u in updates {
            if !next.contains_key(u.board) {
                let last = board_mut(&mut state, u.board)?.info.last_seq;
                next.insert(u.board, last);
            }
        }
        let seqs = super::assign_seqs(updates, &mut next.clone());
        let now = now_millis();
        for (u, seq) in updates.iter().zip(&seqs) {
            let board = board_mut(&mut state, u.board)?;
            board.log.insert(*seq, u.data.to_vec());
            board.info.last_seq = *seq;
            board.info.updated_at = now;
        }
        Ok(seqs)
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        let mut state = self.lock();
        let board = board_mut(&mut state, id)?;
        let after = board.snapshot.as_ref().map_or(0, |s| s.seq);
        Ok(StoredBoard {
            info: board.info.clone(),
            snapshot: board.snapshot.clone(),
            updates: board
                .log
                .range(after + 1..)
                .map(|(seq, data)| StoredUpdate {
                    seq: *seq,
                    data: data.clone(),
                })
                .collect(),
        })
    }
}

#[async_trait]
impl Snapshots for MemoryStore {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        let mut state = self.lock();
        let board = board_mut(&mut state, id)?;
        let snapshot_seq = board.snapshot.as_ref().map_or(0, |s| s.seq);
        let last_seq = board.info.last_seq;
        super::check_compaction(id, snapshot.upto, snapshot_seq, last_seq)?;
        Ok(Box::new(MemoryPendingCompaction {
            store: self.clone(),
            board: id.clone(),
            snapshot: StoredSnapshot {
                seq: snapshot.upto,
                format: BlobFormat::YjsUpdateV1,
                data: snapshot.data.to_vec(),
            },
        }))
    }

    async fn try_lock_maintenance(
        &self,
        id: &BoardId,
    ) -> Result<Option<Box<dyn MaintenanceLock>>, StorageError> {
        // One server uses this database: the lock is this process's.
        Ok(self.maintenance.try_lock(id))
    }
}

#[async_trait]
impl Versions for MemoryStore {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        let mut state = self.lock();
        state.next_version += 1;
        let vid = VersionId(state.next_version);
        let info = super::new_version_info(id, vid, now_millis(), &version);
        board_mut(&mut state, id)?.versions.insert(
            vid,
            Version {
                info: info.clone(),
                format: BlobFormat::YjsUpdateV1,
                data: version.data.to_vec(),
            },
        );
        Ok(info)
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        let mut state = self.lock();
        let board = board_mut(&mut state, id)?;
        Ok(board
            .versions
            .values()
            .rev()
            .map(|v| v.info.clone())
            .collect())
    }

    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError> {
        let state = self.lock();
        Ok(state
            .boards
            .get(id)
            .and_then(|b| b.versions.get(&version).cloned()))
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        let mut state = self.lock();
        Ok(state
            .boards
            .get_mut(id)
            .is_some_and(|b| b.versions.remove(&version).is_some()))
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        let mut state = self.lock();
        let Some(board) = state.boards.get_mut(id) else {
            return Ok(0);
        };
        let doomed: Vec<VersionId> = board
            .versions
            .values()
            .rev()
            .filter(|v| v.info.kind == super::VersionKind::Auto)
            .skip(keep_auto as usize)
            .map(|v| v.info.id)
            .collect();
        for vid in &doomed {
            board.versions.remove(vid);
        }
        Ok(doomed.len() as u64)
    }
}

#[async_trait]
impl Runs for MemoryStore {
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let mut state = self.lock();
        board_mut(&mut state, id)?;
        // Run ids are unique across boards, as the SQL backends' primary key makes them.
        if state.boards.values().any(|b| b.runs.contains_key(run.id)) {
            return Err(StorageError::db("start run")(sqlx::Error::InvalidArgument(
                format!("run id {:?} is taken", run.id),
            )));
        }
        // The board's claim: interrupt a running run whose server stopped, then refuse if
        // another is still running, all under one lock.
        let now = now_millis();
        let board = board_mut(&mut state, id)?;
        for r in board.runs.values_mut() {
            if r.state == RunState::Running && r.alive_at < run.expired_before {
                r.state = RunState::Interrupted;
                r.finished_at = Some(now);
            }
        }
        if let Some(active) = board.runs.values().find(|r| r.state == RunState::Running) {
            return Err(StorageError::RunActive {
                board: id.clone(),
                run: active.id.clone(),
            });
        }
        let record = RunRecord {
            id: run.id.to_owned(),
            board: id.clone(),
            user: run.user.map(str::to_owned),
            prompt: run.prompt.to_owned(),
            model: run.model.to_owned(),
            state: RunState::Running,
            error: None,
            summary: String::new(),
            tool_calls: "[]".to_owned(),
            prompt_tokens: 0,
            completion_tokens: 0,
            objects_created: 0,
            objects_deleted: 0,
            steps: 0,
            started_at: now,
            finished_at: None,
            alive_at: now,
            before_version: run.before_version,
            changes: Vec::new(),
            undone_at: None,
            undone_by: None,
        };
        board_mut(&mut state, id)?
            .runs
            .insert(record.id.clone(), record.clone());
        Ok(record)
    }

    async fn touch_run(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let mut state = self.lock();
        match run_mut(&mut state, id, run) {
            Some(r) if r.state == RunState::Running => {
                r.alive_at = now_millis();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn request_cancel(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let running = run_mut(&mut state, id, run).is_some_and(|r| r.state == RunState::Running);
        if running && let Some(board) = state.boards.get_mut(id) {
            board.cancel_requested.insert(run.to_owned());
        }
        Ok(running)
    }

    async fn cancel_requested(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let state = self.lock();
        Ok(state
            .boards
            .get(id)
            .is_some_and(|b| b.cancel_requested.contains(run)))
    }

    async fn set_run_version(
        &self,
        id: &BoardId,
        run: &str,
        version: VersionId,
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let Some(r) = run_mut(&mut state, id, run) else {
            return Ok(false);
        };
        r.before_version = Some(version);
        Ok(true)
    }

    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        let Some(r) = run_mut(&mut state, id, run) else {
            return Ok(false);
        };
        r.state = result.state;
        r.error = result.error.map(str::to_owned);
        r.summary = result.summary.to_owned();
        r.tool_calls = result.tool_calls.to_owned();
        r.prompt_tokens = result.prompt_tokens;
        r.completion_tokens = result.completion_tokens;
        r.objects_created = result.objects_created;
        r.objects_deleted = result.objects_deleted;
        r.steps = result.steps;
        r.changes = result.changes.to_vec();
        r.finished_at = Some(now_millis());
        Ok(true)
    }

    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let mut state = self.lock();
        let board = board_mut(&mut state, id)?;
        let mut runs: Vec<&RunRecord> = board.runs.values().collect();
        // Newest first: by start time, then id, both descending, as the SQL backends order.
        runs.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Ok(runs.into_iter().take(limit as usize).cloned().collect())
    }

    async fn get_run(&self, id: &BoardId, run: &str) -> Result<Option<RunRecord>, StorageError> {
        let state = self.lock();
        Ok(state.boards.get(id).and_then(|b| b.runs.get(run).cloned()))
    }

    async fn claim_undo(
        &self,
        id: &BoardId,
        run: &str,
        by: Option<&str>,
    ) -> Result<bool, StorageError> {
        // Checked and set under one lock: of concurrent claims, exactly one sees it unclaimed.
        let mut state = self.lock();
        let Some(r) = run_mut(&mut state, id, run) else {
            return Ok(false);
        };
        if r.state == RunState::Running || r.undone_at.is_some() {
            return Ok(false);
        }
        r.undone_at = Some(now_millis());
        r.undone_by = by.map(str::to_owned);
        Ok(true)
    }

    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        let mut state = self.lock();
        match run_mut(&mut state, id, run) {
            Some(r) if r.state == RunState::Running => {
                r.changes = changes.to_vec();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError> {
        let mut state = self.lock();
        if let Some(r) = run_mut(&mut state, id, run) {
            r.undone_at = None;
            r.undone_by = None;
        }
        Ok(())
    }

    async fn update_budgets(
        &self,
        scopes: &[&str],
        update: BudgetUpdate<'_>,
    ) -> Result<bool, StorageError> {
        // Read, changed and written under one lock.
        let mut state = self.lock();
        let mut rows: Vec<BudgetRow> = scopes
            .iter()
            .map(|&scope| {
                state.budgets.get(scope).cloned().unwrap_or(BudgetRow {
                    scope: scope.to_owned(),
                    ..BudgetRow::default()
                })
            })
            .collect();
        if !update(&mut rows) {
            return Ok(false);
        }
        for row in rows {
            state.budgets.insert(row.scope.clone(), row);
        }
        Ok(true)
    }

    async fn interrupt_stale_runs(&self, alive_before: UnixMillis) -> Result<u64, StorageError> {
        let mut state = self.lock();
        let now = now_millis();
        let mut interrupted = 0;
        for r in state.boards.values_mut().flat_map(|b| b.runs.values_mut()) {
            if r.state == RunState::Running && r.alive_at < alive_before {
                r.state = RunState::Interrupted;
                r.finished_at = Some(now);
                interrupted += 1;
            }
        }
        Ok(interrupted)
    }
}

/// A staged compaction: nothing changes until commit, which re-checks and applies it at once.
#[derive(Debug)]
struct MemoryPendingCompaction {
    store: MemoryStore,
    board: BoardId,
    snapshot: StoredSnapshot,
}

#[async_trait]
impl PendingCompaction for MemoryPendingCompaction {
    async fn commit(self: Box<Self>) -> Result<CompactionStats, StorageError> {
        let Self {
            store,
            board: id,
            snapshot,
        } = *self;
        let mut state = store.lock();
        let board = board_mut(&mut state, &id)?;
        let snapshot_seq = board.snapshot.as_ref().map_or(0, |s| s.seq);
        let last_seq = board.info.last_seq;
        super::check_compaction(&id, snapshot.seq, snapshot_seq, last_seq)?;
        let kept = board.log.split_off(&(snapshot.seq + 1));
        let rows_deleted = std::mem::replace(&mut board.log, kept).len() as u64;
        let stats = CompactionStats {
            snapshot_seq: snapshot.seq,
            rows_deleted,
            snapshot_bytes: snapshot.data.len() as u64,
        };
        board.snapshot = Some(snapshot);
        Ok(stats)
    }
}
