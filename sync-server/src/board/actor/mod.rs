//! The board actor: its state, its loop and how it dispatches commands. See the module docs of
//! [`super`] for the durability rules and limits.
//!
//! - `load`: loading a board, and refusing commands;
//! - `apply`: updates, restores and the server's own edits, up to the committer;
//! - `commits`: commit answers, rows of another writer, failure;
//! - `reads`: reads from durable state, held-back updates, versions;
//! - `peers`: connections, awareness, sending;
//! - `upkeep`: automatic versions and compaction.

mod apply;
mod commits;
mod load;
mod peers;
mod reads;
mod upkeep;

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use crdt_schema::guard::Nesting;
use crdt_schema::restore::RestoreReport;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use yrs::sync::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use self::apply::{Gapped, Incoming};
use self::load::{load, refuse, refuse_all};
use self::reads::AfterSave;
use super::batch::{Batch, Outgoing, Waiter};
use super::fanout::{Peers, Undelivered};
use super::maintenance::{self, Job, Source};
use super::peer::{CloseReason, ConnId, Peer, close};
use super::presence::Presence;
use super::registry::Shared;
use super::{BoardCmd, BoardError, Read, VersionMeta};
use crate::commit::CommitRequest;
use crate::ids::{BoardId, Seq};
use crate::metrics::kind;
use crate::protocol;
use crate::storage::replay::{ReplayError, ReplayStats, replay_with_nesting};
use crate::storage::{CompactionStats, StorageError, VersionInfo, VersionKind};

type CommitReply = oneshot::Receiver<Result<Seq, Arc<StorageError>>>;

/// Batches of one board sent to the committer and not yet answered, at most. Each update goes
/// out as soon as it is applied and joins the next group the committer starts. Were only one
/// batch in flight, an update arriving just after one went out would wait for that commit, then
/// for a whole paced group of its own: at 4,000 updates/s on one board, p50 3.2 ms instead of
/// 1.9 (BENCHMARKS.md). The committer answers a board's batches in order, so they are released
/// in order. The bound only matters when commits stall: past it, updates gather in `next`.
const MAX_IN_FLIGHT: usize = 64;

/// Why a commit failed.
#[derive(Debug, Clone, thiserror::Error)]
enum CommitError {
    #[error(transparent)]
    Storage(Arc<StorageError>),
    #[error("the committer stopped")]
    Stopped,
}

#[derive(Debug)]
struct InFlight {
    batch: Batch,
    reply: CommitReply,
}

#[derive(Debug)]
struct BoardActor {
    id: BoardId,
    actor_id: u64,
    shared: Arc<Shared>,
    doc: Doc,
    /// How deeply the doc's items nest: every update is checked against it before it is
    /// applied.
    nesting: Nesting,
    presence: Presence,
    peers: Peers,
    /// Sent to the committer and not yet durable, oldest first; at most [`MAX_IN_FLIGHT`].
    in_flight: VecDeque<InFlight>,
    /// Applied and not yet sent to the committer: goes out as soon as fewer than
    /// [`MAX_IN_FLIGHT`] batches are in flight.
    next: Batch,
    /// Reads waiting for the doc to hold only durable data.
    waiting: Vec<Read>,
    /// Updates held back while reads wait or a version is being saved.
    deferred: VecDeque<BoardCmd>,
    /// Bytes of the updates in `deferred`.
    deferred_bytes: usize,
    last_seq: Seq,
    snapshot_seq: Seq,
    /// Log bytes appended since the snapshot (approximate across restarts: counted on load).
    log_bytes: u64,
    /// The board's size for its limit: the encoded state at load (or at the last compaction)
    /// plus every update stored since.
    size: u64,
    compaction: Option<Job<Option<CompactionStats>>>,
    /// `log_bytes` when the running compaction started.
    compaction_bytes: u64,
    /// Don't try compacting again before the log reaches this sequence (after a failure).
    compaction_retry_at: Seq,
    /// An automatic version being saved.
    checkpoint: Option<Job<VersionInfo>>,
    /// The sequence the newest saved automatic version covers.
    checkpoint_seq: Seq,
    /// When the newest automatic version was saved (or the board loaded, or a save failed).
    checkpoint_at: Instant,
    /// A version being saved while every change waits, and what follows it.
    saving: Option<(Job<VersionInfo>, AfterSave)>,
    /// Updates waiting for clocks they skip, in arrival order.
    gapped: Vec<Gapped>,
    /// Rows other writers committed between this actor's own, being read to catch up.
    healing: Option<Job<Vec<Vec<u8>>>>,
    /// Rows other writers committed that no read covers yet (`after < seq < before`): read as
    /// soon as the running read ends.
    gaps: Option<(Seq, Seq)>,
    idle_since: Option<Instant>,
    /// The board is being deleted: answered, and the actor stops, once nothing is in flight.
    deleting: Option<oneshot::Sender<()>>,
    /// A commit failed: the actor takes no more commands and stops once nothing is in flight.
    failing: bool,
    /// Set when the actor must stop at the end of this iteration.
    stopped: bool,
}

/// Runs a board actor: loads the board, then serves commands until evicted, deleted, failed
/// or shut down. Always removes itself from the registry before returning.
pub(super) async fn run(
    shared: Arc<Shared>,
    id: BoardId,
    actor_id: u64,
    mut rx: mpsc::Receiver<BoardCmd>,
) {
    let (doc, nesting, stats, size) = match load(&shared, &id).await {
        Ok(loaded) => loaded,
        Err(e) => {
            if !matches!(e, BoardError::Deleted) {
                shared.metrics.error(kind::LOAD_FAILED);
            }
            shared.remove_if(&id, actor_id);
            refuse_all(&mut rx, &e);
            return;
        }
    };
    let presence = Presence::new(doc.clone());
    let checkpoint_seq = match shared.store.list_versions(&id).await {
        Ok(versions) => versions
            .iter()
            .find(|v| v.kind == VersionKind::Auto)
            .map_or(0, |v| v.covers_seq),
        Err(e) => {
            warn!(board = %id, error = %e, "cannot read versions; checkpoints start over");
            stats.last_seq
        }
    };
    let mut actor = BoardActor {
        id,
        actor_id,
        shared,
        doc,
        nesting,
        presence,
        peers: Peers::default(),
        in_flight: VecDeque::new(),
        next: Batch::default(),
        waiting: Vec::new(),
        deferred: VecDeque::new(),
        deferred_bytes: 0,
        last_seq: stats.last_seq,
        snapshot_seq: stats.snapshot_seq,
        log_bytes: stats.log_bytes as u64,
        size,
        compaction: None,
        compaction_bytes: 0,
        compaction_retry_at: 0,
        checkpoint: None,
        checkpoint_seq,
        checkpoint_at: Instant::now(),
        saving: None,
        gapped: Vec::new(),
        healing: None,
        gaps: None,
        idle_since: Some(Instant::now()),
        deleting: None,
        failing: false,
        stopped: false,
    };
    actor.shared.metrics.boards_loaded.inc();
    actor.maybe_compact();
    actor.serve(&mut rx).await;
    actor.shared.metrics.boards_loaded.dec();
    actor.shared.remove_if(&actor.id, actor.actor_id);
    refuse_all(&mut rx, &BoardError::Gone);
}

async fn commit_done(in_flight: &mut VecDeque<InFlight>) -> Result<Seq, CommitError> {
    match in_flight.front_mut() {
        Some(f) => match (&mut f.reply).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(CommitError::Storage(e)),
            Err(_) => Err(CommitError::Stopped),
        },
        None => std::future::pending().await,
    }
}

async fn saved(
    saving: &mut Option<(Job<VersionInfo>, AfterSave)>,
) -> Result<VersionInfo, maintenance::JobError> {
    match saving {
        Some((job, _)) => job.await.unwrap_or(Err(maintenance::JobError::Stopped)),
        None => std::future::pending().await,
    }
}

async fn idle_expired(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The bytes an update command holds.
fn update_bytes(cmd: &BoardCmd) -> usize {
    match cmd {
        BoardCmd::Update { raw, .. } | BoardCmd::HttpUpdate { raw, .. } => raw.len(),
        _ => 0,
    }
}

impl BoardActor {
    async fn serve(&mut self, rx: &mut mpsc::Receiver<BoardCmd>) {
        let shutdown = self.shared.shutdown.clone();
        let mut draining = false;
        loop {
            let deadline = self.idle_deadline();
            tokio::select! {
                biased;
                result = commit_done(&mut self.in_flight) => self.on_committed(result),
                result = saved(&mut self.saving) => self.on_saved(result),
                result = maintenance::finished(&mut self.healing) => {
                    self.healing = None;
                    self.on_healed(result);
                }
                result = maintenance::finished(&mut self.compaction) => {
                    self.compaction = None;
                    self.on_compacted(result);
                }
                result = maintenance::finished(&mut self.checkpoint) => {
                    self.checkpoint = None;
                    self.on_checkpointed(result);
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    self.drain(rx);
                }
                cmd = rx.recv(), if !draining && self.deleting.is_none() && !self.failing => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                () = idle_expired(deadline), if !draining => {
                    if self.shared.remove_if(&self.id, self.actor_id) {
                        debug!(board = %self.id, "idle board evicted");
                        self.shared.metrics.evictions.inc();
                        self.checkpoint("idle");
                        break;
                    }
                    self.idle_since = None;
                }
            }
            if self.deleting.is_some() && self.in_flight.is_empty() && self.saving.is_none() {
                if let Some(reply) = self.deleting.take() {
                    let _ = reply.send(());
                }
                break;
            }
            if self.stopped {
                break;
            }
            if draining
                && self.in_flight.is_empty()
                && self.saving.is_none()
                && self.compaction.is_none()
            {
                break;
            }
        }
    }

    /// Shutdown: stop taking commands, but apply every update already received so that it is
    /// committed before the actor stops.
    fn drain(&mut self, rx: &mut mpsc::Receiver<BoardCmd>) {
        self.shared.remove_if(&self.id, self.actor_id);
        rx.close();
        for read in std::mem::take(&mut self.waiting) {
            refuse(read, &BoardError::Gone);
        }
        let mut pending: VecDeque<BoardCmd> = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        while let Ok(cmd) = rx.try_recv() {
            pending.push_back(cmd);
        }
        for cmd in pending {
            match cmd {
                BoardCmd::Update { .. } | BoardCmd::HttpUpdate { .. } => {
                    if self.saving.is_some() {
                        // Applied after the version being saved, as soon as it is.
                        self.deferred_bytes += update_bytes(&cmd);
                        self.deferred.push_back(cmd);
                    } else {
                        self.handle(cmd);
                    }
                }
                BoardCmd::Join { reply, .. } => {
                    let _ = reply.send(Err(BoardError::Gone));
                }
                BoardCmd::Read(read) => refuse(read, &BoardError::Gone),
                _ => {}
            }
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.peers.is_empty()
            && self.can_answer()
            && self.waiting.is_empty()
            && self.compaction.is_none()
            && self.healing.is_none();
        idle.then_some(self.idle_since?)
            .map(|since| since + self.shared.config.board.idle_timeout)
    }

    /// The doc holds nothing that is not durable.
    fn is_quiescent(&self) -> bool {
        self.in_flight.is_empty() && self.next.updates.is_empty()
    }

    /// The doc holds every stored row up to `last_seq`: no rows of another writer wait to be
    /// read.
    fn is_complete(&self) -> bool {
        self.healing.is_none() && self.gaps.is_none()
    }

    /// Reads may be answered now: the doc holds exactly the durable state (nothing undurable,
    /// nothing stored missing), and no version is being saved (which holds every change back).
    fn can_answer(&self) -> bool {
        self.is_quiescent() && self.is_complete() && self.saving.is_none()
    }

    fn handle(&mut self, cmd: BoardCmd) {
        match cmd {
            BoardCmd::Join {
                conn,
                link,
                wants_acks,
                identity,
                reply,
            } => {
                let max = self.shared.config.board.max_connections;
                if max != 0 && self.peers.len() >= max {
                    self.shared.metrics.error(kind::CONNECTION_LIMIT);
                    let _ = reply.send(Err(BoardError::Full));
                    return;
                }
                let peer = Peer {
                    link,
                    wants_acks,
                    doc_messages: 0,
                    held_from: None,
                    acked: 0,
                    identity,
                };
                self.peers.insert(conn, peer);
                self.idle_since = None;
                let sv = self.doc.transact().state_vector();
                self.send(conn, protocol::sync_step1(&sv));
                if let Some(frame) = self.presence.all() {
                    self.send(conn, frame);
                }
                let _ = reply.send(Ok(()));
            }
            BoardCmd::Leave { conn } => self.remove_peer(conn),
            // Held back while reads wait or a version is saved, and behind any held back
            // already: a connection's updates apply in the order it sent them.
            cmd @ (BoardCmd::Update { .. } | BoardCmd::HttpUpdate { .. })
                if !self.waiting.is_empty()
                    || self.saving.is_some()
                    || !self.deferred.is_empty() =>
            {
                self.defer(cmd);
            }
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
            BoardCmd::Awareness {
                conn,
                update,
                frame,
            } => self.on_awareness(conn, update, &frame),
            BoardCmd::ServerPresence { state, reply } => {
                if let Some(frame) = self.presence.set_own(state) {
                    self.broadcast(&frame, None);
                }
                let _ = reply.send(());
            }
            BoardCmd::QueryAwareness { conn } => {
                if let Some(frame) = self.presence.all() {
                    self.send(conn, frame);
                }
            }
            BoardCmd::Read(read) => self.read(read),
            BoardCmd::Shutdown { reason, reply } => {
                // The board is being deleted: no one may see it again, but what is being
                // committed must be answered first (the deletion then removes it), so that no
                // row of this board can land on one created later under the same id.
                for read in std::mem::take(&mut self.waiting) {
                    refuse(read, &BoardError::Deleted);
                }
                self.abandon(&BoardError::Deleted, reason);
                self.shared.remove_if(&self.id, self.actor_id);
                self.deleting = Some(reply);
            }
        }
    }
}
