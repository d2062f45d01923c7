//! Automatic versions and compaction, from durable state only (see [`super::maintenance`]).

use super::*;

impl BoardActor {
    /// Saves an automatic version now (in the background) if anything changed since the last
    /// one, from durable state only: the doc if it holds nothing undurable, otherwise the
    /// stored rows. It counts as taken once it is saved.
    pub(super) fn checkpoint(&mut self, reason: &'static str) {
        if self.last_seq <= self.checkpoint_seq || self.checkpoint.is_some() {
            return;
        }
        let source = self.durable_source();
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
    /// durable state only (see [`maintenance`]).
    pub(super) fn maybe_compact(&mut self) {
        let config = &self.shared.config.board;
        let rows = self.last_seq - self.snapshot_seq;
        let due =
            rows >= config.compact_rows || (rows > 0 && self.log_bytes >= config.compact_bytes);
        if self.compaction.is_some() || !due || self.last_seq < self.compaction_retry_at {
            return;
        }
        self.compaction_bytes = self.log_bytes;
        let source = self.durable_source();
        self.compaction = Some(maintenance::compact(&self.shared, &self.id, source));
    }

    /// Where durable state comes from now: the doc, if it holds exactly the stored rows up to
    /// `last_seq` (nothing in flight, no rows of another writer unread), else the stored rows.
    pub(super) fn durable_source(&self) -> Source {
        if self.is_quiescent() && self.is_complete() {
            Source::Doc {
                state: self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
                seq: self.last_seq,
            }
        } else {
            Source::Stored
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
