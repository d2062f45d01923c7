//! The append journal: where appends land, and how it is folded into the per-board log.
//!
//! `board_updates` is clustered by board, so a commit that carries updates for many boards
//! dirtied a page per board (164 WAL pages for one update to each of 100 boards, against 9
//! for 100 updates to one board; BENCHMARKS.md, "Many small boards in one commit"). Appends
//! now go to `board_journal`, a rowid table in arrival order without an index, whose last page
//! or two is all a commit writes.
//!
//! What that asks of the rest of the store:
//!
//! - **Sequence numbers** stay dense per board, so the append thread needs each board's last
//!   sequence without writing `boards.last_seq`: it keeps them in a [`SeqCache`] for every board
//!   with rows in the journal. A board not in the cache has no rows in the journal, so its
//!   `boards.last_seq` is right. The cache is dropped as a whole after each fold, and an entry
//!   when its board is created or deleted (under the store's write gate, so never while an
//!   append uses it). This assumes one server process per SQLite file, as the maintenance lock
//!   already does; the CLI only creates boards, which is safe.
//! - **Reads** add the board's journal rows: `load` after the folded rows, and `last_seq` and
//!   `updated_at` as the larger of the board's row and its journal rows ([`BOARD_COLUMNS`]).
//! - **Compaction** and **deletion** remove the board's journal rows too.
//! - **The fold** ([`fold`]) moves every journal row into `board_updates` and advances the
//!   boards' `last_seq` and `updated_at`, in one transaction: a page per board once per fold
//!   instead of once per commit. The append thread folds once the journal holds
//!   [`FOLD_ROWS`] rows or its oldest row is [`FOLD_AGE`] old (checked after each append),
//!   when idle, and on close.
//! - **Opening** reads the last sequence of each board with journal rows (left by a crash, or
//!   by another process on the file) into the cache ([`seed`]): a read, so opening never waits
//!   for another process's write. The thread folds them once idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::ids::{BoardId, Seq};

/// Journal rows after which the append thread folds.
pub(super) const FOLD_ROWS: u64 = 4096;
/// Age of the oldest journal row after which the append thread folds.
pub(super) const FOLD_AGE: Duration = Duration::from_millis(500);

/// A board's row as [`crate::storage::rows::BoardRow`] reads it, with `updated_at` and
/// `last_seq` raised to its newest journal row: select these `FROM boards` + [`JOURNAL_JOIN`].
pub(super) const BOARD_COLUMNS: &str = "boards.id, boards.created_at, \
     MAX(boards.updated_at, COALESCE(j.at, 0)), MAX(boards.last_seq, COALESCE(j.seq, 0))";
/// The join [`BOARD_COLUMNS`] reads the journal through (one scan of the journal).
pub(super) const JOURNAL_JOIN: &str = "LEFT JOIN (SELECT board_id, MAX(seq) AS seq, \
     MAX(at) AS at FROM board_journal GROUP BY board_id) AS j ON j.board_id = boards.id";

/// Moves the journal into `board_updates`. Rows of boards deleted since, or already covered by
/// the board's snapshot, are dropped (deletion and compaction remove them, so this is a guard).
const FOLD_ROWS_SQL: &str = "INSERT INTO board_updates (board_id, seq, data) \
     SELECT j.board_id, j.seq, j.data FROM board_journal AS j \
     JOIN boards ON boards.id = j.board_id \
     WHERE j.seq > COALESCE((SELECT seq FROM board_snapshots AS s WHERE s.board_id = j.board_id), 0) \
     ORDER BY j.board_id, j.seq";
const FOLD_BOARDS_SQL: &str = "UPDATE boards \
     SET last_seq = MAX(boards.last_seq, j.seq), updated_at = MAX(boards.updated_at, j.at) \
     FROM (SELECT board_id, MAX(seq) AS seq, MAX(at) AS at FROM board_journal GROUP BY board_id) AS j \
     WHERE boards.id = j.board_id";
const FOLD_CLEAR_SQL: &str = "DELETE FROM board_journal";

/// The last sequence number of each board with rows in the journal.
#[derive(Debug, Clone, Default)]
pub(super) struct SeqCache(Arc<Mutex<HashMap<BoardId, Seq>>>);

impl SeqCache {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<BoardId, Seq>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets `id` (created or deleted: it has no journal rows).
    pub(super) fn forget(&self, id: &BoardId) {
        self.lock().remove(id);
    }
}

/// When the append thread folds: counts what was appended since the last fold.
#[derive(Debug, Default)]
pub(super) struct FoldClock {
    rows: u64,
    oldest: Option<Instant>,
}

impl FoldClock {
    /// Counts `rows` appended now.
    pub(super) fn appended(&mut self, rows: u64) {
        self.rows += rows;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Whether the journal is due a fold.
    pub(super) fn due(&self) -> bool {
        self.rows >= FOLD_ROWS || self.oldest.is_some_and(|t| t.elapsed() >= FOLD_AGE)
    }

    /// Whether anything was appended since the last fold.
    pub(super) fn pending(&self) -> bool {
        self.rows > 0
    }
}

/// Fills `cache` with the last sequence of every board with journal rows, and counts them on
/// `clock`. Returns the rows found.
pub(super) fn seed(
    conn: &Connection,
    cache: &SeqCache,
    clock: &mut FoldClock,
) -> rusqlite::Result<u64> {
    let mut rows = 0;
    let mut seeded = HashMap::new();
    let mut statement =
        conn.prepare("SELECT board_id, MAX(seq), COUNT(*) FROM board_journal GROUP BY board_id")?;
    let mut found = statement.query([])?;
    while let Some(row) = found.next()? {
        let board: String = row.get(0)?;
        let count: i64 = row.get(2)?;
        // An id the server could not have written is left to the fold (which drops rows of
        // boards that do not exist) rather than failing the open.
        if let Ok(id) = BoardId::parse(&board) {
            seeded.insert(id, row.get(1)?);
        }
        rows += u64::try_from(count).unwrap_or(0);
    }
    if rows > 0 {
        clock.appended(rows);
    }
    *cache.lock() = seeded;
    Ok(rows)
}

/// Folds the whole journal in one transaction on `conn` (the append thread's connection, or
/// any writer at open): then empties `cache` and resets `clock`. Returns the rows moved. On
/// failure nothing changed and the journal is folded next time.
pub(super) fn fold(
    conn: &Connection,
    cache: &SeqCache,
    clock: &mut FoldClock,
) -> rusqlite::Result<usize> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let moved = (|| {
        let moved = conn.prepare_cached(FOLD_ROWS_SQL)?.execute([])?;
        conn.prepare_cached(FOLD_BOARDS_SQL)?.execute([])?;
        conn.prepare_cached(FOLD_CLEAR_SQL)?.execute([])?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(moved)
    })();
    match moved {
        Ok(moved) => {
            cache.lock().clear();
            *clock = FoldClock::default();
            Ok(moved)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}
