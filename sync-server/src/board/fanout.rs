//! The connections joined to one board, and sending frames to them.
//!
//! A frame is offered to each connection's bounded queue ([`super::link`]). A connection whose
//! queue is full is never silently skipped: the offer reports it, and the actor closes it (it
//! resyncs when it reconnects).

use std::collections::HashMap;

use bytes::Bytes;

use super::peer::{ConnId, Delivery, Peer};
use crate::metrics::Metrics;

/// A connection a frame could not be queued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Undelivered {
    /// Its queue is full: it is too slow and must be closed.
    TooSlow(ConnId),
    /// It is closed already: forget it.
    Closed(ConnId),
}

fn undelivered(conn: ConnId, delivery: Delivery) -> Option<Undelivered> {
    match delivery {
        Delivery::Queued(_) => None,
        Delivery::Full => Some(Undelivered::TooSlow(conn)),
        Delivery::Closed => Some(Undelivered::Closed(conn)),
    }
}

/// The board's connections.
#[derive(Debug, Default)]
pub(super) struct Peers(HashMap<ConnId, Peer>);

impl Peers {
    pub(super) fn insert(&mut self, conn: ConnId, peer: Peer) {
        self.0.insert(conn, peer);
    }

    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Peer> {
        self.0.remove(&conn)
    }

    pub(super) fn get(&self, conn: ConnId) -> Option<&Peer> {
        self.0.get(&conn)
    }

    pub(super) fn get_mut(&mut self, conn: ConnId) -> Option<&mut Peer> {
        self.0.get_mut(&conn)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes every connection, returning them.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = Peer> {
        std::mem::take(&mut self.0).into_values()
    }

    /// Who a connection is, for awareness ownership.
    pub(super) fn identity(&self, conn: ConnId) -> Option<&super::presence::Identity> {
        self.0.get(&conn).map(|p| &p.identity)
    }

    /// Queues `frame` for one connection.
    pub(super) fn send(
        &self,
        conn: ConnId,
        frame: Bytes,
        metrics: &Metrics,
    ) -> Option<Undelivered> {
        self.deliver(conn, metrics, |link| link.offer(frame))
    }

    /// Queues a sync step 2 answer for one connection (remembered in its queue, so that a
    /// repeated request is answered once).
    pub(super) fn send_sync_reply(
        &self,
        conn: ConnId,
        frame: Bytes,
        metrics: &Metrics,
    ) -> Option<Undelivered> {
        self.deliver(conn, metrics, |link| link.offer_sync_reply(frame))
    }

    fn deliver(
        &self,
        conn: ConnId,
        metrics: &Metrics,
        offer: impl FnOnce(&super::link::Outbound) -> Delivery,
    ) -> Option<Undelivered> {
        let peer = self.0.get(&conn)?;
        metrics.frames_sent.inc();
        undelivered(conn, offer(&peer.link))
    }

    /// Queues `frame` for every connection but `skip`; returns those it could not reach.
    pub(super) fn broadcast(
        &self,
        frame: &Bytes,
        skip: Option<ConnId>,
        metrics: &Metrics,
    ) -> Vec<Undelivered> {
        self.broadcast_to(frame, skip, |_| true, metrics).1
    }

    /// Queues `frame` for every connection `wanted` picks but `skip`; returns to how many it
    /// was queued, and those it could not reach.
    pub(super) fn broadcast_to(
        &self,
        frame: &Bytes,
        skip: Option<ConnId>,
        wanted: impl Fn(&Peer) -> bool,
        metrics: &Metrics,
    ) -> (usize, Vec<Undelivered>) {
        let mut failed = Vec::new();
        let (mut sent, mut deepest) = (0u64, 0usize);
        for (conn, peer) in &self.0 {
            if Some(*conn) == skip || !wanted(peer) {
                continue;
            }
            match peer.link.offer(frame.clone()) {
                Delivery::Queued(depth) => {
                    sent += 1;
                    deepest = deepest.max(depth);
                }
                other => failed.extend(undelivered(*conn, other)),
            }
        }
        metrics.frames_sent.inc_by(sent);
        if sent > 0 {
            metrics.queue_depth.observe(deepest as f64);
        }
        (sent as usize, failed)
    }
}
