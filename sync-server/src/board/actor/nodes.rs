//! What other nodes say about the board (see [`crate::cluster`]): rows they committed, their
//! connections' presence, the board's deletion, and the database's word when messages may
//! have been lost.

use super::*;
use crate::cluster::{Inbound, NodeId};

impl BoardActor {
    pub(super) fn on_cluster(&mut self, message: Inbound) {
        match message {
            Inbound::Update {
                node,
                rows,
                updates,
            } => self.on_remote_rows(&node, &rows, &updates),
            Inbound::Awareness { node, update } => self.on_remote_awareness(&node, &update),
            Inbound::AwarenessQuery => {
                if let Some(frame) = self.presence.local() {
                    self.shared.cluster.publish_awareness(&self.id, frame);
                }
            }
            Inbound::NodeGone(node) => {
                if let Some(frame) = self.presence.remove_node(&node) {
                    self.broadcast(&frame, None);
                }
            }
            Inbound::Deleted | Inbound::Stored(None) => {
                info!(board = %self.id, "the board was deleted on another node; closing its connections");
                self.close_all(Refusal::Deleted);
            }
            Inbound::Stored(Some(last)) => self.behind(last),
            Inbound::Resync => {
                if self.checking.is_none() {
                    self.checking = Some(maintenance::stored_seq(&self.shared, &self.id));
                }
            }
        }
    }

    /// The database holds rows up to `last`: read those the doc lacks.
    pub(super) fn behind(&mut self, last: Seq) {
        if last > self.pipeline.last_seq() {
            self.pipeline.note_rows(last, 0);
        }
    }

    /// Rows another node committed. Applied at once and shown to this node's connections,
    /// unless the doc already has them (applied, or being read) or they build on rows the doc
    /// lacks: then the database is read up to them, in order (yrs must never integrate a
    /// block past a hole in a client's clocks).
    fn on_remote_rows(&mut self, node: &NodeId, rows: &[(Seq, u32)], updates: &[Bytes]) {
        let Some(&(last, _)) = rows.last() else {
            return;
        };
        if last <= self.pipeline.last_seq() {
            return;
        }
        if updates.is_empty() {
            // Announced without their content (too large to carry): read them.
            self.behind(last);
            return;
        }
        let decoded: Option<Vec<Update>> = updates
            .iter()
            .map(|u| std::panic::catch_unwind(|| Update::decode_v1(u)).ok()?.ok())
            .collect();
        let applicable = decoded.is_some_and(|d| d.iter().all(|u| !self.skips_clocks(u)));
        if !applicable {
            debug!(board = %self.id, %node, last, "rows of another node build on rows this node lacks; reading them");
            self.behind(last);
            return;
        }
        self.apply_durable(updates.iter().map(Bytes::as_ref));
        for &(last, count) in rows {
            if last > self.pipeline.last_seq() {
                self.pipeline.note_rows(last, count as usize);
            }
        }
    }

    fn on_remote_awareness(&mut self, node: &NodeId, frame: &Bytes) {
        let Ok(protocol::Incoming::Awareness { update }) = protocol::decode(frame) else {
            self.shared.metrics.cluster.bad_messages.inc();
            return;
        };
        match self.presence.apply_remote(node, update) {
            Ok(Some(frame)) => self.broadcast(&frame, None),
            Ok(None) => {}
            Err(e) => {
                self.shared.metrics.cluster.bad_messages.inc();
                debug!(board = %self.id, %node, error = %e, "awareness from another node refused");
            }
        }
    }
}
