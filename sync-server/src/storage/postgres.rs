//! The PostgreSQL backend, for deployments that outgrow one machine.
//!
//! An append is one statement whatever the batch's size: it locks the boards it touches with
//! `FOR NO KEY UPDATE` in id order (so concurrent batches never deadlock), reserves each
//! board's range of sequence numbers, and inserts every row from `UNNEST(...)` arrays. Loads read in one `REPEATABLE READ` transaction.
//!
//! Appends have a pool of their own ([`APPEND_CONNECTIONS`]): whatever else holds the general
//! pool's connections (a burst of reads, readiness probes, long compactions), a commit never
//! waits for one.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::maintenance::{MaintenanceLock, lock_key};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections reserved for appends, in a pool of their own beside the general pool: the
/// committer makes one append at a time; the second serves an import meanwhile.
pub const APPEND_CONNECTIONS: u32 = 2;

/// Connections that hold boards' maintenance locks, in a pool of their own: each held lock
/// keeps one (an open transaction), so at most this many maintenance jobs run at once on a
/// server, and the jobs' own reads and writes on the general pool never wait for a lock's
/// connection (nor the other way round).
pub const MAINTENANCE_CONNECTIONS: u32 = 2;

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Everything but appends and maintenance locks.
    pool: PgPool,
    /// Appends only.
    appends: PgPool,
    /// Maintenance locks only.
    locks: PgPool,
    /// The schema the tables are in: part of every maintenance lock's key, since advisory
    /// locks are the database's, not the schema's.
    schema: String,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and runs the migrations.
    pub async fn connect(url: &str, options: &StorageOptions) -> Result<Self, StorageError> {
        let (url, ignored) = known_parameters_only(url);
        if !ignored.is_empty() {
            tracing::warn!(
                parameters = ignored.join(", "),
                "ignoring database URL parameters the PostgreSQL driver does not read"
            );
        }
        let url = url.as_str();
        // The parse error could quote the URL, password and all: say only that it failed.
        let connect = PgConnectOptions::from_str(url).map_err(|_| {
            StorageError::InvalidUrl(format!(
                "cannot parse PostgreSQL URL {}",
                super::redact(url)
            ))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(StorageError::db("connect"))?;
        MIGRATOR.run(&pool).await?;
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(StorageError::db("connect"))?;
        let appends = PgPoolOptions::new()
            .max_connections(APPEND_CONNECTIONS)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(StorageError::db("connect"))?;
        let locks = PgPoolOptions::new()
            .max_connections(MAINTENANCE_CONNECTIONS)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self {
            pool,
            appends,
            locks,
            schema,
        })
    }

    async fn tx(&self, op: &'static str) -> Result<Transaction<'static, Postgres>, StorageError> {
        self.pool.begin().await.map_err(StorageError::db(op))
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
        let mut tx = self.tx(op).await?;
        sqlx::query(
            "INSERT INTO boards (id, created_at, updated_at, last_seq) VALUES ($1, $2, $2, $3)",
        )
        .bind(id.as_str())
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
            sqlx::query("INSERT INTO board_updates (board_id, seq, data) VALUES ($1, 1, $2)")
                .bind(id.as_str())
                .bind(content)
                .execute(&mut *tx)
                .await
                .map_err(StorageError::db(op))?;
        }
        sqlx::query("DELETE FROM deleted_boards WHERE id = $1")
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

/// Query parameters sqlx's PostgreSQL driver reads (`PgConnectOptions`'s URL parser, sqlx
/// 0.9), besides `options[NAME]`.
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL without the query parameters the driver does not read, and their names. The driver
/// would ignore them anyway, but it logs each one with its value, and one of them may be a
/// secret (libpq's `sslpassword`, say).
fn known_parameters_only(url: &str) -> (String, Vec<String>) {
    let Some((base, rest)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut ignored = Vec::new();
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = super::url::percent_decode(pair.split_once('=').map_or(*pair, |(n, _)| n));
            let known = KNOWN_PARAMETERS.contains(&name.as_str())
                || (name.starts_with("options[") && name.ends_with(']'));
            if !known && !pair.is_empty() {
                ignored.push(name);
            }
            known
        })
        .collect();
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    (out, ignored)
}

/// Whether board `id` exists, read through `executor`.
async fn board_exists<'e, E>(
    executor: E,
    id: &BoardId,
    op: &'static str,
) -> Result<bool, StorageError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM boards WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(executor)
        .await
        .map_err(StorageError::db(op))?;
    Ok(found.is_some())
}

const SELECT_BOARD: &str = "SELECT id, created_at, updated_at, last_seq FROM boards WHERE id = $1";

#[async_trait]
impl Boards for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
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
        let mut tx = self.tx(op).await?;
        sqlx::query(
            "INSERT INTO boards (id, created_at, updated_at, last_seq) SELECT $1, $2, $2, 0 \
             WHERE NOT EXISTS (SELECT 1 FROM deleted_boards WHERE id = $1) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        // Checked again in a statement of its own: if a delete of this id was in flight, the
        // insert above waited for it on the key and went ahead once it committed, without
        // seeing its tombstone (READ COMMITTED: a statement sees what was committed when it
        // began). This statement began after that commit, so it does see it.
        let deleted: Option<i32> = sqlx::query_scalar("SELECT 1 FROM deleted_boards WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        match row {
            Some(row) if deleted.is_none() => {
                tx.commit().await.map_err(StorageError::db(op))?;
                board_info(row)
            }
            // Dropping `tx` rolls back whatever the insert did.
            _ => Err(StorageError::BoardDeleted(id.clone())),
        }
    }

    async fn get_board(&self, id: &BoardId) -> Result<Option<BoardInfo>, StorageError> {
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(StorageError::db("get board"))?;
        row.map(board_info).transpose()
    }

    async fn last_seqs(&self, ids: &[BoardId]) -> Result<HashMap<BoardId, Seq>, StorageError> {
        let names: Vec<&str> = ids.iter().map(BoardId::as_str).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, last_seq FROM boards WHERE id = ANY($1)")
                .bind(&names)
                .fetch_all(&self.pool)
                .await
                .map_err(StorageError::db("last seqs"))?;
        rows.into_iter()
            .map(|(id, seq)| {
                BoardId::parse(&id)
                    .map(|parsed| (parsed, seq))
                    .map_err(|_| StorageError::InvalidStoredBoardId(id))
            })
            .collect()
    }

    async fn list_boards(
        &self,
        after: Option<&BoardId>,
        limit: u32,
    ) -> Result<Vec<BoardInfo>, StorageError> {
        let rows: Vec<BoardRow> = sqlx::query_as(
            "SELECT id, created_at, updated_at, last_seq FROM boards \
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.map_or("", BoardId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(StorageError::db("list boards"))?;
        rows.into_iter().map(board_info).collect()
    }

    async fn delete_board(&self, id: &BoardId) -> Result<bool, StorageError> {
        let op = "delete board";
        let mut tx = self.tx(op).await?;
        let done = sqlx::query("DELETE FROM boards WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let existed = done.rows_affected() > 0;
        if existed {
            sqlx::query(
                "INSERT INTO deleted_boards (id, deleted_at) VALUES ($1, $2) \
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
            .execute(&self.pool)
            .await
            .map_err(StorageError::db("ping"))?;
        Ok(())
    }

    async fn close(&self) {
        self.locks.close().await;
        self.appends.close().await;
        self.pool.close().await;
    }
}

#[async_trait]
impl UpdateLog for PostgresStore {
    async fn append(&self, updates: &[NewUpdate<'_>]) -> Result<Vec<Seq>, StorageError> {
        let op = "append";
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let counts = super::count_per_board(updates);
        let ids: Vec<&str> = counts.iter().map(|(b, _)| b.as_str()).collect();
        let ns: Vec<i64> = counts.iter().map(|(_, n)| *n).collect();
        // Each update's position among its board's updates in this batch (1, 2, ...).
        let mut ordinals: HashMap<&BoardId, Seq> = HashMap::with_capacity(counts.len());
        let ords = super::assign_seqs(updates, &mut ordinals);
        let boards: Vec<&str> = updates.iter().map(|u| u.board.as_str()).collect();
        let data: Vec<&[u8]> = updates.iter().map(|u| u.data).collect();
        let mut tx = self.appends.begin().await.map_err(StorageError::db(op))?;
        // One statement: lock the boards in a fixed (byte, "C" collation) order so two batches
        // never wait on each other in a cycle (NO KEY UPDATE still lets the log rows' foreign
        // key checks through), reserve each board's range of sequence numbers, and insert
        // every row at its board's base plus its ordinal.
        let bases: Vec<(String, i64)> = sqlx::query_as(
            "WITH locked AS MATERIALIZED ( \
                 SELECT id, last_seq FROM boards WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE \
             ), bumped AS ( \
                 UPDATE boards AS b SET last_seq = l.last_seq + v.n, updated_at = $3 \
                 FROM locked AS l JOIN UNNEST($1::text[], $2::int8[]) AS v (id, n) ON v.id = l.id \
                 WHERE b.id = l.id \
                 RETURNING b.id, l.last_seq AS base \
             ), inserted AS ( \
                 INSERT INTO board_updates (board_id, seq, data) \
                 SELECT r.board_id, bumped.base + r.ord, r.data \
                 FROM UNNEST($4::text[], $5::int8[], $6::bytea[]) AS r (board_id, ord, data) \
                 JOIN bumped ON bumped.id = r.board_id \
             ) \
             SELECT id, base FROM bumped",
        )
        .bind(&ids)
        .bind(&ns)
        .bind(now_millis())
        .bind(&boards)
        .bind(&ords)
        .bind(&data)
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let base: HashMap<&str, i64> = bases.iter().map(|(id, b)| (id.as_str(), *b)).collect();
        if let Some((missing, _)) = counts.iter().find(|(b, _)| !base.contains_key(b.as_str())) {
            // Dropping `tx` rolls back the rows inserted for the other boards.
            return Err(StorageError::BoardNotFound((*missing).clone()));
        }
        let seqs = updates
            .iter()
            .zip(&ords)
            .map(|(u, ord)| base[u.board.as_str()] + ord)
            .collect();
        tx.commit().await.map_err(StorageError::db(op))?;
        Ok(seqs)
    }

    async fn read_range(
        &self,
        id: &BoardId,
        after: Seq,
        before: Seq,
    ) -> Result<Vec<Vec<u8>>, StorageError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT data FROM board_updates WHERE board_id = $1 AND seq > $2 AND seq < $3 \
             ORDER BY seq",
        )
        .bind(id.as_str())
        .bind(after)
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(StorageError::db("read range"))?;
        if rows.len() as i64 == before - after - 1 {
            return Ok(rows.into_iter().map(|(data,)| data).collect());
        }
        // A compaction folded some of them: the snapshot and the rows after it.
        Ok(super::range_of(self.load(id).await?, after, before))
    }

    async fn load(&self, id: &BoardId) -> Result<StoredBoard, StorageError> {
        let op = "load";
        // One snapshot for all three reads, so a compaction committing in between can't make
        // the snapshot and the log rows disagree.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(StorageError::db(op))?;
        let row: Option<BoardRow> = sqlx::query_as(SELECT_BOARD)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        let info = board_info(row.ok_or_else(|| StorageError::BoardNotFound(id.clone()))?)?;
        let snap: Option<(i64, i16, Vec<u8>)> =
            sqlx::query_as("SELECT seq, format, data FROM board_snapshots WHERE board_id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::db(op))?;
        let snapshot = match snap {
            Some((seq, format, data)) => Some(StoredSnapshot {
                seq,
                format: blob_format(id, &format!("snapshot at seq {seq}"), i64::from(format))?,
                data,
            }),
            None => None,
        };
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, data FROM board_updates WHERE board_id = $1 AND seq > $2 ORDER BY seq",
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
impl Snapshots for PostgresStore {
    async fn begin_compaction(
        &self,
        id: &BoardId,
        snapshot: NewSnapshot<'_>,
    ) -> Result<Box<dyn PendingCompaction + '_>, StorageError> {
        let op = "compact";
        let mut tx = self.tx(op).await?;
        let last_seq: Option<i64> =
            sqlx::query_scalar("SELECT last_seq FROM boards WHERE id = $1 FOR KEY SHARE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::db(op))?;
        let last_seq = last_seq.ok_or_else(|| StorageError::BoardNotFound(id.clone()))?;
        // Lock the snapshot row (if any) so two compactions of one board run one after the other.
        let snapshot_seq: i64 =
            sqlx::query_scalar("SELECT seq FROM board_snapshots WHERE board_id = $1 FOR UPDATE")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StorageError::db(op))?
                .unwrap_or(0);
        super::check_compaction(id, snapshot.upto, snapshot_seq, last_seq)?;
        let written = sqlx::query(
            "INSERT INTO board_snapshots (board_id, seq, format, data, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (board_id) DO UPDATE SET seq = EXCLUDED.seq, format = EXCLUDED.format, \
             data = EXCLUDED.data, created_at = EXCLUDED.created_at \
             WHERE board_snapshots.seq < EXCLUDED.seq",
        )
        .bind(id.as_str())
        .bind(snapshot.upto)
        .bind(BlobFormat::YjsUpdateV1.code())
        .bind(snapshot.data)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        if written.rows_affected() == 0 {
            // A concurrent compaction created the first snapshot after our check.
            return Err(StorageError::StaleCompaction {
                board: id.clone(),
                upto: snapshot.upto,
                snapshot_seq: snapshot.upto,
                last_seq,
            });
        }
        let deleted = sqlx::query("DELETE FROM board_updates WHERE board_id = $1 AND seq <= $2")
            .bind(id.as_str())
            .bind(snapshot.upto)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        Ok(Box::new(PostgresPendingCompaction {
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
        let op = "lock maintenance";
        let mut tx = self.locks.begin().await.map_err(StorageError::db(op))?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(lock_key(&self.schema, id))
            .fetch_one(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
        Ok(locked
            .then(|| Box::new(PostgresMaintenanceLock { _tx: tx }) as Box<dyn MaintenanceLock>))
    }
}

#[async_trait]
impl Versions for PostgresStore {
    async fn save_version(
        &self,
        id: &BoardId,
        version: NewVersion<'_>,
    ) -> Result<VersionInfo, StorageError> {
        let now = now_millis();
        let vid: i64 = sqlx::query_scalar(
            "INSERT INTO board_versions \
             (board_id, kind, label, author, reason, created_at, covers_seq, format, size, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(id.as_str())
        .bind(version.kind.as_str())
        .bind(version.label)
        .bind(version.author)
        .bind(version.reason)
        .bind(now)
        .bind(version.covers_seq)
        .bind(BlobFormat::YjsUpdateV1.code())
        .bind(version.data.len() as i64)
        .bind(version.data)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_fk_violation(&e) {
                StorageError::BoardNotFound(id.clone())
            } else {
                StorageError::db("save version")(e)
            }
        })?;
        Ok(super::new_version_info(id, VersionId(vid), now, &version))
    }

    async fn list_versions(&self, id: &BoardId) -> Result<Vec<VersionInfo>, StorageError> {
        let op = "list versions";
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(StorageError::db(op))?;
        if !board_exists(&mut *tx, id, op).await? {
            return Err(StorageError::BoardNotFound(id.clone()));
        }
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT id, kind, label, author, reason, created_at, covers_seq, size \
             FROM board_versions WHERE board_id = $1 ORDER BY id DESC",
        )
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
        type Row = (
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
            i64,
            i16,
            Vec<u8>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, kind, label, author, reason, created_at, covers_seq, size, format, data \
             FROM board_versions WHERE board_id = $1 AND id = $2",
        )
        .bind(id.as_str())
        .bind(version.0)
        .fetch_optional(&self.pool)
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
        let format = blob_format(id, &format!("version {vid}"), i64::from(format))?;
        Ok(Some(Version { info, format, data }))
    }

    async fn delete_version(&self, id: &BoardId, version: VersionId) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM board_versions WHERE board_id = $1 AND id = $2")
            .bind(id.as_str())
            .bind(version.0)
            .execute(&self.pool)
            .await
            .map_err(StorageError::db("delete version"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn prune_versions(&self, id: &BoardId, keep_auto: u32) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM board_versions WHERE board_id = $1 AND kind = 'auto' AND id NOT IN ( \
                 SELECT id FROM board_versions WHERE board_id = $1 AND kind = 'auto' \
                 ORDER BY id DESC LIMIT $2)",
        )
        .bind(id.as_str())
        .bind(i64::from(keep_auto))
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("prune versions"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Runs for PostgresStore {
    async fn start_run(&self, id: &BoardId, run: NewRun<'_>) -> Result<RunRecord, StorageError> {
        let op = "start run";
        // A conflict names the running run; if it ended between the insert and that read, the
        // insert is tried again.
        for _ in 0..3 {
            let now = now_millis();
            let mut tx = self.tx(op).await?;
            // The board's claim: interrupt a running run whose server stopped, then insert
            // unless another run of the board is running (the partial unique index
            // `assistant_runs_one_running`; a concurrent insert waits for this one to commit).
            sqlx::query(
                "UPDATE assistant_runs SET state = 'interrupted', finished_at = $1 \
                 WHERE board_id = $2 AND state = 'running' AND alive_at < $3",
            )
            .bind(now)
            .bind(id.as_str())
            .bind(run.expired_before)
            .execute(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
            let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO assistant_runs \
                 (id, board_id, user_id, prompt, model, state, started_at, alive_at, \
                  before_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) \
                 ON CONFLICT (board_id) WHERE state = 'running' DO NOTHING \
                 RETURNING {RUN_COLUMNS}"
            )))
            .bind(run.id)
            .bind(id.as_str())
            .bind(run.user)
            .bind(run.prompt)
            .bind(run.model)
            .bind(RunState::Running.as_str())
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
            if let Some(row) = row {
                tx.commit().await.map_err(StorageError::db(op))?;
                return run_record(id, row);
            }
            // A statement of its own sees the conflicting run, committed meanwhile.
            let active: Option<String> = sqlx::query_scalar(
                "SELECT id FROM assistant_runs WHERE board_id = $1 AND state = 'running'",
            )
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StorageError::db(op))?;
            if let Some(active) = active {
                return Err(StorageError::RunActive {
                    board: id.clone(),
                    run: active,
                });
            }
        }
        Err(StorageError::RunActive {
            board: id.clone(),
            run: "unknown".into(),
        })
    }

    async fn touch_run(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE assistant_runs SET alive_at = $1 \
             WHERE board_id = $2 AND id = $3 AND state = 'running'",
        )
        .bind(now_millis())
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("touch run"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn request_cancel(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE assistant_runs SET cancel_requested = TRUE \
             WHERE board_id = $1 AND id = $2 AND state = 'running'",
        )
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("request cancel"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn cancel_requested(&self, id: &BoardId, run: &str) -> Result<bool, StorageError> {
        let asked: Option<bool> = sqlx::query_scalar(
            "SELECT cancel_requested FROM assistant_runs WHERE board_id = $1 AND id = $2",
        )
        .bind(id.as_str())
        .bind(run)
        .fetch_optional(&self.pool)
        .await
        .map_err(StorageError::db("cancel requested"))?;
        Ok(asked.unwrap_or(false))
    }

    async fn set_run_version(
        &self,
        id: &BoardId,
        run: &str,
        version: VersionId,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE assistant_runs SET before_version = $1 WHERE board_id = $2 AND id = $3",
        )
        .bind(version.0)
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("set run version"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn finish_run(
        &self,
        id: &BoardId,
        run: &str,
        result: RunResult<'_>,
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE assistant_runs SET state = $1, error = $2, summary = $3, tool_calls = $4, \
             prompt_tokens = $5, completion_tokens = $6, objects_created = $7, \
             objects_deleted = $8, steps = $9, changes = $10, finished_at = $11 \
             WHERE board_id = $12 AND id = $13",
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
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("finish run"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_runs(&self, id: &BoardId, limit: u32) -> Result<Vec<RunRecord>, StorageError> {
        let op = "list runs";
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(StorageError::db(op))?;
        if !board_exists(&mut *tx, id, op).await? {
            return Err(StorageError::BoardNotFound(id.clone()));
        }
        let rows: Vec<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM assistant_runs WHERE board_id = $1 \
             ORDER BY started_at DESC, id DESC LIMIT $2"
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
            "SELECT {RUN_COLUMNS} FROM assistant_runs WHERE board_id = $1 AND id = $2"
        )))
        .bind(id.as_str())
        .bind(run)
        .fetch_optional(&self.pool)
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
        // One conditional statement: a concurrent claim waits on the row lock, then re-checks
        // the condition against the committed row and matches nothing.
        let done = sqlx::query(
            "UPDATE assistant_runs SET undone_at = $1, undone_by = $2 \
             WHERE board_id = $3 AND id = $4 AND state <> 'running' AND undone_at IS NULL",
        )
        .bind(now_millis())
        .bind(by)
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("claim undo"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn save_run_changes(
        &self,
        id: &BoardId,
        run: &str,
        changes: &[u8],
    ) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE assistant_runs SET changes = $1 \
             WHERE board_id = $2 AND id = $3 AND state = 'running'",
        )
        .bind(changes)
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("save run changes"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_undo(&self, id: &BoardId, run: &str) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE assistant_runs SET undone_at = NULL, undone_by = NULL \
             WHERE board_id = $1 AND id = $2",
        )
        .bind(id.as_str())
        .bind(run)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("release undo"))?;
        Ok(())
    }

    async fn update_budgets(
        &self,
        scopes: &[&str],
        update: BudgetUpdate<'_>,
    ) -> Result<bool, StorageError> {
        let op = "update budgets";
        let mut tx = self.tx(op).await?;
        // Every row exists, then all are locked in scope order, so concurrent updates on any
        // server wait for each other and never in a cycle.
        sqlx::query(
            "INSERT INTO assistant_budgets (scope) SELECT UNNEST($1::text[]) \
             ON CONFLICT (scope) DO NOTHING",
        )
        .bind(scopes)
        .execute(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let stored: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT scope, day, used, reserved, tat_ms FROM assistant_budgets \
             WHERE scope = ANY($1) ORDER BY scope FOR UPDATE",
        )
        .bind(scopes)
        .fetch_all(&mut *tx)
        .await
        .map_err(StorageError::db(op))?;
        let mut rows: Vec<BudgetRow> = scopes
            .iter()
            .map(|&scope| {
                stored.iter().find(|r| r.0 == scope).map_or_else(
                    || BudgetRow {
                        scope: scope.to_owned(),
                        ..BudgetRow::default()
                    },
                    |(scope, day, used, reserved, tat_ms)| BudgetRow {
                        scope: scope.clone(),
                        day: *day,
                        used: *used,
                        reserved: *reserved,
                        tat_ms: *tat_ms,
                    },
                )
            })
            .collect();
        if !update(&mut rows) {
            // Dropping `tx` rolls back the rows inserted above.
            return Ok(false);
        }
        for row in &rows {
            sqlx::query(
                "UPDATE assistant_budgets SET day = $2, used = $3, reserved = $4, tat_ms = $5 \
                 WHERE scope = $1",
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
        let done = sqlx::query(
            "UPDATE assistant_runs SET state = $1, finished_at = $2 \
             WHERE state = 'running' AND alive_at < $3",
        )
        .bind(RunState::Interrupted.as_str())
        .bind(now_millis())
        .bind(alive_before)
        .execute(&self.pool)
        .await
        .map_err(StorageError::db("interrupt stale runs"))?;
        Ok(done.rows_affected())
    }
}

/// A board's maintenance lock: an advisory lock held by an open transaction on the lock pool.
/// Dropping it rolls the transaction back, which releases the lock (the connection sends the
/// rollback before it serves anyone else; if it broke, the server ended the session and the
/// lock with it).
#[derive(Debug)]
struct PostgresMaintenanceLock {
    _tx: Transaction<'static, Postgres>,
}

impl MaintenanceLock for PostgresMaintenanceLock {}

/// A compaction staged in an open transaction; dropping it rolls back.
#[derive(Debug)]
struct PostgresPendingCompaction {
    tx: Transaction<'static, Postgres>,
    stats: CompactionStats,
}

#[async_trait]
impl PendingCompaction for PostgresPendingCompaction {
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
    use super::known_parameters_only;

    #[test]
    fn parameters_the_driver_ignores_are_dropped_before_it_logs_them() {
        let (url, ignored) = known_parameters_only(
            "postgres://u@h/db?sslmode=disable&sslpassword=s&options=-c%20x%3Dy&connect_timeout=5&options[search_path]=a",
        );
        assert_eq!(
            url,
            "postgres://u@h/db?sslmode=disable&options=-c%20x%3Dy&options[search_path]=a"
        );
        assert_eq!(ignored, ["sslpassword", "connect_timeout"]);
        assert_eq!(
            known_parameters_only("postgres://u@h/db?ssl%70assword=s"),
            (
                "postgres://u@h/db".to_owned(),
                vec!["sslpassword".to_owned()]
            )
        );
        assert_eq!(
            known_parameters_only("postgres://u@h/db"),
            ("postgres://u@h/db".to_owned(), Vec::new())
        );
    }
}
