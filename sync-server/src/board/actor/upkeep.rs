//! Automatic versions and compaction, from durable state only (see [`super::maintenance`]).

use super::*;

/// A compaction due waits for a quiet moment until the log reaches this many times its
/// threshold; then it folds the stored rows.
const COMPACT_OVERDUE: i64 = 4;

impl BoardActor {
    /// Saves an automatic version (in the background) if anything changed since the last one,
    /// from durable state only. It counts as taken once it is saved.
    ///
    /// The doc's state is cheap but holds only durable data at a quiet moment (nothing in
    /// flight); the stored rows are always durable but must be read and folded. So a due
    /// checkpoint waits for a quiet moment (on a busy board they come between commits), and
    /// folds the stored rows only if none came for another `checkpoint_rows` updates (or
    /// another `checkpoint_interval`).
    pub(super) fn checkpoint(&mut self, reason: &'static str) {
        if self.last_seq <= self.checkpoint_seq || self.checkpoint.is_some() {
            return;
        }
        let config = &self.shared.config.board;
        let overdue = self.last_seq - self.checkpoint_seq >= 2 * config.checkpoint_rows
            || self.checkpoint_at.elapsed() >= 2 * config.checkpoint_interval;
        let Some(source) = self.durable_source(overdue) else {
            return;
        };
        let meta = maintenance::automatic(reason);
        self.checkpoint = Some(maintenance::save_version(
            &self.shared,
            &self.id,
            source,
            meta,
        ));
    }

    pub(super) fn on_checkpointed(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
        match result {
            Ok(info) => {
                self.checkpoint_seq = self.checkpoint_seq.max(info.covers_seq);
                self.checkpoint_at = Instant::now();
            }
            Err(e) => {
                // Tried again after another interval (or as many rows) at the latest.
                warn!(board = %self.id, error = %e, "automatic version failed");
                self.checkpoint_at = Instant::now();
            }
        }
    }

    /// Starts a background compaction once the log after the snapshot passes a threshold, from
    /// durable state only (see [`maintenance`]): at a quiet moment from the doc, or, if none
    /// came before the log reached [`COMPACT_OVERDUE`] times the threshold, from the stored
    /// rows.
    pub(super) fn maybe_compact(&mut self) {
        let config = &self.shared.config.board;
        let rows = self.last_seq - self.snapshot_seq;
        let due =
            rows >= config.compact_rows || (rows > 0 && self.log_bytes >= config.compact_bytes);
        if self.compaction.is_some() || !due || self.last_seq < self.compaction_retry_at {
            return;
        }
        let overdue = rows >= COMPACT_OVERDUE * config.compact_rows
            || self.log_bytes >= COMPACT_OVERDUE as u64 * config.compact_bytes;
        let Some(source) = self.durable_source(overdue) else {
            return;
        };
        self.compaction_bytes = self.log_bytes;
        self.compaction = Some(maintenance::compact(&self.shared, &self.id, source));
    }

    /// Where durable state comes from now: the doc, if it holds exactly the stored rows up to
    /// `last_seq` (nothing in flight, no rows of another writer unread); otherwise the stored
    /// rows if `fold` allows reading and folding them, or nothing yet.
    pub(super) fn durable_source(&self, fold: bool) -> Option<Source> {
        if self.is_quiescent() && self.is_complete() {
            Some(Source::Doc {
                state: self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
                seq: self.last_seq,
            })
        } else {
            fold.then_some(Source::Stored)
        }
    }

    pub(super) fn on_compacted(
        &mut self,
        result: Result<Option<CompactionStats>, maintenance::JobError>,
    ) {
        match result {
            Ok(Some(stats)) => {
                debug!(board = %self.id, upto = stats.snapshot_seq, rows = stats.rows_deleted, bytes = stats.snapshot_bytes, "compacted");
                self.snapshot_seq = self.snapshot_seq.max(stats.snapshot_seq);
                self.log_bytes = self.log_bytes.saturating_sub(self.compaction_bytes);
                self.size = stats.snapshot_bytes + self.log_bytes;
                self.shared.metrics.compactions.inc();
            }
            Ok(None) => {}
            Err(e) => {
                warn!(board = %self.id, error = %e, "compaction failed; retrying later");
                self.shared.metrics.error(kind::COMPACTION_FAILED);
                self.compaction_retry_at = self.last_seq + self.shared.config.board.compact_rows;
            }
        }
    }
}
