//! Truncating the WAL once the store is idle.
//!
//! SQLite's automatic checkpoints (every `wal_autocheckpoint` pages) copy the WAL into the
//! database file but never shrink the WAL file, so a burst of writes leaves a large `-wal`
//! behind for good. `journal_size_limit` trims it when a later writer restarts the log; and when
//! no append has come for a while ([`StorageOptions::checkpoint_idle`]), the append thread runs
//! `PRAGMA wal_checkpoint(TRUNCATE)`, which empties it.
//!
//! The checkpoint runs only if something was written since the last one, only while no write
//! holds the store's write gate (it takes the gate with `try_lock`: a write in progress means
//! the store is not idle), and waits at most [`CHECKPOINT_BUSY_TIMEOUT`] for readers: if they
//! are still in the way it stops without truncating and tries again after the next idle period.
//! Appends that come meanwhile wait for the gate, so for one checkpoint of a WAL that
//! autocheckpointing keeps small: milliseconds.
//!
//! [`StorageOptions::checkpoint_idle`]: crate::storage::StorageOptions::checkpoint_idle

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Mutex;

/// The most the idle checkpoint waits for readers to leave the WAL's old frames.
pub(super) const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// What the append thread needs to checkpoint when idle.
#[derive(Debug, Clone)]
pub(super) struct IdleCheckpoint {
    /// How long without appends counts as idle.
    pub(super) after: Duration,
    /// Set by every write (either connection); cleared by a checkpoint that truncated the WAL.
    pub(super) dirty: Arc<AtomicBool>,
    /// The store's write gate.
    pub(super) gate: Arc<Mutex<()>>,
    /// The connection's usual busy timeout, restored after the checkpoint.
    pub(super) busy_timeout: Duration,
}

impl IdleCheckpoint {
    /// Checkpoints and truncates the WAL through `conn` if anything was written since the last
    /// time and no write is in progress. Called on the append thread when no append came for
    /// [`IdleCheckpoint::after`].
    pub(super) fn run(&self, conn: &Connection) {
        if !self.dirty.load(Ordering::Acquire) {
            return;
        }
        let Ok(_gate) = self.gate.try_lock() else {
            return;
        };
        // Cleared before the checkpoint: no write of this process can start while the gate
        // is held, and one that starts after sets it again.
        self.dirty.store(false, Ordering::Release);
        match self.truncate(conn) {
            Ok(true) => tracing::debug!("idle: WAL checkpointed and truncated"),
            Ok(false) => {
                tracing::debug!("idle: WAL checkpoint stopped by readers; will try again");
                self.dirty.store(true, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(error = %e, "idle WAL checkpoint failed");
                self.dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Runs `wal_checkpoint(TRUNCATE)` with a short busy timeout; `Ok(true)` if it completed
    /// (the WAL is empty).
    fn truncate(&self, conn: &Connection) -> rusqlite::Result<bool> {
        conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT)?;
        // One row: (busy, frames in the log, frames checkpointed); busy is 1 if the checkpoint
        // could not finish.
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        });
        conn.busy_timeout(self.busy_timeout)?;
        Ok(busy? == 0)
    }
}
