//! Doing what the pipeline decided: submitting to the committer, releasing what became
//! durable (broadcasts, acknowledgements, HTTP replies), failing, answering reads, applying
//! held-back updates, reading rows another writer committed; and stopping.

use super::*;

impl BoardActor {
    /// Does everything the pipeline asks for now. Called after every event.
    pub(super) fn run_effects(&mut self) {
        while let Some(effect) = self.pipeline.poll() {
            match effect {
                Effect::Submit(updates) => self.submit(updates),
                Effect::Release(batch) => self.release(batch),
                Effect::Fail(batch) => {
                    self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
                    batch.fail(&BoardError::CommitFailed);
                }
                Effect::Settle(batch, stored) => {
                    self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
                    if stored {
                        for waiter in batch.http {
                            waiter.answer(Ok(()));
                        }
                    } else {
                        batch.fail(&BoardError::CommitFailed);
                    }
                }
                Effect::ReadRows { after, before } => {
                    self.shared.metrics.cluster.heals.inc();
                    debug!(board = %self.id, from = after + 1, to = before - 1, "rows another writer committed; reading them");
                    let job = maintenance::read_rows(&self.shared, &self.id, after, before);
                    self.healing = Some(job);
                }
                Effect::Answer(read) => self.answer(read),
                Effect::RefuseRead(read) => {
                    self.shared.metrics.error(kind::BOARD_BUSY);
                    read.refuse(&BoardError::Busy);
                }
                Effect::Apply(cmds) => {
                    for cmd in cmds {
                        // An update that stopped the actor (yrs panicked) leaves the rest to
                        // a new actor: HTTP writers ask again, connections are closed.
                        if self.stopped {
                            break;
                        }
                        self.apply_cmd(cmd);
                    }
                }
                Effect::RefuseUpdate(cmd) => self.refuse_busy(cmd),
                Effect::Failed { error, held } => {
                    warn!(board = %self.id, error = %error, peers = self.peers.len(), "commit failed; closing the board's connections");
                    self.refuse_held(held, &BoardError::CommitFailed);
                    let reason = Refusal::CommitFailed.close_reason();
                    self.abandon(&BoardError::CommitFailed, reason);
                }
                Effect::Stop => self.stopped = true,
            }
        }
    }

    fn submit(&mut self, updates: Vec<Vec<u8>>) {
        let (reply, rx) = oneshot::channel();
        let request = CommitRequest {
            board: self.id.clone(),
            updates,
            reply,
        };
        match self.shared.committer.submit(request) {
            Ok(()) => self.replies.push_back(rx),
            Err(_) => self.pipeline.unsubmitted(),
        }
    }

    /// The oldest commit in flight was answered: with it, every answer already in after it
    /// (they were in the same group, mostly), up to the first failure.
    pub(super) fn on_committed(&mut self, first: Result<Seq, CommitError>) {
        self.replies.pop_front();
        let mut answers = vec![first];
        while answers.last().is_some_and(Result::is_ok) {
            let Some(front) = self.replies.front_mut() else {
                break;
            };
            let answer = match front.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => break,
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(e)) => Err(CommitError::Storage(e)),
                Err(oneshot::error::TryRecvError::Closed) => Err(CommitError::Stopped),
            };
            self.replies.pop_front();
            answers.push(answer);
        }
        self.pipeline.committed(answers);
        self.run_effects();
        if self.pipeline.is_failing() {
            return;
        }
        self.maybe_compact();
        self.checkpoint_if_wanted();
    }

    /// Everything in `batch` is durable: let peers see it.
    fn release(&mut self, batch: Batch) {
        let metrics = &self.shared.metrics;
        metrics.pending_bytes.dec_by(batch.bytes as i64);
        if let Some(at) = batch.first_at {
            metrics.fanout_seconds.observe(at.elapsed().as_secs_f64());
        }
        self.upkeep.appended(batch.bytes);
        let cluster = self.shared.cluster.is_enabled();
        let mut published = Vec::new();
        for out in Batch::outgoing(batch.broadcasts) {
            let (skip, update) = match out {
                Outgoing::One { skip, update } => (skip, update),
                Outgoing::Merged(update) => (None, update),
            };
            self.broadcast(&protocol::update(&update), skip);
            if cluster {
                published.push(Bytes::from(update));
            }
        }
        // After the commit, like every broadcast: the other nodes show it to their clients.
        self.shared
            .cluster
            .publish_update(&self.id, batch.rows, published);
        for (conn, count) in batch.acks {
            let Some(peer) = self.peers.get_mut(conn).filter(|p| p.wants.acks) else {
                continue;
            };
            // Never past a message that still waits for clocks it skips; never backwards.
            let count = peer.held_from.map_or(count, |held| count.min(held - 1));
            if count > peer.acked {
                peer.acked = count;
                self.send(conn, protocol::durable_ack(count));
            }
        }
        for waiter in batch.http {
            waiter.answer(Ok(()));
        }
    }

    /// Refuses an update because too many bytes wait for this board: a WebSocket client is
    /// closed with 1013 and resends on reconnect; an HTTP writer gets 503.
    fn refuse_busy(&mut self, cmd: BoardCmd) {
        match cmd {
            BoardCmd::Update { conn, .. } => {
                info!(board = %self.id, conn, "closing a connection: too many updates wait for this board");
                self.close_peer(conn, Refusal::BoardBusy);
            }
            other => {
                Refusal::BoardBusy.count(&self.shared.metrics);
                other.refuse(&BoardError::Busy);
            }
        }
    }

    /// Answers held-back HTTP updates with `error` (a connection's are dropped with it).
    fn refuse_held(&mut self, held: Vec<BoardCmd>, error: &BoardError) {
        for cmd in held {
            if matches!(cmd, BoardCmd::HttpUpdate { .. }) {
                cmd.refuse(error);
            }
        }
    }

    /// Applies updates that are durable already (rows another writer committed, read from the
    /// database or heard from another node): what the doc learns goes to every peer at once.
    /// One that nests past the limit or does not decode is skipped (logged): it was stored
    /// by something other than this server's checks.
    pub(super) fn apply_durable<'a>(&mut self, rows: impl IntoIterator<Item = &'a [u8]>) {
        for row in rows {
            if let Err(e) = self.nesting.admit(row) {
                warn!(board = %self.id, error = %e, "a stored row nests past the limit; not applied");
                continue;
            }
            let Ok(Ok(update)) = std::panic::catch_unwind(|| Update::decode_v1(row)) else {
                warn!(board = %self.id, "a stored row does not decode; not applied");
                continue;
            };
            let delta = {
                let mut txn = self.doc.transact_mut();
                if txn.apply_update(update).is_err() {
                    continue;
                }
                txn.encode_update_v1()
            };
            if delta.as_slice() != Update::EMPTY_V1 {
                self.size.grow(delta.len() as u64);
                self.broadcast(&protocol::update(&delta), None);
            }
        }
        self.release_gapped();
    }

    /// Applies rows another writer committed (durable already: they go to every peer at once).
    /// If they cannot be read, the actor stops (its connections are closed with 1011 and the
    /// board reloads from the database), rather than serve a doc that lacks stored rows.
    pub(super) fn on_healed(&mut self, result: Result<Vec<Vec<u8>>, maintenance::JobError>) {
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                warn!(board = %self.id, error = %e, "cannot read rows another writer committed; reloading the board");
                self.close_all(Refusal::BoardUnavailable);
                return;
            }
        };
        self.shared
            .metrics
            .cluster
            .heal_rows
            .inc_by(rows.len() as u64);
        self.apply_durable(rows.iter().map(Vec::as_slice));
        self.pipeline.healed();
        // Upkeep that waited for the doc to hold every stored row may run now.
        self.maybe_compact();
        self.checkpoint_if_wanted();
    }

    /// Stops the actor without a failed commit: closes every connection with `reason`, drops
    /// waiting reads (their callers ask again and reach a new actor), fails what was not
    /// committed yet with [`BoardError::Gone`].
    pub(super) fn close_all(&mut self, refusal: Refusal) {
        for batch in self.pipeline.abort() {
            self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
            batch.fail(&BoardError::Gone);
        }
        self.replies.clear();
        self.abandon(&BoardError::Gone, refusal.close_reason());
        self.stopped = true;
    }

    /// Closes every connection with `reason` and answers with `error` whatever waits to be
    /// applied: held-back HTTP updates, a version being saved's caller. Updates waiting for
    /// clocks they skip are dropped (their clients resend them). Waiting reads are left to the
    /// caller (dropped, so callers ask again, or refused).
    pub(super) fn abandon(&mut self, error: &BoardError, reason: CloseReason) {
        for peer in self.peers.take_all() {
            peer.link.close(reason);
        }
        let held = self.pipeline.take_deferred();
        self.refuse_held(held, error);
        self.gapped.clear();
        if let Some((_, after)) = self.saving.take() {
            self.pipeline.set_saving(false);
            after.refuse(error);
        }
    }
}
