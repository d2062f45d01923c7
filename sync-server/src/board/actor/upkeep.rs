//! Starting automatic versions and compactions when [`Upkeep`] says they are due, from
//! durable state only (see [`super::maintenance`]), and taking their outcomes.

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
        let meta = maintenance::automatic(reason);
        self.checkpoint = Some(maintenance::save_version(
            &self.shared,
            &self.id,
            source,
            meta,
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

    /// Where durable state comes from now: the doc, if it holds exactly the stored rows up to
    /// `last_seq` (nothing in flight, no rows of another writer unread); otherwise the stored
    /// rows if the work is overdue, or nothing yet.
    fn durable_source(&self, due: Due) -> Option<Source> {
        if self.pipeline.is_quiescent() && self.pipeline.is_complete() {
            Some(Source::Doc {
                state: self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
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
