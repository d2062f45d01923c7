//! Starting automatic versions and compactions when [`Upkeep`] says they are due, from
//! durable state only (see [`super::maintenance`]), and taking their outcomes. Both run under
//! the board's maintenance lock; on a database several servers share they fold the stored
//! rows, never the doc.

use super::*;

impl BoardActor {
    /// Saves an automatic version (in the background) if anything changed since the last one.
    /// It counts as taken once it is saved.
    ///
    /// The doc's state is cheap but holds only durable data at a quiet moment (nothing in
    /// flight); the stored rows are always durable but must be read and folded. So a due
    /// checkpoint waits for a quiet moment (on a busy board they come between commits), and
    /// folds the stored rows only once overdue.
    pub(super) fn checkpoint(&mut self, reason: &'static str) {
        let config = &self.shared.config.board;
        let last_seq = self.pipeline.last_seq();
        let Some(due) = self.upkeep.checkpoint_due(last_seq, Instant::now(), config) else {
            return;
        };
        let Some(source) = self.durable_source(due) else {
            return;
        };
        self.checkpoint = Some(maintenance::checkpoint(
            &self.shared,
            &self.id,
            source,
            reason,
            self.upkeep.checkpoint_seq(),
        ));
        self.upkeep.checkpoint_started();
    }

    /// Saves an automatic version if one is wanted: `checkpoint_rows` rows or
    /// `checkpoint_interval` since the last.
    pub(super) fn checkpoint_if_wanted(&mut self) {
        let last_seq = self.pipeline.last_seq();
        let config = &self.shared.config.board;
        if self
            .upkeep
            .checkpoint_wanted(last_seq, Instant::now(), config)
        {
            self.checkpoint("checkpoint");
        }
    }

    pub(super) fn on_checkpointed(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
        match result {
            Ok(info) => {
                self.upkeep
                    .checkpointed(Some(info.covers_seq), Instant::now());
                // Rows committed while it was being saved may want the next one already.
                self.checkpoint_if_wanted();
            }
            Err(maintenance::JobError::LockHeld) => {
                // Another server is saving one: tried again after another interval (or as
                // many rows), when the one it saved is found and counts.
                debug!(board = %self.id, "automatic version skipped: another server holds the board's maintenance lock");
                self.shared.metrics.versions_skipped.inc();
                self.upkeep.checkpointed(None, Instant::now());
            }
            Err(e) => {
                // Tried again after another interval (or as many rows) at the latest.
                warn!(board = %self.id, error = %e, "automatic version failed");
                self.upkeep.checkpointed(None, Instant::now());
            }
        }
    }

    /// Starts a background compaction if one is due.
    pub(super) fn maybe_compact(&mut self) {
        let config = &self.shared.config.board;
        let Some(due) = self.upkeep.compaction_due(self.pipeline.last_seq(), config) else {
            return;
        };
        let Some(source) = self.durable_source(due) else {
            return;
        };
        self.compaction = Some(maintenance::compact(&self.shared, &self.id, source));
        self.upkeep.compaction_started();
    }

    /// Where durable state comes from now. On a database several servers share, the stored
    /// rows, always: another server may have appended rows this doc lacks, even below its
    /// sequence, and the doc cannot vouch for them. Otherwise the doc, if it holds exactly the
    /// stored rows up to `last_seq` (nothing in flight, no rows of another writer unread); or
    /// else the stored rows if the work is overdue, or nothing yet.
    fn durable_source(&mut self, due: Due) -> Option<Source> {
        if maintenance::folds_stored_rows(&self.shared) {
            Some(Source::Stored)
        } else if self.pipeline.is_quiescent() && self.pipeline.is_complete() {
            Some(Source::Doc {
                state: self.full_state.state(&self.doc),
                seq: self.pipeline.last_seq(),
            })
        } else {
            (due == Due::Overdue).then_some(Source::Stored)
        }
    }

    pub(super) fn on_compacted(
        &mut self,
        result: Result<Option<CompactionStats>, maintenance::JobError>,
    ) {
        match result {
            Ok(stats) => {
                if let Some(s) = &stats {
                    debug!(board = %self.id, upto = s.snapshot_seq, rows = s.rows_deleted, bytes = s.snapshot_bytes, "compacted");
                    self.shared.metrics.compactions.inc();
                }
                if let Some(size) = self.upkeep.compacted(stats.as_ref()) {
                    self.size.set(size);
                }
            }
            Err(maintenance::JobError::LockHeld) => {
                // Another server is compacting the board (or saving its version): tried again
                // once as many rows as the threshold were appended.
                debug!(board = %self.id, "compaction skipped: another server holds the board's maintenance lock");
                self.shared.metrics.compactions_skipped.inc();
                let config = &self.shared.config.board;
                self.upkeep
                    .compaction_skipped(self.pipeline.last_seq(), config);
            }
            Err(e) => {
                warn!(board = %self.id, error = %e, "compaction failed; retrying later");
                self.shared.metrics.error(kind::COMPACTION_FAILED);
                let config = &self.shared.config.board;
                self.upkeep
                    .compaction_failed(self.pipeline.last_seq(), config);
            }
        }
    }
}
