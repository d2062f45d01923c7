//! The embedded SQLite backend: one file, WAL mode, full sync.
//!
//! Appends, the hot path, go through a thread of their own with one rusqlite connection
//! (`appender.rs`); every other write goes through a sqlx pool of exactly one connection. Every
//! write transaction starts with `BEGIN IMMEDIATE` and holds the store's write gate, so writers
//! queue in process instead of spinning on `SQLITE_BUSY`, and another process on the same file
//! (the CLI while a server runs) waits out the busy timeout. Reads use a separate pool of
//! read-only connections, which WAL lets run beside the writers. A third thread checkpoints the
//! WAL beside the writers, never inside a commit, and truncates it once the store is idle
//! (`checkpoint.rs`).

mod appender;
mod checkpoint;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use self::appender::Appender;
use self::checkpoint::Checkpointer;

use super::maintenance::{LocalLocks, MaintenanceLock};
use super::rows::{
    BoardRow, RUN_COLUMNS, RunRow, VersionRow, blob_format, board_info, count_to_db,
    is_fk_violation, is_unique_violation, run_record, version_info,
};
use super::{
    Backend, BlobFormat, BoardInfo, Boards, BudgetRow, BudgetUpdate, CompactionStats, NewRun,
    NewSnapshot, NewUpdate, NewVersion, PendingCompaction, RunRecord, RunResult, RunState, Runs,
    Snapshots, StorageError, StorageOptions, StoredBoard, StoredSnapshot, StoredUpdate, UnixMillis,
    UpdateLog, Version, VersionInfo, Versions, now_millis,
};
use crate::ids::{BoardId, Seq, VersionId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// `journal_size_limit`: when a writer restarts the WAL after a checkpoint, the file is cut
/// back to this size. 16 MiB: four times what the checkpoint thread lets the WAL reach before
/// it restarts (`checkpoint::RESTART_FRAMES`, 1000 pages of 4 KiB), so ordinary operation
/// never trims and regrows it, while a long read that held checkpoints back leaves no larger
/// file behind.
const JOURNAL_SIZE_LIMIT_BYTES: i64 = 16 << 20;

/// The SQLite backend.
#[derive(Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Appends: a thread of their own with their own connection.
    appender: Appender,
    /// Held by every write (through `writer` or `appender`) for its whole transaction, so the
    /// two connections never wait for each other in SQLite's busy handler.
    gate: Arc<Mutex<()>>,
    /// Checkpoints the WAL (`checkpoint.rs`).
    checkpointer: Checkpointer,
    /// Something was written since the checkpoint thread last looked.
    dirty: Arc<AtomicBool>,
    /// Boards whose maintenance runs now (one server per SQLite database).
    maintenance: LocalLocks,
}

/// A write transaction on `writer`, holding the write gate until it ends. Dereferences to the
/// connection, like sqlx's [`Transaction`].
#[derive(Debug)]
struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _gate: OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite://` URL, creating its
    /// directory too, and runs the migrations.
    pub async fn open(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StorageError::InvalidUrl(format!("not a usable sqlite URL: {e}")))?;
        let path = base.get_filename().to_path_buf();
        if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            return Err(StorageError::InvalidUrl(
                "an in-memory SQLite database cannot be shared by the server's pools; use `memory:` instead"
                    .into(),
            ));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let base = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // Checkpoints are the checkpoint thread's, never a commit's.
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT_BYTES.to_string())
            // Statement journals (a multi-row INSERT inside a transaction keeps one) in memory
            // rather than in temporary files.
            .pragma("temp_store", "memory");
        // A local file needs no liveness check before each use: skipping it saves a trip to
        // the connection's worker thread per transaction.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(base.clone())
            .await
            .map_err(StorageError::db("open"))?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .connect_with(base.read_only(true))
            .await
            .map_err(StorageError::db("open"))?;
        let gate = Arc::new(Mutex::new(()));
        let dirty = Arc::new(AtomicBool::new(false));
        let wal_frames = Arc::new(AtomicI64::new(0));
        let appender = Appender::start(&appender::Settings {
            path: &path,
            busy_timeout: options.busy_timeout,
            journal_size_limit: JOURNAL_SIZE_LIMIT_BYTES,
            dirty: dirty.clone(),
            wal_frames: wal_frames.clone(),
        })?;
        let checkpointer = Checkpointer::start(
            &path,
            checkpoint::Settings {
                idle_after: options.checkpoint_idle,
                dirty: dirty.clone(),
                wal_frames,
                gate: gate.clone(),
                busy_timeout: options.busy_timeout,
            },
        )?;
        Ok(Self {
            writer,
            reader,
            appender,
            checkpointer,
            gate,
            dirty,
            maintenance: LocalLocks::default(),
        })
    }

    async fn write_tx(&self, op: &'static str) -> Result<WriteTx, StorageError> {
        let gate = self.gate.clone().lock_owned().await;
        self.dirty.store(true, Ordering::Release);
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StorageError::db(op))?;
        Ok(WriteTx { tx, _gate: gate })
    }

    /// Runs one statement in a write transaction of its own; returns whether it changed a row.
    async fn write_one(
        &self,
        op: &'static str,
        statement: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<bool, StorageError> {
        let mut tx = self.write_tx(op).await?;
        let done = statement
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates a board, with `content` as its first log row if given, in one transaction.
    async fn create(
        &self,
        id: &BoardId,
        content: Option<&[u8]>,
    ) -> Result<BoardInfo, StorageError> {
        let op = if content.is_some() {
            "import board"
        } else {
            "create board"
        };
        let now = now_millis();
        let last_seq: Seq = i64::from(content.is_some());
        let mut tx = self.write_tx(op).await?;
        sqlx::query(
            "INSERT INTO boards (id, created_at, updated_at, last_seq) VALUES (?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(now)
        .bind(last_seq)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::BoardExists(id.clone())
            } else {
                StorageError::db(op)(e)
            }
        })?;
        if let Some(content) = content {
            sqlx::query("INSERT INTO board_updates (board_id, seq, data) VALUES (?, 1, ?)")
                .bind(id.as_str())
                .bind(content)
                .execute(&mut *tx)
                .await
                .map_err(StorageError::db(op))?;
        }
        sqlx::query("DELETE FROM deleted_boards WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(BoardInfo {
            id: id.clone(),
            created_at: now,
            updated_at: now,
            last_seq,
        })
    }
}

/// Whether board `id` exists, read through `executor`.
async fn board_exists<'e, E>(
    executor: E,
    id: &BoardId,
    op: &'static str,
) -> Result<bool, StorageError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM boards WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(executor)
        .await
        .map_err(StorageError::db(op))?;
    Ok(found.is_some())
}

const SELECT_BOARD: &str = "SELECT id, created_at, updated_at, last_seq FROM boards WHERE id = ?";
const SELECT_VERSION_INFO: &str =
    "SELECT id, kind, label, author, reason, created_at, covers_seq, size FROM board_versions";

#[async_trait]
impl Boards for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn create_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        self.create(id, None).await
    }

    async fn create_board_with(
        &self,
        id: &BoardId,
        content: &[u8],
    ) -> Result<BoardInfo, StorageError> {
        self.create(id, Some(content)).await
    }

    async fn ensure_board(&self, id: &BoardId) -> Result<BoardInfo, StorageError> {
        let op = "ensure board";
        let now = now_millis();
        let mut tx = self.write_tx(op).await?;
        sqlx::query(
            "INSERT INTO boards (id, created_at, updated_at, last_seq) SELECT ?1, ?2, ?2, 0 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_boards WHERE id = ?1) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        row.map_or_else(|| Err(StorageError::BoardDeleted(id.clone())), board_info)
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(StorageError::db("get board"))?;
        row.map(board_info).transpose()
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        let rows: Vec<BoardRow> = sqlx::query_as(
            "SELECT id, created_at, updated_at, last_seq FROM boards WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after.map_or("", BoardId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(StorageError::db("list boards"))?;
        rows.into_iter().map(board_info).collect()
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        let op = "delete board";
        let mut tx = self.write_tx(op).await?;
        let done = sqlx::query("DELETE FROM boards WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let existed = done.rows_affected() > 0;
        if existed {
            sqlx::query(
                "INSERT INTO deleted_boards (id, deleted_at) VALUES (?, ?) \
                 ON CONFLICT (id) DO UPDATE SET deleted_at = excluded.deleted_at",
            )
            .bind(id.as_str())
            .bind(now_millis())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        }
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(existed)
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(StorageError::db("ping"))?;
        Ok(())
    }

    async fn close(&self) {
        self.appender.close().await;
        self.checkpointer.close().await;
        self.writer.close().await;
        self.reader.close().await;
    }
}

#[async_trait]
impl UpdateLog for SqliteStore {
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let _gate = self.gate.lock().await;
        self.appender.append(updates, now_millis()).await
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        let op = "load";
        // One read transaction: WAL gives it one consistent snapshot of the file.
        let mut tx = self.reader.begin().await.map_err(StorageError::db(op))?;
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let info = board_info(row.ok_or_else(|| StorageError::BoardNotFound(id.clone()))?)?;
        let snap: Option<(i64, i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, format, data FROM board_snapshots WHERE board_id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::db(op))?;
        let snapshot = match snap {
            Some((seq, format, data)) => Some(StoredSnapshot {
                seq,
                format: blob_format(id, &format!("snapshot at seq {seq}"), format)?,
                data,
            }),
            None => None,
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, data FROM board_updates WHERE board_id = ? AND seq > ? ORDER BY seq",
        )
        .bind(id.as_str())
        .bind(snapshot.as_ref().map_or(0, |s| s.seq))
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.rollback().await.map_err(StorageError::db(op))?;
        Ok(StoredBoard {
            info,
            snapshot,
            updates: rows
                .into_iter()
                .map(|(seq, data)| StoredUpdate { seq, data })
                .collect(),
        })
    }
}

#[async_trait]
impl Snapshots for SqliteStore {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        let op = "compact";
        let mut tx = self.write_tx(op).await?;
        let last_seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM boards WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let last_seq = last_seq.ok_or_else(|| StorageError::BoardNotFound(id.clone()))?;
        let snapshot_seq: i64 =
            sqlx::query_scalar("SELECT seq FROM board_snapshots WHERE board_id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::db(op))?
                .unwrap_or(0);
        super::check_compaction(id, snapshot.upto, snapshot_seq, last_seq)?;
        sqlx::query(
            "INSERT INTO board_snapshots (board_id, seq, format, data, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (board_id) DO UPDATE SET seq = excluded.seq, format = excluded.format, \
             data = excluded.data, created_at = excluded.created_at",
        )
        .bind(id.as_str())
        .bind(snapshot.upto)
        .bind(i64::from(BlobFormat::YjsUpdateV1.code()))
        .bind(snapshot.data)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let deleted = sqlx::query("DELETE FROM board_updates WHERE board_id = ? AND seq <= ?")
            .bind(id.as_str())
            .bind(snapshot.upto)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        Ok(Box::new(SqlitePendingCompaction {
            tx,
            stats: CompactionStats {
                snapshot_seq: snapshot.upto,
                rows_deleted: deleted.rows_affected(),
                snapshot_bytes: snapshot.data.len() as u64,
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
impl Versions for SqliteStore {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        let op = "save version";
        let now = now_millis();
        let mut tx = self.write_tx(op).await?;
        let vid: i64 = sqlx::query_scalar(
            "INSERT INTO board_versions \
             (board_id, kind, label, author, reason, created_at, covers_seq, format, size, data) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(id.as_str())
        .bind(version.kind.as_str())
        .bind(version.label)
        .bind(version.author)
        .bind(version.reason)
        .bind(now)
        .bind(version.covers_seq)
        .bind(i64::from(BlobFormat::YjsUpdateV1.code()))
        .bind(version.data.len() as i64)
        .bind(version.data)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_fk_violation(&e) {
                StorageError::BoardNotFound(id.clone())
            } else {
                StorageError::db(op)(e)
            }
        })?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(super::new_version_info(id, VersionId(vid), now, &version))
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        let op = "list versions";
        let mut tx = self.reader.begin().await.map_err(StorageError::db(op))?;
        if !board_exists(&mut *tx, id, op).await? {
            return Err(StorageError::BoardNotFound(id.clone()));
        }
        let rows: Vec<VersionRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{SELECT_VERSION_INFO} WHERE board_id = ? ORDER BY id DESC"
        )))
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.rollback().await.map_err(StorageError::db(op))?;
        rows.into_iter().map(|r| version_info(id, r)).collect()
    }

    async fn get_version(
        &self,
        id: &BoardId,
        version: VersionId,
    ) -> Result<Option<Version>, StorageError> {
        let row: Option<(
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
            i64,
            i64,
            Vec<u8>,
        )> = sqlx::query_as(
            "SELECT id, kind, label, author, reason, created_at, covers_seq, size, format, data \
                 FROM board_versions WHERE board_id = ? AND id = ?",
        )
        .bind(id.as_str())
        .bind(version.0)
        .fetch_optional(&self.reader)
        .await
        .map_err(StorageError::db("get version"))?;
        let Some((vid, kind, label, author, reason, created_at, covers_seq, size, format, data)) =
            row
        else {
            return Ok(None);
        };
        let info = version_info(
            id,
            (
                vid, kind, label, author, reason, created_at, covers_seq, size,
            ),
        )?;
        let format = blob_format(id, &format!("version {vid}"), format)?;
        Ok(Some(Version { info, format, data }))
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        let statement = sqlx::query("DELETE FROM board_versions WHERE board_id = ? AND id = ?")
            .bind(id.as_str())
            .bind(version.0);
        self.write_one("delete version", statement).await
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        let op = "prune versions";
        let mut tx = self.write_tx(op).await?;
        let done = sqlx::query(
            "DELETE FROM board_versions WHERE board_id = ?1 AND kind = 'auto' AND id NOT IN ( \
                 SELECT id FROM board_versions WHERE board_id = ?1 AND kind = 'auto' \
                 ORDER BY id DESC LIMIT ?2)",
        )
        .bind(id.as_str())
        .bind(i64::from(keep_auto))
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Runs for SqliteStore {
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let op = "start run";
        let now = now_millis();
        let mut tx = self.write_tx(op).await?;
        // The board's claim, in one transaction: interrupt a running run whose server
        // stopped, then insert unless another run of the board is running (the partial unique
        // index `assistant_runs_one_running`).
        sqlx::query(
            "UPDATE assistant_runs SET state = 'interrupted', finished_at = ? \
             WHERE board_id = ? AND state = 'running' AND alive_at < ?",
        )
        .bind(now)
        .bind(id.as_str())
        .bind(run.expired_before)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO assistant_runs \
             (id, board_id, user_id, prompt, model, state, started_at, alive_at, before_version) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (board_id) WHERE state = 'running' DO NOTHING RETURNING {RUN_COLUMNS}"
        )))
        .bind(run.id)
        .bind(id.as_str())
        .bind(run.user)
        .bind(run.prompt)
        .bind(run.model)
        .bind(RunState::Running.as_str())
        .bind(now)
        .bind(now)
        .bind(run.before_version.map(|v| v.0))
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_fk_violation(&e) {
                StorageError::BoardNotFound(id.clone())
            } else {
                StorageError::db(op)(e)
            }
        })?;
        let Some(row) = row else {
            let active: String = sqlx::query_scalar(
                "SELECT id FROM assistant_runs WHERE board_id = ? AND state = 'running'",
            )
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
            return Err(StorageError::RunActive {
                board: id.clone(),
                run: active,
            });
        };
        tx.commit().await.map_err(StorageError::db(op))?;
        run_record(id, row)
    }

    async fn touch_run(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let statement = sqlx::query(
            "UPDATE assistant_runs SET alive_at = ? \
             WHERE board_id = ? AND id = ? AND state = 'running'",
        )
        .bind(now_millis())
        .bind(id.as_str())
        .bind(run);
        self.write_one("touch run", statement).await
    }

    async fn request_cancel(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let statement = sqlx::query(
            "UPDATE assistant_runs SET cancel_requested = 1 \
             WHERE board_id = ? AND id = ? AND state = 'running'",
        )
        .bind(id.as_str())
        .bind(run);
        self.write_one("request cancel", statement).await
    }

    async fn cancel_requested(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let asked: Option<i64> = sqlx::query_scalar(
            "SELECT cancel_requested FROM assistant_runs WHERE board_id = ? AND id = ?",
        )
        .bind(id.as_str())
        .bind(run)
        .fetch_optional(&self.reader)
        .await
        .map_err(StorageError::db("cancel requested"))?;
        Ok(asked.is_some_and(|a| a != 0))
    }

    async fn set_run_version(
        &self,
        id: &BoardId,
        run: &str,
        version: VersionId,
    ) -> Result<bool, StorageError> {
        let statement = sqlx::query(
            "UPDATE assistant_runs SET before_version = ? WHERE board_id = ? AND id = ?",
        )
        .bind(version.0)
        .bind(id.as_str())
        .bind(run);
        self.write_one("set run version", statement).await
    }

    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError> {
        let statement = sqlx::query(
            "UPDATE assistant_runs SET state = ?, error = ?, summary = ?, tool_calls = ?, \
             prompt_tokens = ?, completion_tokens = ?, objects_created = ?, objects_deleted = ?, \
             steps = ?, changes = ?, finished_at = ? WHERE board_id = ? AND id = ?",
        )
        .bind(result.state.as_str())
        .bind(result.error)
        .bind(result.summary)
        .bind(result.tool_calls)
        .bind(count_to_db(result.prompt_tokens))
        .bind(count_to_db(result.completion_tokens))
        .bind(i64::from(result.objects_created))
        .bind(i64::from(result.objects_deleted))
        .bind(i64::from(result.steps))
        .bind(result.changes)
        .bind(now_millis())
        .bind(id.as_str())
        .bind(run);
        self.write_one("finish run", statement).await
    }

    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let op = "list runs";
        let mut tx = self.reader.begin().await.map_err(StorageError::db(op))?;
        if !board_exists(&mut *tx, id, op).await? {
            return Err(StorageError::BoardNotFound(id.clone()));
        }
        let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM assistant_runs WHERE board_id = ? \
             ORDER BY started_at DESC, id DESC LIMIT ?"
        )))
        .bind(id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.rollback().await.map_err(StorageError::db(op))?;
        rows.into_iter().map(|r| run_record(id, r)).collect()
    }

    async fn get_run(&self, id: &BoardId, run: &str) -> Result<Option<RunRecord>, StorageError> {
        let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM assistant_runs WHERE board_id = ? AND id = ?"
        )))
        .bind(id.as_str())
        .bind(run)
        .fetch_optional(&self.reader)
        .await
        .map_err(StorageError::db("get run"))?;
        row.map(|r| run_record(id, r)).transpose()
    }

    async fn claim_undo(
        &self,
        id: &BoardId,
        run: &str,
        by: Option<&str>,
    ) -> Result<bool, StorageError> {
        let op = "claim undo";
        let mut tx = self.write_tx(op).await?;
        // One conditional statement: of concurrent claims, only the first matches the row.
        let done = sqlx::query(
            "UPDATE assistant_runs SET undone_at = ?, undone_by = ? \
             WHERE board_id = ? AND id = ? AND state <> 'running' AND undone_at IS NULL",
        )
        .bind(now_millis())
        .bind(by)
        .bind(id.as_str())
        .bind(run)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        let statement = sqlx::query(
            "UPDATE assistant_runs SET changes = ? \
             WHERE board_id = ? AND id = ? AND state = 'running'",
        )
        .bind(changes)
        .bind(id.as_str())
        .bind(run);
        self.write_one("save run changes", statement).await
    }

    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError> {
        let op = "release undo";
        let mut tx = self.write_tx(op).await?;
        sqlx::query(
            "UPDATE assistant_runs SET undone_at = NULL, undone_by = NULL \
             WHERE board_id = ? AND id = ?",
        )
        .bind(id.as_str())
        .bind(run)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))
    }

    async fn update_budgets(
        &self,
        scopes: &[&str],
        update: BudgetUpdate<'_>,
    ) -> Result<bool, StorageError> {
        let op = "update budgets";
        // The write transaction (and the write gate) keeps every other update out.
        let mut tx = self.write_tx(op).await?;
        let mut rows = Vec::with_capacity(scopes.len());
        for &scope in scopes {
            let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT day, used, reserved, tat_ms FROM assistant_budgets WHERE scope = ?",
            )
            .bind(scope)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
            let (day, used, reserved, tat_ms) = row.unwrap_or_default();
            rows.push(BudgetRow {
                scope: scope.to_owned(),
                day,
                used,
                reserved,
                tat_ms,
            });
        }
        if !update(&mut rows) {
            return Ok(false);
        }
        for row in &rows {
            sqlx::query(
                "INSERT INTO assistant_budgets (scope, day, used, reserved, tat_ms) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET day = excluded.day, \
                 used = excluded.used, reserved = excluded.reserved, tat_ms = excluded.tat_ms",
            )
            .bind(&row.scope)
            .bind(row.day)
            .bind(row.used)
            .bind(row.reserved)
            .bind(row.tat_ms)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        }
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(true)
    }

    async fn interrupt_stale_runs(&self, alive_before: UnixMillis) -> Result<u64, StorageError> {
        let op = "interrupt stale runs";
        // Listing and reading runs call this every time, and a stale run is rare (its server
        // stopped while it worked): look on the read pool first, and take the write gate (and
        // a write transaction's fsync) only if there is one. A run that turns stale in between
        // is caught next time.
        let stale: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM assistant_runs WHERE state = 'running' AND alive_at < ? LIMIT 1",
        )
        .bind(alive_before)
        .fetch_optional(&self.reader)
        .await
        .map_err(StorageError::db(op))?;
        if stale.is_none() {
            return Ok(0);
        }
        let mut tx = self.write_tx(op).await?;
        let done = sqlx::query(
            "UPDATE assistant_runs SET state = ?, finished_at = ? \
             WHERE state = 'running' AND alive_at < ?",
        )
        .bind(RunState::Interrupted.as_str())
        .bind(now_millis())
        .bind(alive_before)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(done.rows_affected())
    }
}

/// A compaction staged in an open `BEGIN IMMEDIATE` transaction. It holds SQLite's write lock
/// until committed or dropped, so callers commit it promptly.
#[derive(Debug)]
struct SqlitePendingCompaction {
    tx: WriteTx,
    stats: CompactionStats,
}

#[async_trait]
impl PendingCompaction for SqlitePendingCompaction {
    async fn commit(self: Box<Self>) -> Result<CompactionStats, StorageError> {
        self.tx
            .commit()
            .await
            .map_err(StorageError::db("compact"))?;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn board(id: &str) -> BoardId {
        BoardId::parse(id).unwrap()
    }

    /// Every connection that writes trims the WAL back to the documented size.
    #[tokio::test]
    async fn journal_size_limit_is_set() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("boards.db").display());
        let store = SqliteStore::open(&url, &StorageOptions::default())
            .await
            .unwrap();
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(limit, 16 << 20);
        store.close().await;
    }

    /// The append thread survives a failed batch, and a closed store refuses appends instead
    /// of hanging or writing.
    #[tokio::test]
    async fn append_thread_recovers_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("boards.db").display());
        let store = SqliteStore::open(&url, &StorageOptions::default())
            .await
            .unwrap();
        let (live, missing) = (board("live"), board("missing"));
        store.create_board(&live).await.unwrap();
        let mixed = [
            NewUpdate {
                board: &live,
                data: b"a",
            },
            NewUpdate {
                board: &missing,
                data: b"b",
            },
        ];
        assert!(matches!(
            store.append(&mixed).await,
            Err(StorageError::BoardNotFound(b)) if b == missing
        ));
        let one = [NewUpdate {
            board: &live,
            data: b"c",
        }];
        assert_eq!(store.append(&one).await.unwrap(), vec![1]);
        assert_eq!(store.append(&one).await.unwrap(), vec![2]);
        let stored = store.load(&live).await.unwrap();
        assert_eq!(stored.info.last_seq, 2);
        assert_eq!(
            stored
                .updates
                .iter()
                .map(|u| u.data.as_slice())
                .collect::<Vec<_>>(),
            [b"c", b"c"]
        );

        store.close().await;
        assert!(matches!(
            store.append(&one).await,
            Err(StorageError::Closed)
        ));
    }

    async fn open_in(dir: &Path) -> SqliteStore {
        let url = format!("sqlite://{}", dir.join("boards.db").display());
        SqliteStore::open(&url, &StorageOptions::default())
            .await
            .unwrap()
    }

    /// Under steady appends the checkpoint thread still gets the WAL restarted (a checkpoint
    /// beside the writers alone never would): the WAL holds a fraction of what was written
    /// through it. And no commit runs a checkpoint itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wal_restarts_under_steady_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_in(dir.path()).await;
        let autocheckpoint: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(autocheckpoint, 0, "commits never checkpoint");
        let a = board("steady");
        store.create_board(&a).await.unwrap();
        let payload = vec![7u8; 4096];
        let batch: Vec<NewUpdate<'_>> = (0..16)
            .map(|_| NewUpdate {
                board: &a,
                data: &payload,
            })
            .collect();
        let mut written = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(2) {
            store.append(&batch).await.unwrap();
            written += 16 * 4096;
        }
        // Frames in the WAL since it last restarted; a WAL that never restarted would hold
        // every page appended.
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        let pages = i64::try_from(written / 4096).unwrap();
        assert!(
            frames * 2 < pages,
            "the WAL restarted: {frames} frames in the WAL after {pages} pages appended"
        );
        store.close().await;
    }
}
