//! Checkpointing the WAL on a thread of its own, off the commit path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the WAL past
//! `wal_autocheckpoint` pages: that commit, and every append queued behind it, waits while the
//! WAL is copied into the database file and the file is synced. Under load that was a stall of
//! milliseconds every few hundred commits. So the store's writers turn automatic checkpoints
//! off, and this thread, with a connection of its own, does them:
//!
//! - **Once the WAL holds [`RESTART_FRAMES`] frames** (the append thread reports the length
//!   its commits leave, from SQLite's WAL hook; the thread looks every [`CHECK_EVERY`]): a
//!   `PASSIVE` checkpoint, which copies the WAL beside the writers (neither waits for the
//!   other); more while each pass still finds much to copy (what was written during the last;
//!   at most [`CATCH_UP_PASSES`]); then a last pass with the store's write gate held: only what
//!   was written during the one before, so a millisecond or so with appends held. A writer
//!   starts the WAL from the beginning again only if it finds the whole WAL copied, which
//!   under steady appends a checkpoint beside them may never leave; after the last pass, the
//!   next writer does. As often as SQLite's automatic checkpoint, but beside the commits.
//! - **Once idle** (no write for [`StorageOptions::checkpoint_idle`]): `TRUNCATE`, which also
//!   empties the WAL file (a burst would otherwise leave a large `-wal` behind for good), only
//!   while no write holds the gate (`try_lock`), waiting at most [`CHECKPOINT_BUSY_TIMEOUT`]
//!   for readers; if they are in the way it tries again after the next idle period.
//!
//! [`StorageOptions::checkpoint_idle`]: crate::storage::StorageOptions::checkpoint_idle

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Mutex;

use crate::storage::StorageError;

/// How often the thread looks at the WAL's length.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(50);
/// WAL frames (pages) after which the thread checkpoints and restarts the WAL: SQLite's
/// default `wal_autocheckpoint`, 4 MiB of 4 KiB pages.
pub(super) const RESTART_FRAMES: i64 = 1000;
/// Passes beside the writers, at most, before the one with the write gate held.
pub(super) const CATCH_UP_PASSES: usize = 4;
/// A pass that copied fewer frames than this has caught up with the writers.
const CAUGHT_UP_FRAMES: i64 = 64;
/// The most the idle checkpoint waits for readers to leave the WAL's old frames.
pub(super) const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What the thread needs from the store.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// How long without writes counts as idle.
    pub(super) idle_after: Duration,
    /// Set by every write (any connection of the store); cleared by the thread when it looks.
    pub(super) dirty: Arc<AtomicBool>,
    /// Frames in the WAL after the last append (the append thread's WAL hook).
    pub(super) wal_frames: Arc<AtomicI64>,
    /// The store's write gate.
    pub(super) gate: Arc<Mutex<()>>,
    /// The usual busy timeout.
    pub(super) busy_timeout: Duration,
}

/// The handle to the checkpoint thread.
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// Dropped to stop the thread.
    stop: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Opens the thread's connection to the database at `path` (in WAL mode already) and
    /// starts it.
    pub(super) fn start(path: &Path, settings: Settings) -> Result<Self, StorageError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.busy_timeout(settings.busy_timeout)?;
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            Ok(conn)
        })
        .map_err(StorageError::sqlite("open"))?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped, &settings))
            .map_err(|source| StorageError::Thread {
                name: "sqlite-checkpoint",
                source,
            })?;
        Ok(Self {
            stop: std::sync::Mutex::new(Some(stop)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread and waits for the checkpoint it runs, if any.
    pub(super) async fn close(&self) {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the SQLite checkpoint thread panicked");
            }
        }
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>, settings: &Settings) {
    // Whatever WAL an earlier run left is truncated once idle.
    let mut untruncated = true;
    let mut last_write = Instant::now();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECK_EVERY) {
        if settings.dirty.swap(false, Ordering::AcqRel) {
            last_write = Instant::now();
            untruncated = true;
            if settings.wal_frames.load(Ordering::Relaxed) >= RESTART_FRAMES {
                passive(conn, settings);
            }
        } else if untruncated && last_write.elapsed() >= settings.idle_after {
            untruncated = !truncate_if_idle(conn, settings);
        }
    }
}

/// A `PASSIVE` checkpoint, more until one catches up with the writers, and a last one with the
/// write gate held so the WAL restarts.
fn passive(conn: &Connection, settings: &Settings) {
    if let Err(e) = restart_if_long(conn, settings) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}

fn restart_if_long(conn: &Connection, settings: &Settings) -> rusqlite::Result<()> {
    let started = Instant::now();
    let mut last = checkpoint(conn, "PASSIVE")?;
    for _ in 0..CATCH_UP_PASSES {
        let next = checkpoint(conn, "PASSIVE")?;
        let copied = next.copied - last.copied;
        last = next;
        if copied < CAUGHT_UP_FRAMES {
            break;
        }
    }
    let gated = Instant::now();
    let gate = settings.gate.blocking_lock();
    let held = Instant::now();
    checkpoint(conn, "PASSIVE")?;
    drop(gate);
    // Until the next append reports the restarted WAL's length.
    settings.wal_frames.store(0, Ordering::Relaxed);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    tracing::debug!(
        beside = ms(gated - started),
        gate_wait = ms(held - gated),
        gate_held = ms(held.elapsed()),
        frames = last.copied,
        "WAL checkpointed and restarted (ms)"
    );
    Ok(())
}

/// Checkpoints and truncates the WAL if no write is in progress; whether it did.
fn truncate_if_idle(conn: &Connection, settings: &Settings) -> bool {
    let Ok(_gate) = settings.gate.try_lock() else {
        return false;
    };
    let truncated = conn
        .busy_timeout(CHECKPOINT_BUSY_TIMEOUT)
        .and_then(|()| checkpoint(conn, "TRUNCATE"))
        .map(|done| !done.busy);
    if let Err(e) = conn.busy_timeout(settings.busy_timeout) {
        tracing::warn!(error = %e, "restoring the checkpoint connection's busy timeout failed");
    }
    match truncated {
        Ok(true) => {
            tracing::debug!("idle: WAL checkpointed and truncated");
            true
        }
        Ok(false) => {
            tracing::debug!("idle: WAL checkpoint stopped by readers; will try again");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "idle WAL checkpoint failed");
            false
        }
    }
}

/// What a checkpoint reports.
struct Checkpointed {
    /// It was stopped short (by readers or writers in the way).
    busy: bool,
    /// Frames of the WAL copied into the database file (by this checkpoint or earlier ones;
    /// the row's second column, frames in the WAL, is not needed).
    copied: i64,
}

/// Runs `PRAGMA wal_checkpoint(mode)`.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok(Checkpointed {
            busy: row.get::<_, i64>(0)? != 0,
            copied: row.get(2)?,
        })
    })
}
