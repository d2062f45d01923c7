//! The in-memory backend: the same semantics as the SQL backends, kept in process memory.
//! For tests and throwaway servers (`--database-url memory:`); nothing survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    Backend, BlobFormat, BoardInfo, CompactionStats, NewSnapshot, NewUpdate, NewVersion,
    PendingCompaction, Storage, StorageError, StoredBoard, StoredSnapshot, StoredUpdate, Version,
    VersionInfo, now_millis,
};
use crate::ids::{BoardId, Seq, VersionId};

#[derive(Debug)]
struct Board {
    info: BoardInfo,
    snapshot: Option<StoredSnapshot>,
    log: BTreeMap<Seq, Vec<u8>>,
    versions: BTreeMap<VersionId, Version>,
}

#[derive(Debug, Default)]
struct State {
    boards: BTreeMap<BoardId, Board>,
    next_version: i64,
}

/// The in-memory backend. Cloning shares the same data.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
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
    }
}

#[async_trait]
impl Storage for MemoryStore {
    fn backend(&self) -> Backend {
        Backend::Memory
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let mut state = self.lock();
        if state.boards.contains_key(id) {
            return Err(StorageError::BoardExists(id.clone()));
        }
        let board = state
            .boards
            .entry(id.clone())
            .or_insert_with(|| new_board(id));
        Ok(board.info.clone())
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let mut state = self.lock();
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
        Ok(self.lock().boards.remove(id).is_some())
    }

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

    async fn close(&self) {}
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
