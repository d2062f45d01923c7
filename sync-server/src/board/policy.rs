//! When a board's background upkeep is due, and how large a board may grow: pure decisions
//! over counters, no I/O. The actor feeds them what happened and starts the work they ask for
//! (see [`super::maintenance`]).

use tokio::time::Instant;

use super::BoardConfig;
use crate::ids::Seq;
use crate::storage::CompactionStats;

/// A compaction due waits for a quiet moment until the log reaches this many times its
/// threshold; then it folds the stored rows.
const COMPACT_OVERDUE: i64 = 4;
/// An automatic version due waits for a quiet moment until this many times its interval (or
/// rows) have passed; then it folds the stored rows.
const CHECKPOINT_OVERDUE: i64 = 2;

/// Where upkeep that is due may take durable state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// From the doc, at a quiet moment (nothing in flight, no rows unread) only.
    Quiet,
    /// Overdue: from the doc at a quiet moment, or else by folding the stored rows.
    Overdue,
}

/// A board's log since its snapshot and its automatic versions.
#[derive(Debug)]
pub(super) struct Upkeep {
    snapshot_seq: Seq,
    /// Log bytes appended since the snapshot (approximate across restarts: counted on load).
    log_bytes: u64,
    /// `log_bytes` when the running compaction started, if one runs.
    compacting: Option<u64>,
    /// Don't try compacting again before the log reaches this sequence (after a failure).
    compaction_retry_at: Seq,
    /// The sequence the newest saved automatic version covers.
    checkpoint_seq: Seq,
    /// When the newest automatic version was saved (or the board loaded, or a save failed).
    checkpoint_at: Instant,
    checkpointing: bool,
}

impl Upkeep {
    pub(super) fn new(
        snapshot_seq: Seq,
        log_bytes: u64,
        checkpoint_seq: Seq,
        now: Instant,
    ) -> Self {
        Self {
            snapshot_seq,
            log_bytes,
            compacting: None,
            compaction_retry_at: 0,
            checkpoint_seq,
            checkpoint_at: now,
            checkpointing: false,
        }
    }

    /// `bytes` more were appended to the log.
    pub(super) fn appended(&mut self, bytes: u64) {
        self.log_bytes += bytes;
    }

    #[cfg(test)]
    fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    // ----- compaction -----

    /// Whether a compaction should start now, the log being at `last_seq`: once the log after
    /// the snapshot passes a threshold of rows or bytes, unless one runs or the last failed
    /// too recently. Bytes count only where there are two pieces to fold (a snapshot and a
    /// row, or two rows): a board that is one row and nothing else (an import) is as compact
    /// as it gets, and rewriting it would only hold its state twice more in memory while it
    /// loads (BENCHMARKS.md, large board).
    pub(super) fn compaction_due(&self, last_seq: Seq, config: &BoardConfig) -> Option<Due> {
        let rows = last_seq - self.snapshot_seq;
        let pieces = rows + Seq::from(self.snapshot_seq > 0);
        let due =
            rows >= config.compact_rows || (pieces >= 2 && self.log_bytes >= config.compact_bytes);
        if self.compacting.is_some() || !due || last_seq < self.compaction_retry_at {
            return None;
        }
        let overdue = rows >= COMPACT_OVERDUE * config.compact_rows
            || self.log_bytes >= COMPACT_OVERDUE as u64 * config.compact_bytes;
        Some(if overdue { Due::Overdue } else { Due::Quiet })
    }

    pub(super) fn compaction_started(&mut self) {
        self.compacting = Some(self.log_bytes);
    }

    #[cfg(test)]
    fn is_compacting(&self) -> bool {
        self.compacting.is_some()
    }

    /// A compaction ended; returns the board's new size if it folded anything (the snapshot
    /// plus the log appended since it started).
    pub(super) fn compacted(&mut self, stats: Option<&CompactionStats>) -> Option<u64> {
        let started_at = self.compacting.take().unwrap_or(0);
        let stats = stats?;
        self.snapshot_seq = self.snapshot_seq.max(stats.snapshot_seq);
        self.log_bytes = self.log_bytes.saturating_sub(started_at);
        Some(stats.snapshot_bytes + self.log_bytes)
    }

    /// A compaction failed: tried again once as many rows as its threshold were appended.
    pub(super) fn compaction_failed(&mut self, last_seq: Seq, config: &BoardConfig) {
        self.compacting = None;
        self.compaction_retry_at = last_seq + config.compact_rows;
    }

    /// A compaction was skipped (another server holds the board's maintenance lock, and is
    /// likely compacting it): tried again, like after a failure, once as many rows as its
    /// threshold were appended.
    pub(super) fn compaction_skipped(&mut self, last_seq: Seq, config: &BoardConfig) {
        self.compaction_failed(last_seq, config);
    }

    // ----- automatic versions -----

    /// Whether an automatic version is due after a commit: `checkpoint_rows` since the last
    /// one, or `checkpoint_interval`.
    pub(super) fn checkpoint_wanted(
        &self,
        last_seq: Seq,
        now: Instant,
        config: &BoardConfig,
    ) -> bool {
        last_seq - self.checkpoint_seq >= config.checkpoint_rows
            || now.duration_since(self.checkpoint_at) >= config.checkpoint_interval
    }

    /// Whether an automatic version should be saved now (asked for after a commit or on
    /// eviction): only if anything changed since the last one and none is being saved.
    pub(super) fn checkpoint_due(
        &self,
        last_seq: Seq,
        now: Instant,
        config: &BoardConfig,
    ) -> Option<Due> {
        if last_seq <= self.checkpoint_seq || self.checkpointing {
            return None;
        }
        let overdue = last_seq - self.checkpoint_seq >= CHECKPOINT_OVERDUE * config.checkpoint_rows
            || now.duration_since(self.checkpoint_at)
                >= config.checkpoint_interval * CHECKPOINT_OVERDUE as u32;
        Some(if overdue { Due::Overdue } else { Due::Quiet })
    }

    /// The sequence the newest automatic version this board knows of covers.
    pub(super) fn checkpoint_seq(&self) -> Seq {
        self.checkpoint_seq
    }

    pub(super) fn checkpoint_started(&mut self) {
        self.checkpointing = true;
    }

    /// An automatic version covering `covers_seq` was saved (`Some`) or failed (`None`: tried
    /// again after another interval, or as many rows, at the latest).
    pub(super) fn checkpointed(&mut self, covers_seq: Option<Seq>, now: Instant) {
        self.checkpointing = false;
        if let Some(seq) = covers_seq {
            self.checkpoint_seq = self.checkpoint_seq.max(seq);
        }
        self.checkpoint_at = now;
    }
}

/// A board's size against its limit: the encoded state at load (or at the last compaction)
/// plus every update stored since. One rule: the board holds at most `limit` bytes (0: no
/// limit).
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    bytes: u64,
    limit: u64,
}

impl Size {
    pub(super) fn new(bytes: u64, limit: u64) -> Self {
        Self { bytes, limit }
    }

    /// Whether `len` more bytes fit. An edit whose size is not known before it runs (the
    /// assistant's) asks whether one more byte fits.
    pub(super) fn fits(&self, len: u64) -> bool {
        self.limit == 0 || self.bytes.saturating_add(len) <= self.limit
    }

    pub(super) fn grow(&mut self, len: u64) {
        self.bytes += len;
    }

    pub(super) fn set(&mut self, bytes: u64) {
        self.bytes = bytes;
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> BoardConfig {
        BoardConfig {
            compact_rows: 10,
            compact_bytes: 1000,
            checkpoint_rows: 100,
            checkpoint_interval: Duration::from_secs(60),
            ..BoardConfig::default()
        }
    }

    #[test]
    fn compaction_is_due_at_its_threshold_overdue_at_four_times_and_waits_after_a_failure() {
        let c = config();
        let mut u = Upkeep::new(0, 0, 0, Instant::now());
        assert_eq!(u.compaction_due(9, &c), None);
        assert_eq!(u.compaction_due(10, &c), Some(Due::Quiet));
        u.appended(1000);
        assert_eq!(
            u.compaction_due(1, &c),
            None,
            "one row alone: nothing to fold"
        );
        assert_eq!(u.compaction_due(2, &c), Some(Due::Quiet), "bytes count too");
        let after_snapshot = Upkeep::new(5, 1000, 0, Instant::now());
        assert_eq!(
            after_snapshot.compaction_due(6, &c),
            Some(Due::Quiet),
            "a snapshot and a row"
        );
        assert_eq!(u.compaction_due(40, &c), Some(Due::Overdue));
        u.compaction_started();
        assert_eq!(u.compaction_due(40, &c), None, "one at a time");
        u.compaction_failed(40, &c);
        assert_eq!(
            u.compaction_due(49, &c),
            None,
            "not again before the retry point"
        );
        assert_eq!(u.compaction_due(50, &c), Some(Due::Overdue));
    }

    #[test]
    fn a_compaction_sets_the_size_to_its_snapshot_and_the_log_appended_since() {
        let c = config();
        let mut u = Upkeep::new(0, 0, 0, Instant::now());
        u.appended(500);
        u.compaction_started();
        u.appended(200);
        let stats = CompactionStats {
            snapshot_seq: 12,
            rows_deleted: 12,
            snapshot_bytes: 300,
        };
        assert_eq!(u.compacted(Some(&stats)), Some(500));
        assert_eq!(u.log_bytes(), 200);
        assert_eq!(u.compaction_due(13, &c), None, "one row since the snapshot");
        u.compaction_started();
        assert_eq!(u.compacted(None), None, "nothing to fold changes nothing");
        assert!(!u.is_compacting());
    }

    #[test]
    fn automatic_versions_follow_rows_and_time_and_only_when_something_changed() {
        let c = config();
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut u = Upkeep::new(0, 0, 5, start);
        assert_eq!(u.checkpoint_due(5, start, &c), None, "nothing new");
        assert!(!u.checkpoint_wanted(50, start, &c));
        assert!(u.checkpoint_wanted(105, start, &c));
        assert_eq!(u.checkpoint_due(6, start, &c), Some(Due::Quiet));
        assert_eq!(u.checkpoint_due(205, start, &c), Some(Due::Overdue));
        assert!(!u.checkpoint_wanted(6, at(59), &c));
        assert!(u.checkpoint_wanted(6, at(60), &c));
        assert_eq!(u.checkpoint_due(6, at(119), &c), Some(Due::Quiet));
        assert_eq!(u.checkpoint_due(6, at(120), &c), Some(Due::Overdue));
        u.checkpoint_started();
        assert_eq!(u.checkpoint_due(6, at(120), &c), None, "one at a time");
        u.checkpointed(Some(6), at(120));
        assert_eq!(u.checkpoint_due(6, at(120), &c), None);
        assert!(!u.checkpoint_wanted(6, at(179), &c));
        // A failure counts as taken for the interval.
        u.checkpoint_started();
        u.checkpointed(None, at(200));
        assert_eq!(u.checkpoint_due(7, at(200), &c), Some(Due::Quiet));
        assert!(!u.checkpoint_wanted(7, at(259), &c));
        assert!(u.checkpoint_wanted(7, at(260), &c));
    }

    #[test]
    fn one_size_rule_for_updates_and_edits() {
        let mut size = Size::new(90, 100);
        assert!(size.fits(10));
        assert!(!size.fits(11));
        size.grow(10);
        assert!(!size.fits(1), "full: an edit of unknown size is refused");
        assert!(Size::new(u64::MAX, 0).fits(u64::MAX), "0 is no limit");
    }
}
