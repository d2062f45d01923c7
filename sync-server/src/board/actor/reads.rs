//! Reads served from durable state, and versions saved with every change held back.

use super::*;

/// What to do once a version the actor is saving is saved.
#[derive(Debug)]
pub(super) enum AfterSave {
    /// Answer the caller that asked for it.
    Reply(oneshot::Sender<Result<VersionInfo, BoardError>>),
    /// Apply the restore it precedes.
    Restore {
        target: Vec<u8>,
        from_version: bool,
        origin: String,
        reply: oneshot::Sender<Result<(RestoreReport, VersionInfo), BoardError>>,
    },
}

impl BoardActor {
    /// Answers a read: the doc holds exactly durable state now.
    pub(super) fn answer(&mut self, read: Read) {
        match read {
            Read::SyncStep1 { conn, sv, answer } => {
                // A step 2 this connection has not taken yet answers this request too: the
                // updates queued after it bring the rest.
                let waiting = self
                    .peers
                    .get(conn)
                    .is_some_and(|p| p.link.sync_reply_waiting());
                if !waiting {
                    // A client joining with nothing gets the board's shared full state.
                    let frame = if sv.is_empty() {
                        self.full_state.frame(&self.doc)
                    } else {
                        protocol::sync_step2_of(&self.doc.transact(), &sv).0
                    };
                    let undelivered = self
                        .peers
                        .send_sync_reply(conn, frame, &self.shared.metrics);
                    self.settle(undelivered);
                }
                if answer == Step1Answer::Step2AndStep1 {
                    let sv = self.doc.transact().state_vector();
                    self.send(conn, protocol::sync_step1(&sv));
                }
            }
            Read::Holds {
                update,
                held,
                reply,
            } => {
                let _ = reply.send(holds(&self.doc, &update));
                drop(held);
            }
            Read::State { reply } => {
                let state = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let _ = reply.send(Ok(state));
            }
            Read::Json { reply } => {
                let board = crdt_schema::read_board(&self.doc.transact());
                let _ = reply.send(Ok(board));
            }
            Read::Edit { edit, reply } => self.run_edit(edit, reply),
            Read::SaveVersion { meta, reply } => self.save_version(meta, AfterSave::Reply(reply)),
            Read::Restore {
                target,
                from_version,
                origin,
                before,
                reply,
            } => self.save_version(
                before,
                AfterSave::Restore {
                    target,
                    from_version,
                    origin,
                    reply,
                },
            ),
        }
    }

    /// Saves the doc's state (durable: reads are answered only then) as a version, holding
    /// every change back until it is saved; then does `after`.
    pub(super) fn save_version(&mut self, meta: VersionMeta, after: AfterSave) {
        let state = self.full_state.state(&self.doc);
        let source = Source::Doc {
            state,
            seq: self.pipeline.last_seq(),
        };
        let job = maintenance::save_version(&self.shared, &self.id, source, meta);
        self.saving = Some((job, after));
        self.pipeline.set_saving(true);
    }

    pub(super) fn on_saved(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
        let Some((_, after)) = self.saving.take() else {
            return;
        };
        self.pipeline.set_saving(false);
        match (result, after) {
            (Ok(info), AfterSave::Reply(reply)) => {
                let _ = reply.send(Ok(info));
            }
            (
                Ok(info),
                AfterSave::Restore {
                    target,
                    from_version,
                    origin,
                    reply,
                },
            ) => self.restore(&target, from_version, &origin, info, reply),
            (Err(e), after) => {
                warn!(board = %self.id, error = %e, "a version could not be saved");
                after.refuse(&BoardError::CommitFailed);
            }
        }
    }
}

/// Whether `doc` already holds everything in `update`: every block it inserts (its clocks are
/// below the doc's state vector) and every deletion it carries.
fn holds(doc: &Doc, update: &Update) -> bool {
    let txn = doc.transact();
    let sv = txn.state_vector();
    let blocks = update
        .state_vector()
        .iter()
        .all(|(client, &clock)| clock <= sv.get(client));
    if !blocks {
        return false;
    }
    let deleted = update.delete_set();
    deleted.is_empty() || deleted.diff(&txn.snapshot().delete_set).is_empty()
}

impl AfterSave {
    /// Answers the caller that waited for the save with `error`.
    pub(super) fn refuse(self, error: &BoardError) {
        match self {
            AfterSave::Reply(reply) => super::super::refuse(reply, error),
            AfterSave::Restore { reply, .. } => super::super::refuse(reply, error),
        }
    }
}
