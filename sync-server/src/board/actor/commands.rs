//! Dispatching the commands an actor takes.

use super::*;

impl BoardActor {
    pub(super) fn handle(&mut self, cmd: BoardCmd) {
        match cmd {
            BoardCmd::Join {
                conn,
                link,
                wants,
                identity,
                reply,
            } => self.join(conn, Peer::new(link, wants, identity), reply),
            BoardCmd::Leave { conn } => self.remove_peer(conn),
            // Held back while reads wait or a version is saved, and behind any held back
            // already: a connection's updates apply in the order it sent them.
            cmd @ (BoardCmd::Update { .. } | BoardCmd::HttpUpdate { .. }) => {
                if let Some(cmd) = self.pipeline.admit(cmd) {
                    self.apply_cmd(cmd);
                }
            }
            BoardCmd::Awareness {
                conn,
                update,
                frame,
            } => self.on_awareness(conn, update, &frame),
            BoardCmd::ServerPresence { state, reply } => {
                if let Some(frame) = self.presence.set_own(state) {
                    self.broadcast(&frame, None);
                    self.shared.cluster.publish_awareness(&self.id, frame);
                }
                let _ = reply.send(());
            }
            BoardCmd::QueryAwareness { conn } => {
                if let Some(frame) = self.presence.all() {
                    self.send(conn, frame);
                }
            }
            BoardCmd::Stateless { from, frame, reply } => {
                let sent = self.send_stateless(from, &frame);
                if let Some(reply) = reply {
                    let _ = reply.send(sent);
                }
            }
            BoardCmd::Read(read) => self.pipeline.read(read),
            BoardCmd::Shutdown { reason, reply } => {
                // The board is being deleted: no one may see it again, but what is being
                // committed must be answered first (the deletion then removes it), so that no
                // row of this board can land on one created later under the same id.
                for read in self.pipeline.take_waiting() {
                    read.refuse(&BoardError::Deleted);
                }
                self.abandon(&BoardError::Deleted, reason);
                self.shared.remove_if(&self.id, self.actor_id);
                self.deleting = Some(reply);
            }
        }
    }

    /// A connection joins: it gets sync step 1 (if it wants it then) and every awareness
    /// state.
    fn join(&mut self, conn: ConnId, peer: Peer, reply: oneshot::Sender<Result<(), BoardError>>) {
        let max = self.shared.config.board.max_connections;
        if max != 0 && self.peers.len() >= max {
            self.shared.metrics.error(kind::CONNECTION_LIMIT);
            let _ = reply.send(Err(BoardError::Full));
            return;
        }
        let step1 = peer.wants.step1_on_join;
        self.peers.insert(conn, peer);
        self.idle_since = None;
        if step1 {
            let sv = self.doc.transact().state_vector();
            self.send(conn, protocol::sync_step1(&sv));
        }
        if let Some(frame) = self.presence.all() {
            self.send(conn, frame);
        }
        let _ = reply.send(Ok(()));
    }

    /// Applies an update command the pipeline let through.
    pub(super) fn apply_cmd(&mut self, cmd: BoardCmd) {
        match cmd {
            BoardCmd::Update {
                conn,
                update,
                raw,
                scanned,
                held,
            } => self.apply(
                Some(conn),
                Incoming {
                    update,
                    raw,
                    scanned,
                },
                None,
                Some(held),
            ),
            BoardCmd::HttpUpdate { raw, reply } => match protocol::decode_scanned(&raw) {
                Ok((update, scanned)) => self.apply(
                    None,
                    Incoming {
                        update,
                        raw,
                        scanned,
                    },
                    Some(Waiter::reply(reply)),
                    None,
                ),
                Err(e) => {
                    let _ = reply.send(Err(BoardError::Rejected(e.to_string())));
                }
            },
            other => self.handle(other),
        }
    }
}
