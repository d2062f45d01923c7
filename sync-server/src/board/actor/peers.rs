//! The board's connections as the actor sees them: awareness, sending, closing.

use super::*;

impl BoardActor {
    pub(super) fn on_awareness(&mut self, conn: ConnId, update: AwarenessUpdate, frame: &Bytes) {
        let peers = &self.peers;
        let applied = self
            .presence
            .apply(conn, update, frame, |c| peers.identity(c));
        match applied {
            Ok(applied) => {
                if applied.dropped > 0 {
                    self.shared.metrics.error(kind::AWARENESS_SPOOF);
                    info!(board = %self.id, conn, dropped = applied.dropped, "awareness entries of another user's client dropped");
                }
                if let Some(correction) = applied.correction {
                    self.send(conn, correction);
                }
                if let Some(frame) = applied.frame {
                    // Echoed to everyone, the sender included: it keeps clients' watchdogs
                    // quiet.
                    self.broadcast(&frame, None);
                    self.shared.cluster.publish_awareness(&self.id, frame);
                }
            }
            Err(e) if e.is_limit() => {
                info!(board = %self.id, conn, error = %e, "closing: awareness over its limits");
                self.close_peer(conn, Refusal::AwarenessLimit);
            }
            Err(e) => {
                debug!(board = %self.id, conn, error = %e, "bad awareness update");
                self.close_peer(conn, Refusal::BadAwareness);
            }
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, frame: Bytes) {
        let undelivered = self.peers.send(conn, frame, &self.shared.metrics);
        self.settle(undelivered);
    }

    /// Sends `frame` to every peer except `skip`. A peer whose queue is full is closed, never
    /// silently skipped: it resyncs when it reconnects.
    pub(super) fn broadcast(&mut self, frame: &Bytes, skip: Option<ConnId>) {
        let undelivered = self.peers.broadcast(frame, skip, &self.shared.metrics);
        self.settle(undelivered);
    }

    /// Sends a stateless message to every connection that takes them, except `from`; returns
    /// to how many it was queued. Nothing of it is stored: it is a signal between peers, never
    /// part of the board.
    pub(super) fn send_stateless(&mut self, from: Option<ConnId>, frame: &Bytes) -> usize {
        let (sent, undelivered) =
            self.peers
                .broadcast_to(frame, from, |p| p.wants.stateless, &self.shared.metrics);
        self.settle(undelivered);
        sent
    }

    /// Closes the connections a frame could not be queued for.
    pub(super) fn settle(&mut self, undelivered: impl IntoIterator<Item = Undelivered>) {
        for failed in undelivered {
            match failed {
                Undelivered::TooSlow(conn) => {
                    info!(board = %self.id, conn, "closing a connection too slow to keep up");
                    self.close_peer(conn, Refusal::TooSlow);
                }
                Undelivered::Closed(conn) => self.remove_peer(conn),
            }
        }
    }

    /// Closes a connection for `refusal`, counted once here, where it is decided.
    pub(super) fn close_peer(&mut self, conn: ConnId, refusal: Refusal) {
        let reason = refusal.count(&self.shared.metrics);
        if let Some(peer) = self.peers.get(conn) {
            peer.link.close(reason);
        }
        self.remove_peer(conn);
    }

    /// Forgets a connection and clears the awareness states it controlled, for everyone else.
    pub(super) fn remove_peer(&mut self, conn: ConnId) {
        if self.peers.remove(conn).is_none() {
            return;
        }
        self.gapped.retain(|g| g.conn != conn);
        if self.peers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        if let Some(frame) = self.presence.remove_conn(conn) {
            self.broadcast(&frame, None);
            self.shared.cluster.publish_awareness(&self.id, frame);
        }
    }
}
