//! Durable storage of boards: the update log, snapshots and versions.
//!
//! # Layout
//!
//! - [`Storage`]: what every backend implements, made of the parts [`Boards`], [`UpdateLog`],
//!   [`Snapshots`], [`Versions`] and [`Runs`], with the types they speak in.
//! - [`layered`]: a store assembled from parts of others (a wrapper implements only the part
//!   it changes).
//! - `sqlite`, `postgres`, `memory`: the backends. Only `sqlite` and `postgres` know SQL;
//!   `rows` holds the row shapes and conversions they share.
//! - [`replay`]: turns a [`StoredBoard`] into a `yrs::Doc`, naming the row that fails.
//! - [`compaction`]: folds a board's log into a snapshot through [`Snapshots::begin_compaction`].
//! - [`maintenance`]: the maintenance lock ([`Snapshots::try_lock_maintenance`]): a board's
//!   compaction, automatic versions and retention on one server at a time.
//! - [`open`]: picks a backend from a database URL.
//!
//! # Model
//!
//! A board is a row with a per-board sequence counter. Every Yjs update the server accepts is
//! appended to the board's log under the next sequence number. A snapshot is the merged state
//! of the log up to some sequence; compaction writes a new snapshot and deletes the rows it
//! covers in one transaction, so loading a board (snapshot, then the rows after it) gives the
//! same document before and after. Versions are separate full-state copies with who, when and
//! why; they are never compacted.

pub mod compaction;
mod error;
pub mod layered;
pub mod maintenance;
pub mod memory;
pub mod postgres;
pub mod replay;
mod rows;
pub mod runs;
pub mod sqlite;
mod url;

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

pub use self::error::StorageError;
pub use self::maintenance::MaintenanceLock;
pub use self::runs::{BudgetRow, BudgetUpdate, NewRun, RunRecord, RunResult, RunState};
pub use self::url::{DatabaseUrl, StorageOptions, open, redact};
use crate::ids::{BoardId, Seq, VersionId};

/// How a stored blob is encoded. Only Yjs update v1 exists today; the column is there so a
/// future encoding (v2 is about half the size) can never be mixed up with it silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobFormat {
    /// A Yjs update, encoding v1: what `Y.encodeStateAsUpdate` and the wire protocol use.
    YjsUpdateV1,
}

impl BlobFormat {
    pub(crate) fn code(self) -> i16 {
        match self {
            Self::YjsUpdateV1 => 1,
        }
    }

    pub(crate) fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::YjsUpdateV1),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// The time now, in [`UnixMillis`]. Backends stamp rows with this rather than the database
/// clock, so every backend reports the same kind of time.
pub(crate) fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the store knows about a board, without its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BoardInfo {
    /// The board's id.
    pub id: BoardId,
    /// When the board was created.
    pub created_at: UnixMillis,
    /// When an update was last appended (the creation time if none was).
    pub updated_at: UnixMillis,
    /// Sequence number of the newest update ever appended (0 if none).
    pub last_seq: Seq,
}

/// One update to append: raw Yjs update v1 bytes for one board.
#[derive(Clone, Copy, Debug)]
pub struct NewUpdate<'a> {
    /// The board the update belongs to; it must exist.
    pub board: &'a BoardId,
    /// The update, Yjs encoding v1, as received.
    pub data: &'a [u8],
}

/// A row of a board's update log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUpdate {
    /// The row's sequence number.
    pub seq: Seq,
    /// The update, Yjs encoding v1.
    pub data: Vec<u8>,
}

/// A board's snapshot: the merged state of its log up to and including `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// The last log sequence the snapshot covers.
    pub seq: Seq,
    /// How `data` is encoded.
    pub format: BlobFormat,
    /// The merged state.
    pub data: Vec<u8>,
}

/// Everything needed to rebuild a board: its snapshot, then the log rows after it, in order.
/// Read in one database snapshot, so a concurrent compaction can't make the two disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBoard {
    /// The board's row.
    pub info: BoardInfo,
    /// The latest snapshot, if the board was ever compacted.
    pub snapshot: Option<StoredSnapshot>,
    /// Log rows with `seq` above the snapshot's, in ascending order.
    pub updates: Vec<StoredUpdate>,
}

/// A compaction to stage: the merged state of a board's log up to `upto`.
#[derive(Clone, Copy, Debug)]
pub struct NewSnapshot<'a> {
    /// The last log sequence the snapshot covers; rows up to here are deleted.
    pub upto: Seq,
    /// The merged state, Yjs update v1.
    pub data: &'a [u8],
}

/// What a committed compaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CompactionStats {
    /// The sequence the new snapshot covers.
    pub snapshot_seq: Seq,
    /// Log rows deleted.
    pub rows_deleted: u64,
    /// Size of the new snapshot in bytes.
    pub snapshot_bytes: u64,
}

/// Whether a version was saved on purpose or by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionKind {
    /// Saved by a person or a client, with a label. Kept until deleted.
    Named,
    /// Saved by the server (periodic checkpoint, before a restore, before an assistant run).
    /// Subject to retention.
    Auto,
}

impl VersionKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Named => "named",
            Self::Auto => "auto",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "named" => Some(Self::Named),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// A version to save.
#[derive(Clone, Copy, Debug)]
pub struct NewVersion<'a> {
    /// Named or automatic.
    pub kind: VersionKind,
    /// A label shown in the history (required in practice for named versions).
    pub label: Option<&'a str>,
    /// Who caused it: a user, `server`, `ai:<run id>`.
    pub author: Option<&'a str>,
    /// Why it was saved: `checkpoint`, `before restore`, ...
    pub reason: Option<&'a str>,
    /// The board's log sequence this state includes.
    pub covers_seq: Seq,
    /// The full board state, Yjs update v1.
    pub data: &'a [u8],
}

/// A saved version, without its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version's id.
    pub id: VersionId,
    /// The board it belongs to.
    pub board: BoardId,
    /// Named or automatic.
    pub kind: VersionKind,
    /// Its label, if any.
    pub label: Option<String>,
    /// Who caused it.
    pub author: Option<String>,
    /// Why it was saved.
    pub reason: Option<String>,
    /// When it was saved.
    pub created_at: UnixMillis,
    /// The board's log sequence this state includes.
    pub covers_seq: Seq,
    /// Size of the stored state in bytes.
    pub size: u64,
}

/// A saved version with its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// What is known about it.
    pub info: VersionInfo,
    /// How `data` is encoded.
    pub format: BlobFormat,
    /// The full board state.
    pub data: Vec<u8>,
}

/// Which backend a [`Storage`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// Process memory; gone on exit. For tests and throwaway servers.
    Memory,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
            Self::Memory => "memory",
        })
    }
}

/// A compaction whose writes are staged in an open transaction. [`commit`] makes it durable;
/// dropping it instead rolls everything back and leaves the board exactly as it was.
///
/// [`commit`]: PendingCompaction::commit
#[async_trait]
pub trait PendingCompaction: Send + fmt::Debug {
    /// Commits the staged snapshot and log deletion together.
    async fn commit(self: Box<Self>) -> Result<CompactionStats, StorageError>;
}

/// Durable storage of boards: every part below, in one object. Every backend passes the same
/// conformance suite (`sync-server/tests/it/storage_conformance.rs`).
///
/// The parts are traits of their own so that a store can be assembled from several
/// ([`layered::Layered`]: for instance one whose update log is wrapped, the rest as it was),
/// and so that a wrapper implements only the part it changes. Every type that implements all
/// the parts is a `Storage`; callers hold an `Arc<dyn Storage>` and call any part's methods on
/// it.
///
/// All methods are safe to call concurrently, from one process or several sharing a database.
pub trait Storage: Boards + UpdateLog + Snapshots + Versions + Runs {}

impl<T: Boards + UpdateLog + Snapshots + Versions + Runs + ?Sized> Storage for T {}

/// The boards a store holds, and the database under them: which backend it is, whether it
/// answers, closing it.
#[async_trait]
pub trait Boards: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Creates an empty board. Fails with [`StorageError::BoardExists`] if the id is taken. An
    /// id whose board was deleted can be created again this way.
    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError>;

    /// Creates a board whose log holds `content` (a Yjs update v1) as its first row, seq 1,
    /// in **one transaction**: nobody ever sees the board without it (an import). Fails like
    /// [`Boards::create_board`].
    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError>;

    /// Returns the board, creating it empty first if it does not exist, unless a board of that
    /// id was deleted: then [`StorageError::BoardDeleted`] (a client that missed the deletion
    /// must not bring the board back by connecting).
    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError>;

    /// The board's row, or `None`.
    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError>;

    /// The last sequence number of each of `ids` that exists (a missing board is left out),
    /// for the cluster's check of the boards a node holds. The default asks board by board;
    /// PostgreSQL answers in one query.
    async fn last_seqs(
        &self,
        ids: &[BoardId],
    ) -> Result<std::collections::HashMap<BoardId, Seq>, StorageError> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = self.get_board(id).await? {
                out.insert(info.id, info.last_seq);
            }
        }
        Ok(out)
    }

    /// Up to `limit` boards in id order, starting after `after` (for paging).
    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError>;

    /// Deletes a board with its log, snapshot and versions, and remembers its id as deleted
    /// (see [`Boards::ensure_board`]). Returns whether it existed.
    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError>;

    /// A cheap check that the database answers, for readiness probes. Backends answer it
    /// with one trivial query on their general pool (never the connections appends use); the
    /// default lists one board.
    async fn ping(&self) -> Result<(), StorageError> {
        self.list_boards(None, 1).await.map(drop)
    }

    /// Closes connections after in-flight work; later calls fail.
    async fn close(&self);
}

/// A board's update log: what the committer appends and what loading (and healing) a board
/// reads back.
#[async_trait]
pub trait UpdateLog: Send + Sync + fmt::Debug {
    /// Appends updates for one or many boards in **one transaction** and returns the sequence
    /// number given to each, in input order. Updates for one board get consecutive numbers in
    /// input order. Either all are durable when this returns `Ok`, or none is written. Fails
    /// with [`StorageError::BoardNotFound`] if any board is missing.
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError>;

    /// Reads a board's snapshot and the log rows after it, in one consistent read.
    /// Fails with [`StorageError::BoardNotFound`].
    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError>;

    /// The rows with `after < seq < before`, ascending: what a board's actor lacks (another
    /// writer's rows). If a compaction folded some of them, the snapshot's whole state comes
    /// first (applying what a doc already has changes nothing). The default reads the whole
    /// board; PostgreSQL reads just the range when the log still holds it.
    async fn read_range(
        &self,
        id: &BoardId,
        after: Seq,
        before: Seq,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(range_of(self.load(id).await?, after, before))
    }
}

/// The rows `after < seq < before` of a loaded board, after the snapshot if it covers any.
fn range_of(stored: StoredBoard, after: Seq, before: Seq) -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    if let Some(snapshot) = stored.snapshot.filter(|s| s.seq > after) {
        rows.push(snapshot.data);
    }
    rows.extend(
        stored
            .updates
            .into_iter()
            .filter(|u| u.seq > after && u.seq < before)
            .map(|u| u.data),
    );
    rows
}

/// Folding a board's log into its snapshot (see [`compaction`]).
#[async_trait]
pub trait Snapshots: Send + Sync + fmt::Debug {
    /// Stages a compaction in an open transaction: writes `snapshot` as the board's snapshot
    /// and deletes the log rows it covers. Nothing is visible until
    /// [`PendingCompaction::commit`]. Fails with [`StorageError::StaleCompaction`] if the board
    /// already has a snapshot at or past `snapshot.upto`, or if `upto` is beyond the log.
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError>;

    /// Takes board `id`'s **maintenance lock** if it is free, or `None` if it is held (by
    /// another server on the same database, or by another job of this one). A board's
    /// compaction, automatic versions and version retention run under it, so on one server at
    /// a time. Held until the returned lock is dropped (on PostgreSQL released a moment later,
    /// once its connection has sent the rollback); a server that dies releases it.
    /// PostgreSQL: an advisory lock (see [`maintenance`]); SQLite and memory: this process's.
    async fn try_lock_maintenance(
        &self,
        id: &BoardId,
    ) -> Result<Option<Box<dyn MaintenanceLock>>, StorageError>;
}

/// A board's saved versions.
#[async_trait]
pub trait Versions: Send + Sync + fmt::Debug {
    /// Saves a version of a board.
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError>;

    /// A board's versions, newest first. Fails with [`StorageError::BoardNotFound`].
    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError>;

    /// One version of a board with its content, or `None`.
    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError>;

    /// Deletes one version of a board. Returns whether it existed.
    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError>;

    /// Retention: deletes the board's automatic versions except the newest `keep_auto`.
    /// Named versions are never touched. Returns how many were deleted.
    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError>;
}

/// The record of a board's assistant runs.
#[async_trait]
pub trait Runs: Send + Sync + fmt::Debug {
    /// Records a run as started (state `running`, no tool calls, no tokens, its heartbeat
    /// now): the run's **claim on its board**, across every server sharing the database. First
    /// marks interrupted the board's running runs whose heartbeat is older than
    /// `run.expired_before` (their server stopped). Fails with [`StorageError::RunActive`]
    /// naming the run if another run of the board is still running,
    /// [`StorageError::BoardNotFound`] if the board is missing, or a database error if the run
    /// id is taken.
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError>;

    /// A working run's heartbeat: sets its `alive_at` to now. Returns whether the run is still
    /// `running`; `false` means its claim is gone (marked interrupted after its heartbeat
    /// expired, finished, or deleted with its board) and nothing was written.
    async fn touch_run(&self, id: &BoardId, run: &str) -> Result<bool, StorageError>;

    /// Asks for a working run to be cancelled, from any server: the run's server sees it at
    /// its next [`Runs::cancel_requested`] and stops the run. Returns whether the run is
    /// `running` (and so was asked).
    async fn request_cancel(&self, id: &BoardId, run: &str) -> Result<bool, StorageError>;

    /// Whether cancelling the run was asked for ([`Runs::request_cancel`]).
    async fn cancel_requested(&self, id: &BoardId, run: &str) -> Result<bool, StorageError>;

    /// Records the version saved before a run (saved once the run claimed the board).
    /// Returns whether the run exists.
    async fn set_run_version(
        &self,
        id: &BoardId,
        run: &str,
        version: VersionId,
    ) -> Result<bool, StorageError>;

    /// Records how a run ended: sets every field of `result` and `finished_at` (now). Returns
    /// whether the run existed. Overwrites an `interrupted` state (a run marked stale by
    /// [`Runs::interrupt_stale_runs`] that did finish after all).
    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError>;

    /// Saves what a working run has changed so far (the `changes` of [`RunResult`]), so that
    /// a run whose server stops can still be undone. Returns whether the run exists and is
    /// `running`; otherwise nothing is written.
    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError>;

    /// The board's newest `limit` runs, newest first (by start time, then id). Fails with
    /// [`StorageError::BoardNotFound`].
    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError>;

    /// One run of a board, or `None`.
    async fn get_run(&self, id: &BoardId, run: &str) -> Result<Option<RunRecord>, StorageError>;

    /// Claims a run for undo, atomically: sets `undone_at` (now) and `undone_by` only if the
    /// run exists, is not `running` and is not undone yet. Returns whether this call claimed
    /// it; of concurrent callers exactly one gets `true`.
    async fn claim_undo(
        &self,
        id: &BoardId,
        run: &str,
        by: Option<&str>,
    ) -> Result<bool, StorageError>;

    /// Gives back a claim whose undo could not be applied (clears `undone_at` and
    /// `undone_by`).
    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError>;

    /// Marks every `running` run (of any board) whose heartbeat (`alive_at`) is older than
    /// `alive_before` as `interrupted`, with `finished_at` now: their server stopped (a live
    /// server refreshes its runs' heartbeats well within the expiry). Returns how many. Called
    /// at start-up and before listing, with a cutoff of now minus the heartbeat expiry, so
    /// the live runs of other servers on the same database are never touched.
    async fn interrupt_stale_runs(&self, alive_before: UnixMillis) -> Result<u64, StorageError>;

    /// The assistant's budgets, shared by every server on the database: reads the rows of
    /// `scopes` (in that order; a missing row as zeros), lets `update` change them, and writes
    /// them back, in **one transaction** with the rows locked against every other update, so
    /// concurrent callers on any server never overspend. If `update` returns `false`, nothing
    /// is written. Returns what `update` returned.
    async fn update_budgets(
        &self,
        scopes: &[&str],
        update: BudgetUpdate<'_>,
    ) -> Result<bool, StorageError>;
}

/// How many updates each board has in a batch, boards in order of first appearance.
fn count_per_board<'a>(updates: &[NewUpdate<'a>]) -> Vec<(&'a BoardId, i64)> {
    let mut counts: Vec<(&BoardId, i64)> = Vec::new();
    let mut index: std::collections::HashMap<&BoardId, usize> = std::collections::HashMap::new();
    for u in updates {
        match index.get(u.board) {
            Some(&i) => counts[i].1 += 1,
            None => {
                index.insert(u.board, counts.len());
                counts.push((u.board, 1));
            }
        }
    }
    counts
}

/// Gives each update the next sequence of its board, in input order. `next` maps each board to
/// the sequence just before its reserved range and is advanced as numbers are handed out.
fn assign_seqs<'a>(
    updates: &[NewUpdate<'a>],
    next: &mut std::collections::HashMap<&'a BoardId, Seq>,
) -> Vec<Seq> {
    updates
        .iter()
        .map(|u| {
            let seq = next.entry(u.board).or_insert(0);
            *seq += 1;
            *seq
        })
        .collect()
}

/// Refuses a compaction that would not move the board forward.
fn check_compaction(
    board: &BoardId,
    upto: Seq,
    snapshot_seq: Seq,
    last_seq: Seq,
) -> Result<(), StorageError> {
    if upto <= snapshot_seq || upto > last_seq {
        return Err(StorageError::StaleCompaction {
            board: board.clone(),
            upto,
            snapshot_seq,
            last_seq,
        });
    }
    Ok(())
}

/// The [`VersionInfo`] of a version just saved.
fn new_version_info(
    board: &BoardId,
    id: VersionId,
    created_at: UnixMillis,
    v: &NewVersion<'_>,
) -> VersionInfo {
    VersionInfo {
        id,
        board: board.clone(),
        kind: v.kind,
        label: v.label.map(str::to_owned),
        author: v.author.map(str::to_owned),
        reason: v.reason.map(str::to_owned),
        created_at,
        covers_seq: v.covers_seq,
        size: v.data.len() as u64,
    }
}
