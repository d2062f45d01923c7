//! The SQLite append path: one thread of its own holding one rusqlite connection.
//!
//! Appends are the server's hot path (every update of every board is one, grouped by the
//! committer). sqlx runs each SQLite connection on a worker thread of its own too, but sends
//! every statement there over a channel and every result row back over another, waking the
//! async side for each; at 4,000 updates/s that plumbing cost as much CPU as SQLite's own work.
//! Here a batch crosses to the thread once, is written with cached prepared statements (the
//! update bytes bound as blobs, no text encoding), and one reply comes back.
//!
//! The thread's connection is a second writer on the file beside sqlx's writer pool. The store
//! serialises the two in process (its write gate), so neither waits in SQLite's busy handler
//! for the other; another process on the same file is waited out by the busy timeout.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::ids::{BoardId, Seq};
use crate::storage::{NewUpdate, StorageError, count_per_board};

/// Board `?1`'s `last_seq`; no row if the board does not exist.
///
/// A reservation is this read and then [`ADVANCE`], not one `UPDATE ... RETURNING`: inside the
/// batch's `BEGIN IMMEDIATE` nothing can come between the two, and SQLite's `RETURNING` costs
/// more than the rest of the reservation (callgrind, one update per commit: 11% fewer
/// instructions in the whole server without it).
const LAST_SEQ: &str = "SELECT last_seq FROM boards WHERE id = ?1";
/// Sets board `?1`'s `last_seq` to `?2` and stamps it `?3`.
const ADVANCE: &str = "UPDATE boards SET last_seq = ?2, updated_at = ?3 WHERE id = ?1";
const INSERT: &str = "INSERT INTO board_updates (board_id, seq, data) VALUES (?1, ?2, ?3)";

/// A batch to append, owned so it can cross to the thread: the boards with their row counts,
/// and every row's bytes in one buffer.
struct Job {
    boards: Vec<(BoardId, i64)>,
    /// Per row, in order: its board (an index into `boards`) and where its bytes end in `data`.
    rows: Vec<(usize, usize)>,
    data: Vec<u8>,
    now: i64,
    reply: oneshot::Sender<Result<Vec<Seq>, Failure>>,
}

/// Why the thread could not append a batch.
enum Failure {
    /// `boards[i]` does not exist; nothing was written.
    MissingBoard(usize),
    /// SQLite failed; nothing was written.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Connection settings for the append connection (the same as sqlx's writer's), and what the
/// thread shares with the store.
pub(super) struct Settings<'a> {
    pub(super) path: &'a Path,
    pub(super) busy_timeout: Duration,
    pub(super) journal_size_limit: i64,
    /// Set after every write, for the checkpoint thread.
    pub(super) dirty: Arc<AtomicBool>,
    /// Frames in the WAL after the last append, for the checkpoint thread.
    pub(super) wal_frames: Arc<AtomicI64>,
}

thread_local! {
    /// Frames in the WAL after the last commit of this thread's connection, as SQLite's WAL
    /// hook reports them (the hook is a plain function: it cannot reach the store).
    static WAL_FRAMES: Cell<i64> = const { Cell::new(0) };
}

/// The append connection's WAL hook: notes the frames in the WAL after a commit.
#[allow(clippy::unnecessary_wraps)] // the signature rusqlite's `wal_hook` takes
fn note_wal_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(i64::from(frames)));
    Ok(())
}

/// The handle to the append thread.
#[derive(Debug)]
pub(super) struct Appender {
    /// `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Appender {
    /// Opens the connection (the schema must exist) and starts the thread.
    pub(super) fn start(settings: &Settings<'_>) -> Result<Self, StorageError> {
        let conn = open(settings).map_err(StorageError::sqlite("open"))?;
        let (jobs, inbox) = mpsc::channel();
        let dirty = settings.dirty.clone();
        let wal_frames = settings.wal_frames.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-append".into())
            .spawn(move || run(conn, &inbox, &dirty, &wal_frames))
            .map_err(|source| StorageError::Thread {
                name: "sqlite-append",
                source,
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends `updates` in one transaction and returns each one's sequence number, in order.
    pub(super) async fn append(
        &self,
        updates: &[NewUpdate<'_>],
        now: i64,
    ) -> Result<Vec<Seq>, StorageError> {
        let counts = count_per_board(updates);
        let boards: Vec<(BoardId, i64)> = counts.iter().map(|(b, n)| ((*b).clone(), *n)).collect();
        let index: HashMap<&BoardId, usize> = counts
            .iter()
            .enumerate()
            .map(|(i, (b, _))| (*b, i))
            .collect();
        let mut data = Vec::with_capacity(updates.iter().map(|u| u.data.len()).sum());
        let rows = updates
            .iter()
            .map(|u| {
                data.extend_from_slice(u.data);
                // `counts` names every board of `updates`, so the lookup always succeeds.
                let board = index.get(u.board).copied().unwrap_or(0);
                (board, data.len())
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            boards,
            rows,
            data,
            now,
            reply,
        };
        let sent = match &*self.jobs.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StorageError::Closed);
        }
        match answer.await {
            Ok(Ok(seqs)) => Ok(seqs),
            Ok(Err(Failure::MissingBoard(i))) => {
                Err(StorageError::BoardNotFound(counts[i].0.clone()))
            }
            Ok(Err(Failure::Sqlite(e))) => Err(StorageError::sqlite("append")(e)),
            // The thread dropped the job unanswered: it panicked.
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// Stops taking jobs and waits for the thread to finish the one it holds, if any.
    pub(super) async fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            // Joining blocks until the thread's current transaction ends: not on the runtime.
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the SQLite append thread panicked");
            }
        }
    }
}

fn open(settings: &Settings<'_>) -> Result<Connection, rusqlite::Error> {
    // The thread owns the connection: SQLite's own per-connection mutex is not needed.
    let conn = Connection::open_with_flags(
        settings.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(settings.busy_timeout)?;
    // The file is already in WAL mode (sqlx's writer set it, and it persists); `synchronous`
    // and the rest are per connection.
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    // Foreign keys off on this connection only: a batch's reservation finds each of
    // its boards inside the same transaction (or fails it), so checking the parent row again
    // for every inserted row would only repeat that lookup.
    conn.pragma_update(None, "foreign_keys", false)?;
    conn.pragma_update(None, "temp_store", "memory")?;
    // Checkpoints are the checkpoint thread's (`checkpoint.rs`), never a commit's; it learns the
    // WAL's length from this connection's commits (the hook is set after the pragma, which
    // replaces any hook).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.wal_hook(Some(note_wal_frames));
    conn.pragma_update(None, "journal_size_limit", settings.journal_size_limit)?;
    Ok(conn)
}

/// The thread: one job at a time until every sender is gone, then close the connection.
fn run(conn: Connection, inbox: &mpsc::Receiver<Job>, dirty: &AtomicBool, wal_frames: &AtomicI64) {
    while let Ok(job) = inbox.recv() {
        let result = write(&conn, &job);
        wal_frames.store(WAL_FRAMES.with(Cell::get), Ordering::Relaxed);
        dirty.store(true, Ordering::Release);
        // The committer may have stopped waiting (shutdown); the rows are durable either way.
        let _ = job.reply.send(result);
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite append connection failed");
    }
}

/// Writes one job in one `BEGIN IMMEDIATE` transaction; on any failure nothing is written.
/// `BEGIN` and `COMMIT` are cached statements too (rusqlite's `Transaction` would parse them
/// anew for every batch).
fn write(conn: &Connection, job: &Job) -> Result<Vec<Seq>, Failure> {
    if !conn.is_autocommit() {
        // A transaction a failed rollback left open would make every later `BEGIN` fail.
        conn.execute_batch("ROLLBACK")?;
    }
    let started = Instant::now();
    run_cached(conn, "BEGIN IMMEDIATE")?;
    let begun = started.elapsed();
    let written = write_rows(conn, job).and_then(|seqs| {
        let rows_written = started.elapsed();
        run_cached(conn, "COMMIT")?;
        report_slow(job, started.elapsed(), begun, rows_written);
        Ok(seqs)
    });
    if written.is_err() && !conn.is_autocommit() {
        // If this fails too, the next job's check above tries again before it begins.
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

/// A commit slower than this is logged (debug) with where its time went: the place to look
/// when a fan-out stalls.
const SLOW_COMMIT: Duration = Duration::from_millis(10);
/// A commit slower than this is logged as a warning: the disk, or another process holding the
/// file, is holding every board's updates back.
const VERY_SLOW_COMMIT: Duration = Duration::from_secs(1);

/// Logs a slow commit: its total time, and the time to `BEGIN` (the write lock) and to the end
/// of the inserts (what is left is `COMMIT`: the WAL write and its fsync).
fn report_slow(job: &Job, total: Duration, begun: Duration, rows_written: Duration) {
    if total < SLOW_COMMIT {
        return;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (total, begin, inserts) = (ms(total), ms(begun), ms(rows_written - begun));
    let commit = total - begin - inserts;
    let (rows, boards) = (job.rows.len(), job.boards.len());
    if total >= ms(VERY_SLOW_COMMIT) {
        tracing::warn!(
            total,
            begin,
            inserts,
            commit,
            rows,
            boards,
            "slow SQLite commit (ms)"
        );
    } else {
        tracing::debug!(
            total,
            begin,
            inserts,
            commit,
            rows,
            boards,
            "slow SQLite commit (ms)"
        );
    }
}

fn run_cached(conn: &Connection, sql: &str) -> Result<(), Failure> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(Failure::from)
}

/// Reserves each board's sequence numbers and inserts the rows, inside the open transaction.
fn write_rows(conn: &Connection, job: &Job) -> Result<Vec<Seq>, Failure> {
    let mut last_seq = conn.prepare_cached(LAST_SEQ)?;
    let mut advance = conn.prepare_cached(ADVANCE)?;
    // Per board, the seq of its next row.
    let mut next = Vec::with_capacity(job.boards.len());
    for (i, (board, n)) in job.boards.iter().enumerate() {
        let last: i64 = last_seq
            .query_row(params![board.as_str()], |row| row.get(0))
            .optional()?
            .ok_or(Failure::MissingBoard(i))?;
        advance.execute(params![board.as_str(), last + n, job.now])?;
        next.push(last + 1);
    }
    let mut insert = conn.prepare_cached(INSERT)?;
    let mut seqs = Vec::with_capacity(job.rows.len());
    let mut start = 0;
    for &(board, end) in &job.rows {
        let seq = next[board];
        next[board] += 1;
        insert.execute(params![
            job.boards[board].0.as_str(),
            seq,
            &job.data[start..end]
        ])?;
        seqs.push(seq);
        start = end;
    }
    Ok(seqs)
}
