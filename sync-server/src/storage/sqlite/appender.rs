//! The SQLite append path: one thread of its own holding one rusqlite connection.
//!
//! Appends are the server's hot path (every update of every board is one, grouped by the
//! committer). sqlx runs each SQLite connection on a worker thread of its own too, but sends
//! every statement there over a channel and every result row back over another, waking the
//! async side for each; at 4,000 updates/s that plumbing cost as much CPU as SQLite's own work.
//! Here a batch crosses to the thread once, is written with cached prepared statements (the
//! update bytes bound as blobs, no text encoding), and one reply comes back.
//!
//! Rows go to the append journal, not to the per-board log: see `journal.rs`, which this thread
//! also folds (after an append once due, when idle, at start and at close).
//!
//! The thread's connection is a second writer on the file beside sqlx's writer pool. The store
//! serialises appends and the pool's writes in process (its write gate), so neither waits in
//! SQLite's busy handler for the other. The one exception is a fold, which runs after an
//! append's reply without the gate (taking it from this thread could deadlock with an append
//! that holds it and waits for this thread): a pool write that starts meanwhile waits out the
//! fold in the busy handler, a millisecond or two. Another process on the same file is waited
//! out by the busy timeout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::journal::{self, FoldClock, SeqCache};
use crate::ids::{BoardId, Seq};
use crate::storage::{NewUpdate, StorageError, count_per_board};

/// Board `?1`'s `last_seq`; no row if the board does not exist. Read for a board the
/// [`SeqCache`] does not hold: such a board has no journal rows, so this is its last sequence.
const LAST_SEQ: &str = "SELECT last_seq FROM boards WHERE id = ?1";
const INSERT: &str = "INSERT INTO board_journal (board_id, seq, data, at) VALUES (?1, ?2, ?3, ?4)";

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
    /// The boards with journal rows and their last sequence numbers, shared with the store.
    pub(super) seqs: SeqCache,
}

/// The handle to the append thread.
#[derive(Debug)]
pub(super) struct Appender {
    /// `None` once closed.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Appender {
    /// Opens the connection (the schema must exist), reads what the journal holds (rows an
    /// earlier run left, folded once the thread is idle), and starts the thread.
    pub(super) fn start(settings: &Settings<'_>) -> Result<Self, StorageError> {
        let conn = open(settings).map_err(StorageError::sqlite("open"))?;
        let seqs = settings.seqs.clone();
        let mut clock = FoldClock::default();
        let found = journal::seed(&conn, &seqs, &mut clock)
            .map_err(StorageError::sqlite("read journal"))?;
        if found > 0 {
            tracing::info!(
                rows = found,
                "the append journal holds rows an earlier run left"
            );
        }
        let (jobs, inbox) = mpsc::channel();
        let dirty = settings.dirty.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-append".into())
            .spawn(move || run(conn, &inbox, &dirty, &seqs, clock))
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
    // Checkpoints are the checkpoint thread's (`checkpoint.rs`), never a commit's.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", settings.journal_size_limit)?;
    Ok(conn)
}

/// The thread: one job at a time until every sender is gone, then fold and close the
/// connection. The journal is folded after a job once due, and when no job came for
/// [`journal::FOLD_AGE`] while it holds anything.
fn run(
    conn: Connection,
    inbox: &mpsc::Receiver<Job>,
    dirty: &AtomicBool,
    seqs: &SeqCache,
    mut clock: FoldClock,
) {
    loop {
        let next = if clock.pending() {
            inbox.recv_timeout(journal::FOLD_AGE)
        } else {
            inbox
                .recv()
                .map_err(|mpsc::RecvError| mpsc::RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(job) => {
                let result = write(&conn, &job, seqs);
                dirty.store(true, Ordering::Release);
                if result.is_ok() {
                    clock.appended(job.rows.len() as u64);
                }
                // The committer may have stopped waiting (shutdown); the rows are durable
                // either way.
                let _ = job.reply.send(result);
                if clock.due() {
                    fold_now(&conn, seqs, &mut clock);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                fold_now(&conn, seqs, &mut clock);
                dirty.store(true, Ordering::Release);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if clock.pending() {
        fold_now(&conn, seqs, &mut clock);
        dirty.store(true, Ordering::Release);
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite append connection failed");
    }
}

/// Folds the journal, logging a failure (the rows stay in the journal, read from there, and
/// the next fold tries again).
fn fold_now(conn: &Connection, seqs: &SeqCache, clock: &mut FoldClock) {
    match journal::fold(conn, seqs, clock) {
        Ok(rows) => tracing::trace!(rows, "folded the append journal"),
        Err(e) => tracing::warn!(error = %e, "folding the append journal failed; will retry"),
    }
}

/// Writes one job in one `BEGIN IMMEDIATE` transaction; on any failure nothing is written.
/// `BEGIN` and `COMMIT` are cached statements too (rusqlite's `Transaction` would parse them
/// anew for every batch). The boards' new last sequences reach `seqs` only once committed.
fn write(conn: &Connection, job: &Job, seqs: &SeqCache) -> Result<Vec<Seq>, Failure> {
    if !conn.is_autocommit() {
        // A transaction a failed rollback left open would make every later `BEGIN` fail.
        conn.execute_batch("ROLLBACK")?;
    }
    let mut cache = seqs.lock();
    run_cached(conn, "BEGIN IMMEDIATE")?;
    let written = write_rows(conn, job, &cache).and_then(|written| {
        run_cached(conn, "COMMIT")?;
        Ok(written)
    });
    match written {
        Ok((seqs, lasts)) => {
            for ((board, _), last) in job.boards.iter().zip(lasts) {
                cache.insert(board.clone(), last);
            }
            Ok(seqs)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                // If this fails too, the next job's check above tries again before it begins.
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

fn run_cached(conn: &Connection, sql: &str) -> Result<(), Failure> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(drop)
        .map_err(Failure::from)
}

/// Finds each board's next sequence number (from `cache`, or the board's row) and inserts the
/// rows into the journal, inside the open transaction. Returns each row's sequence number and
/// each board's new last one.
fn write_rows(
    conn: &Connection,
    job: &Job,
    cache: &HashMap<BoardId, Seq>,
) -> Result<(Vec<Seq>, Vec<Seq>), Failure> {
    let mut last_seq = conn.prepare_cached(LAST_SEQ)?;
    // Per board, the seq of its next row.
    let mut next = Vec::with_capacity(job.boards.len());
    for (i, (board, _)) in job.boards.iter().enumerate() {
        let last: i64 = match cache.get(board) {
            Some(&last) => last,
            None => last_seq
                .query_row(params![board.as_str()], |row| row.get(0))
                .optional()?
                .ok_or(Failure::MissingBoard(i))?,
        };
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
            &job.data[start..end],
            job.now
        ])?;
        seqs.push(seq);
        start = end;
    }
    let lasts = next.into_iter().map(|n| n - 1).collect();
    Ok((seqs, lasts))
}
