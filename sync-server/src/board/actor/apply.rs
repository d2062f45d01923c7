//! Applying what comes in: client and HTTP updates (checked against the board's limits and
//! nesting; one that skips clocks the doc lacks waits), restores, the server's own edits; and
//! handing what the doc learned to the committer.

use super::*;

/// An update of a connection that skips clocks of a client the doc lacks (typically a
/// reconnecting client's live edit arriving before its sync step 2 answer, which carries the
/// edits before it). It waits, neither applied nor acknowledged, until the doc has those
/// clocks; it still holds its share of the connection's uncommitted-bytes budget, so what
/// waits is bounded. Dropped if its connection goes (the client resends it).
#[derive(Debug)]
pub(super) struct Gapped {
    pub(super) conn: ConnId,
    /// Its number among the connection's document messages.
    message: u64,
    incoming: Incoming,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// An update to apply: decoded, as received, and what the guard read of it.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) update: Update,
    pub(super) raw: Vec<u8>,
    pub(super) scanned: crdt_schema::guard::Scanned,
}

impl BoardActor {
    /// Applies an update to the doc and queues what must follow once it is durable. An update
    /// that skips clocks of a client the doc lacks waits first (see [`Gapped`]).
    pub(super) fn apply(
        &mut self,
        origin: Option<ConnId>,
        incoming: Incoming,
        http: Option<Waiter>,
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        // Numbered as it arrives: the client counts its messages in the order it sent them.
        let message_no = origin.and_then(|c| self.peers.get_mut(c)).map(|p| {
            p.doc_messages += 1;
            p.doc_messages
        });
        if self.skips_clocks(&incoming.update) {
            match (origin, message_no) {
                (Some(conn), Some(message)) => {
                    debug!(board = %self.id, conn, message, "an update waits for clocks it skips");
                    if let Some(peer) = self.peers.get_mut(conn) {
                        peer.held_from.get_or_insert(message);
                    }
                    self.gapped.push(Gapped {
                        conn,
                        message,
                        incoming,
                        held,
                    });
                }
                _ => {
                    if let Some(waiter) = http {
                        waiter.answer(Err(BoardError::Rejected(
                            "the update skips clocks of a client the board lacks; send the \
                             updates before it first"
                                .into(),
                        )));
                    }
                }
            }
            return;
        }
        self.integrate(origin, message_no, incoming, http, held);
        self.release_gapped();
    }

    /// Whether `update` holds a client's clocks past the doc's next one for that client. yrs
    /// 0.28 integrates such a block with a hole before it (shown by reads, missing from the
    /// state vector and from the transaction's update, so it would be shown but never stored),
    /// and panics when a later update's range spans the hole: such an update waits instead.
    pub(super) fn skips_clocks(&self, update: &Update) -> bool {
        let lower = update.state_vector_lower();
        let sv = self.doc.transact().state_vector();
        lower.iter().any(|(client, &clock)| clock > sv.get(client))
    }

    /// Applies the updates that waited for clocks they skipped, once the doc has them.
    pub(super) fn release_gapped(&mut self) {
        loop {
            let Some(at) = self
                .gapped
                .iter()
                .position(|g| !self.skips_clocks(&g.incoming.update))
            else {
                return;
            };
            let g = self.gapped.remove(at);
            let still_held = self
                .gapped
                .iter()
                .filter(|other| other.conn == g.conn)
                .map(|other| other.message)
                .min();
            if let Some(peer) = self.peers.get_mut(g.conn) {
                peer.held_from = still_held;
            }
            self.integrate(Some(g.conn), Some(g.message), g.incoming, None, g.held);
        }
    }

    /// Checks an update against the board's limits, applies it, and queues what must follow
    /// once it is durable.
    pub(super) fn integrate(
        &mut self,
        origin: Option<ConnId>,
        message_no: Option<u64>,
        incoming: Incoming,
        http: Option<Waiter>,
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let Incoming {
            update,
            raw,
            scanned,
        } = incoming;
        if !self.size.fits(raw.len() as u64) {
            let (size, limit) = (self.size.bytes(), self.size.limit());
            warn!(board = %self.id, conn = ?origin, size, update = raw.len(), limit, "update refused: the board would exceed its size limit");
            self.refuse_update(origin, Refusal::BoardTooLarge);
            if let Some(waiter) = http {
                waiter.answer(Err(BoardError::TooLarge(limit)));
            }
            return;
        }
        // Checked against the board's own nesting: the update may put items into types an
        // earlier update created.
        let checked = match self.nesting.check_scanned(&scanned) {
            Ok(checked) => checked,
            Err(e) => {
                warn!(board = %self.id, conn = ?origin, error = %e, "update refused");
                self.refuse_update(origin, Refusal::TooDeep);
                if let Some(waiter) = http {
                    waiter.answer(Err(BoardError::TooDeep(e)));
                }
                return;
            }
        };
        let metrics = &self.shared.metrics;
        metrics.updates_received.inc();
        metrics.update_bytes_received.inc_by(raw.len() as u64);
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut_with(origin.unwrap_or(0));
            let had_pending = txn.has_missing_updates();
            let result = txn.apply_update(update);
            let delta = txn.encode_update_v1();
            let pending = txn.has_missing_updates();
            (result, delta, had_pending, pending)
        }));
        let Ok((result, delta, had_pending, pending)) = applied else {
            // The doc may be half-changed: nothing of it is shown; the board reloads.
            warn!(board = %self.id, conn = ?origin, "yrs panicked applying an update; reloading the board");
            self.shared.metrics.error(kind::BAD_UPDATE);
            if let Some(waiter) = http {
                waiter.answer(Err(BoardError::Rejected(
                    "the update does not apply".into(),
                )));
            }
            self.close_all(Refusal::BoardUnavailable);
            return;
        };
        // Whatever yrs integrated is part of what was checked.
        self.nesting.record(checked);
        let changed = delta.as_slice() != Update::EMPTY_V1;
        if let Err(e) = &result {
            warn!(board = %self.id, conn = ?origin, error = %e, "update does not apply");
            self.refuse_update(origin, Refusal::UpdateRejected);
        }
        let rejected = result.is_err();
        // Store what the doc learned; if part of the update waits for missing dependencies,
        // store the update as received, since the doc keeps that part only in memory.
        let stored = if pending && !rejected {
            Some(raw)
        } else if changed {
            Some(delta.clone())
        } else {
            None
        };
        if let Some(bytes) = stored {
            self.hold(bytes);
        }
        let batch = self.pipeline.next_batch();
        batch.held.extend(held);
        if changed {
            // The sender has this content, unless it completed updates that were pending.
            let skip = if had_pending { None } else { origin };
            batch.broadcasts.push((skip, delta));
        }
        if let (Some(conn), Some(n), false) = (origin, message_no, rejected) {
            let count = batch.acks.entry(conn).or_insert(n);
            *count = (*count).max(n);
        }
        if let Some(waiter) = http {
            if rejected {
                waiter.answer(Err(BoardError::Rejected(
                    "the update does not apply".into(),
                )));
            } else {
                batch.http.push(waiter);
            }
        }
        self.pipeline.dispatch();
    }

    /// Refuses an update for `refusal`: its connection is closed with it, or, from HTTP (whose
    /// writer gets an error), it is counted under the same kind.
    fn refuse_update(&mut self, origin: Option<ConnId>, refusal: Refusal) {
        match origin {
            Some(conn) => self.close_peer(conn, refusal),
            None => {
                refusal.count(&self.shared.metrics);
            }
        }
    }

    /// Turns the board into `target`'s content as one forward change (crdt-schema's restore
    /// rules), committed and broadcast like any update. Runs right after the version `before`
    /// was saved, with nothing applied in between.
    pub(super) fn restore(
        &mut self,
        target: &[u8],
        from_version: bool,
        origin: &str,
        before: VersionInfo,
        reply: oneshot::Sender<Result<(RestoreReport, VersionInfo), BoardError>>,
    ) {
        let (result, delta) = {
            let mut txn = self.doc.transact_mut_with(origin);
            let result = if from_version {
                crdt_schema::restore::restore_from_version_v1(&mut txn, target)
            } else {
                crdt_schema::restore::restore_from_update_v1(&mut txn, target)
            };
            (result, txn.encode_update_v1())
        };
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                // Nothing was written: the target is loaded before the first write.
                let _ = reply.send(Err(BoardError::Rejected(e.to_string())));
                return;
            }
        };
        info!(board = %self.id, origin, ?report, "restore applied");
        if delta.as_slice() != Update::EMPTY_V1 {
            self.admit_own(&delta);
            self.hold(delta.clone());
            self.pipeline.next_batch().broadcasts.push((None, delta));
        }
        let waiter = Waiter::with(reply, (report, before));
        self.pipeline.next_batch().http.push(waiter);
        self.pipeline.dispatch();
    }

    /// Records the nesting of an edit the server made itself (a restore, the assistant).
    pub(super) fn admit_own(&mut self, delta: &[u8]) {
        if let Err(e) = self.nesting.admit(delta) {
            warn!(board = %self.id, error = %e, "the server's own edit nests past the limit");
        }
    }

    /// Adds `update` to what the next commit stores.
    pub(super) fn hold(&mut self, update: Vec<u8>) {
        let len = update.len() as u64;
        self.size.grow(len);
        self.shared.metrics.pending_bytes.inc_by(len as i64);
        self.pipeline.hold(update);
    }

    /// Runs a server-side peer's edit on the doc (which holds only durable data). Its update
    /// is stored and broadcast to every connection; the reply waits for durability.
    pub(super) fn run_edit(
        &mut self,
        edit: Box<dyn FnOnce(&Doc) -> ai_agent::Edited + Send>,
        reply: oneshot::Sender<Result<serde_json::Value, BoardError>>,
    ) {
        // Its size is known only once it ran: it needs room for at least one byte.
        if !self.size.fits(1) {
            self.shared.metrics.error(kind::BOARD_TOO_LARGE);
            let _ = reply.send(Err(BoardError::TooLarge(self.size.limit())));
            return;
        }
        // The closure is the assistant's code, not the client's; a bug in it must not stop
        // the board.
        let Ok(edited) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| edit(&self.doc)))
        else {
            warn!(board = %self.id, "a server-side edit panicked");
            let _ = reply.send(Err(BoardError::Rejected("the edit failed".into())));
            return;
        };
        match edited.update {
            Some(update) if update.as_slice() != Update::EMPTY_V1 => {
                self.admit_own(&update);
                self.hold(update.clone());
                let batch = self.pipeline.next_batch();
                batch.broadcasts.push((None, update));
                batch.http.push(Waiter::with(reply, edited.result));
                self.pipeline.dispatch();
            }
            _ => {
                let _ = reply.send(Ok(edited.result));
            }
        }
    }
}
