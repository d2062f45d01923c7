//! Commit answers: releasing what became durable (broadcasts, acknowledgements, HTTP replies),
//! reading rows another writer committed between this actor's own, and failing.

use super::*;

impl BoardActor {
    pub(super) fn on_committed(&mut self, result: Result<Seq, CommitError>) {
        let Some(InFlight { mut batch, .. }) = self.in_flight.pop_front() else {
            return;
        };
        if self.failing {
            self.on_committed_while_failing(batch, result.is_ok());
            return;
        }
        match result {
            Ok(seq) => {
                self.note_rows(seq, batch.stored);
                let (seq, failed) = self.absorb_answered(&mut batch, seq);
                self.last_seq = seq;
                self.log_bytes += batch.bytes;
                self.release(batch);
                if let Some((error, later)) = failed {
                    self.fail(&error, later);
                    return;
                }
                self.dispatch();
                self.answer_waiting_if_ready();
                self.maybe_compact();
                let config = &self.shared.config.board;
                if self.last_seq - self.checkpoint_seq >= config.checkpoint_rows
                    || self.checkpoint_at.elapsed() >= config.checkpoint_interval
                {
                    self.checkpoint("checkpoint");
                }
            }
            Err(e) => self.fail(&e, batch),
        }
    }

    /// Notes that this actor's rows `last - count + 1 ..= last` were committed. Rows before
    /// them that this actor did not write (another writer's: an actor of this board that was
    /// stopping, another program on the database) are read and applied, so that the doc holds
    /// every stored row up to `last_seq`.
    pub(super) fn note_rows(&mut self, last: Seq, count: usize) {
        let first = last - count as Seq + 1;
        let expected = self.last_seq + 1;
        if first > expected {
            info!(board = %self.id, from = expected, to = first - 1, "rows another writer committed; reading them");
            let (after, before) = (expected - 1, first);
            self.gaps = Some(match self.gaps {
                Some((a, b)) => (a.min(after), b.max(before)),
                None => (after, before),
            });
            self.read_gaps();
        }
        self.last_seq = self.last_seq.max(last);
    }

    /// Starts reading the rows of the gaps found so far, unless a read runs (the next starts
    /// when it ends). Rows of this actor's own in between are read too: applying them again
    /// changes nothing.
    pub(super) fn read_gaps(&mut self) {
        if self.healing.is_some() {
            return;
        }
        if let Some((after, before)) = self.gaps.take() {
            self.healing = Some(maintenance::read_rows(
                &self.shared,
                &self.id,
                after,
                before,
            ));
        }
    }

    /// Applies rows another writer committed (durable already: they go to every peer at once).
    /// If they cannot be read, the actor stops (its connections are closed with 1011 and the
    /// board reloads from the database), rather than serve a doc that lacks stored rows.
    pub(super) fn on_healed(&mut self, result: Result<Vec<Vec<u8>>, maintenance::JobError>) {
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                warn!(board = %self.id, error = %e, "cannot read rows another writer committed; reloading the board");
                self.close_all(CloseReason {
                    code: close::INTERNAL,
                    reason: "board unavailable; reconnect",
                });
                return;
            }
        };
        for row in rows {
            if let Err(e) = self.nesting.admit(&row) {
                warn!(board = %self.id, error = %e, "a stored row nests past the limit; not applied");
                continue;
            }
            let Ok(Ok(update)) = std::panic::catch_unwind(|| Update::decode_v1(&row)) else {
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
                self.size += delta.len() as u64;
                self.broadcast(&protocol::update(&delta), None);
            }
        }
        self.release_gapped();
        self.read_gaps();
        self.answer_waiting_if_ready();
    }

    /// Stops the actor without a failed commit: closes every connection with `reason`, drops
    /// waiting reads (their callers ask again and reach a new actor), fails held-back writers.
    pub(super) fn close_all(&mut self, reason: CloseReason) {
        let held = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|f| f.batch)
            .chain([std::mem::take(&mut self.next)]);
        for batch in held {
            self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
            batch.fail(&BoardError::Gone);
        }
        self.waiting.clear();
        self.abandon(&BoardError::Gone, reason);
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
        for cmd in std::mem::take(&mut self.deferred) {
            if let BoardCmd::HttpUpdate { reply, .. } = cmd {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.deferred_bytes = 0;
        self.gapped.clear();
        if let Some((_, after)) = self.saving.take() {
            after.refuse(error);
        }
    }

    /// Moves the batches after `batch` whose commits are answered already (they were in the
    /// same group, mostly) into it, so that they are released together: each peer then gets
    /// one merged update per group, not one per batch, however many batches a burst made.
    /// Returns the last sequence number committed, and the first later batch that failed.
    pub(super) fn absorb_answered(
        &mut self,
        batch: &mut Batch,
        mut seq: Seq,
    ) -> (Seq, Option<(CommitError, Batch)>) {
        while let Some(front) = self.in_flight.front_mut() {
            let answer = match front.reply.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => break,
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(e)) => Err(CommitError::Storage(e)),
                Err(oneshot::error::TryRecvError::Closed) => Err(CommitError::Stopped),
            };
            let Some(InFlight { batch: later, .. }) = self.in_flight.pop_front() else {
                break;
            };
            match answer {
                Ok(later_seq) => {
                    self.note_rows(later_seq, later.stored);
                    seq = later_seq;
                    batch.absorb(later);
                }
                Err(e) => return (seq, Some((e, later))),
            }
        }
        (seq, None)
    }

    /// Everything in `batch` is durable: let peers see it.
    pub(super) fn release(&mut self, batch: Batch) {
        let metrics = &self.shared.metrics;
        metrics.pending_bytes.dec_by(batch.bytes as i64);
        if let Some(at) = batch.first_at {
            metrics.fanout_seconds.observe(at.elapsed().as_secs_f64());
        }
        for out in Batch::outgoing(batch.broadcasts) {
            match out {
                Outgoing::One { skip, update } => self.broadcast(&protocol::update(&update), skip),
                Outgoing::Merged(update) => self.broadcast(&protocol::update(&update), None),
            }
        }
        for (conn, count) in batch.acks {
            let Some(peer) = self.peers.get_mut(conn).filter(|p| p.wants_acks) else {
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

    /// A commit failed: nothing it held was shown to anyone. Close every connection so that
    /// clients resend on reconnect, and stop so the board reloads from the database.
    pub(super) fn fail(&mut self, error: &CommitError, batch: Batch) {
        warn!(board = %self.id, error = %error, peers = self.peers.len(), "commit failed; closing the board's connections");
        self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
        batch.fail(&BoardError::CommitFailed);
        // What was never sent to the committer is never stored: failed now. Batches still in
        // flight may yet commit: the actor waits for their answers (showing nothing more to
        // anyone) and stops only then, so that the board reloads with whatever they stored, and
        // each HTTP writer learns what really happened to its update.
        let next = std::mem::take(&mut self.next);
        self.shared.metrics.pending_bytes.dec_by(next.bytes as i64);
        next.fail(&BoardError::CommitFailed);
        // Reads waiting are dropped: their callers ask again and reach the reloaded board.
        self.waiting.clear();
        self.abandon(
            &BoardError::CommitFailed,
            CloseReason {
                code: close::INTERNAL,
                reason: "commit failed; reconnect",
            },
        );
        self.failing = true;
        self.stopped = self.in_flight.is_empty();
    }

    /// A commit answered after one failed: its HTTP writers learn the truth; nothing is shown
    /// (the connections are closed). The actor stops after the last answer.
    pub(super) fn on_committed_while_failing(&mut self, batch: Batch, committed: bool) {
        self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
        if committed {
            for waiter in batch.http {
                waiter.answer(Ok(()));
            }
        } else {
            batch.fail(&BoardError::CommitFailed);
        }
        self.stopped = self.in_flight.is_empty();
    }
}
