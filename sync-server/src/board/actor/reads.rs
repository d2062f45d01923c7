//! Reads served from durable state, the updates held back while they wait, and versions
//! saved with every change held back.

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
    /// Holds an update back until the reads before it are answered. What may wait is bounded
    /// in bytes (`max_deferred_bytes`); past it, an update is refused (a WebSocket client is
    /// closed with 1013 and resends on reconnect; an HTTP writer gets 503).
    pub(super) fn defer(&mut self, cmd: BoardCmd) {
        let bytes = update_bytes(&cmd);
        let max = self.shared.config.board.max_deferred_bytes;
        if !self.deferred.is_empty() && self.deferred_bytes + bytes > max {
            self.shared.metrics.error(kind::BOARD_BUSY);
            match cmd {
                BoardCmd::Update { conn, .. } => {
                    info!(board = %self.id, conn, "closing a connection: too many updates wait for this board");
                    self.close_peer(conn, close::TOO_SLOW, "board busy; reconnect");
                }
                BoardCmd::HttpUpdate { reply, .. } => {
                    let _ = reply.send(Err(BoardError::Busy));
                }
                _ => {}
            }
            return;
        }
        self.deferred_bytes += bytes;
        self.deferred.push_back(cmd);
    }

    /// Answers a read now if the doc holds only durable data, or makes it wait. A connection's
    /// repeated sync step 1 waits once; other reads wait up to `max_waiting_reads`.
    pub(super) fn read(&mut self, read: Read) {
        if let Read::SyncStep1 { conn, sv } = &read {
            let waiting = self.waiting.iter_mut().find_map(|r| match r {
                Read::SyncStep1 { conn: c, sv } if c == conn => Some(sv),
                _ => None,
            });
            if let Some(earlier) = waiting {
                *earlier = sv.clone();
                return;
            }
        }
        if self.can_answer() {
            self.answer(read);
            return;
        }
        let is_step1 = matches!(read, Read::SyncStep1 { .. });
        let others = self
            .waiting
            .iter()
            .filter(|r| !matches!(r, Read::SyncStep1 { .. }))
            .count();
        if !is_step1 && others >= self.shared.config.board.max_waiting_reads {
            self.shared.metrics.error(kind::BOARD_BUSY);
            refuse(read, &BoardError::Busy);
            return;
        }
        self.waiting.push(read);
    }

    /// [`Self::answer_waiting`], if anything waits and the doc can answer now.
    pub(super) fn answer_waiting_if_ready(&mut self) {
        if self.can_answer() && !(self.waiting.is_empty() && self.deferred.is_empty()) {
            self.answer_waiting();
        }
    }

    /// Serves reads that waited for durable state, then the updates held back meanwhile. An
    /// edit or a version save among the reads makes the reads after it wait again.
    pub(super) fn answer_waiting(&mut self) {
        let mut reads = std::mem::take(&mut self.waiting).into_iter();
        while let Some(read) = reads.next() {
            if !self.can_answer() {
                self.waiting.push(read);
                self.waiting.extend(reads);
                return;
            }
            self.answer(read);
        }
        self.deferred_bytes = 0;
        for cmd in std::mem::take(&mut self.deferred) {
            self.handle(cmd);
        }
    }

    pub(super) fn answer(&mut self, read: Read) {
        match read {
            Read::SyncStep1 { conn, sv } => {
                // A step 2 this connection has not taken yet answers this request too: the
                // updates queued after it bring the rest.
                if self
                    .peers
                    .get(conn)
                    .is_some_and(|p| p.link.sync_reply_waiting())
                {
                    return;
                }
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                let undelivered = self.peers.send_sync_reply(
                    conn,
                    protocol::sync_step2(update),
                    &self.shared.metrics,
                );
                self.settle(undelivered);
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
        let state = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let source = Source::Doc {
            state,
            seq: self.last_seq,
        };
        let job = maintenance::save_version(&self.shared, &self.id, source, meta);
        self.saving = Some((job, after));
    }

    pub(super) fn on_saved(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
        let Some((_, after)) = self.saving.take() else {
            return;
        };
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
        self.answer_waiting_if_ready();
    }
}

impl AfterSave {
    /// Answers the caller that waited for the save with `error`.
    pub(super) fn refuse(self, error: &BoardError) {
        match self {
            AfterSave::Reply(reply) => {
                let _ = reply.send(Err(error.clone()));
            }
            AfterSave::Restore { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
