//! The board actor loop. See the module docs of [`super`] for the durability rules and limits.

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

/// An update of a connection that skips clocks of a client the doc lacks (typically a
/// reconnecting client's live edit arriving before its sync step 2 answer, which carries the
/// edits before it). It waits, neither applied nor acknowledged, until the doc has those
/// clocks; it still holds its share of the connection's uncommitted-bytes budget, so what
/// waits is bounded. Dropped if its connection goes (the client resends it).
#[derive(Debug)]
struct Gapped {
    conn: ConnId,
    /// Its number among the connection's document messages.
    message: u64,
    update: Update,
    raw: Vec<u8>,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What to do once a version the actor is saving is saved.
#[derive(Debug)]
enum AfterSave {
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

/// A fresh doc for a board: text offsets as Yjs counts them, roots declared.
fn new_doc() -> Doc {
    let doc = Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    crdt_schema::declare_roots(&doc);
    doc
}

async fn load(
    shared: &Shared,
    id: &BoardId,
) -> Result<(Doc, Nesting, ReplayStats, u64), BoardError> {
    let failed = |e: &dyn std::fmt::Display| {
        warn!(board = %id, error = %e, "board load failed");
        BoardError::LoadFailed
    };
    let stored = match shared.store.load(id).await {
        Ok(stored) => stored,
        Err(StorageError::BoardNotFound(_)) => {
            match shared.store.ensure_board(id).await {
                Ok(_) => {}
                Err(StorageError::BoardDeleted(_)) => return Err(BoardError::Deleted),
                Err(e) => return Err(failed(&e)),
            }
            shared.store.load(id).await.map_err(|e| failed(&e))?
        }
        Err(e) => return Err(failed(&e)),
    };
    let rows = stored.updates.len();
    let replayed = tokio::task::spawn_blocking(move || {
        let doc = new_doc();
        let (stats, nesting) = replay_with_nesting(&doc, &stored)?;
        let size = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len() as u64;
        Ok::<_, ReplayError>((doc, nesting, stats, size))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    debug!(board = %id, rows, "board loaded");
    Ok(replayed)
}

/// Answers every queued command with `error`. [`BoardError::Gone`] is not sent but shown by
/// dropping the reply: callers then ask the registry again and reach a new actor.
fn refuse_all(rx: &mut mpsc::Receiver<BoardCmd>, error: &BoardError) {
    rx.close();
    if matches!(error, BoardError::Gone) {
        while rx.try_recv().is_ok() {}
        return;
    }
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            BoardCmd::Join { reply, .. } | BoardCmd::HttpUpdate { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            BoardCmd::Read(read) => refuse(read, error),
            _ => {}
        }
    }
}

/// Answers a read with `error` (a sync step 1 has no one to answer).
fn refuse(read: Read, error: &BoardError) {
    match read {
        Read::SyncStep1 { .. } => {}
        Read::State { reply } => {
            let _ = reply.send(Err(error.clone()));
        }
        Read::Json { reply } => {
            let _ = reply.send(Err(error.clone()));
        }
        Read::SaveVersion { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Read::Restore { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Read::Edit { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
    }
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
                held,
            } => self.apply(Some(conn), update, raw, None, Some(held)),
            BoardCmd::HttpUpdate { raw, reply } => match protocol::decode_update(&raw) {
                Ok(update) => self.apply(None, update, raw, Some(Waiter::reply(reply)), None),
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
                for peer in self.peers.take_all() {
                    peer.link.close(reason);
                }
                for read in std::mem::take(&mut self.waiting) {
                    refuse(read, &BoardError::Deleted);
                }
                for cmd in std::mem::take(&mut self.deferred) {
                    if let BoardCmd::HttpUpdate { reply, .. } = cmd {
                        let _ = reply.send(Err(BoardError::Deleted));
                    }
                }
                self.deferred_bytes = 0;
                self.gapped.clear();
                self.shared.remove_if(&self.id, self.actor_id);
                self.deleting = Some(reply);
            }
        }
    }

    /// Holds an update back until the reads before it are answered. What may wait is bounded
    /// in bytes (`max_deferred_bytes`); past it, an update is refused (a WebSocket client is
    /// closed with 1013 and resends on reconnect; an HTTP writer gets 503).
    fn defer(&mut self, cmd: BoardCmd) {
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
    fn read(&mut self, read: Read) {
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

    /// Applies an update to the doc and queues what must follow once it is durable. An update
    /// that skips clocks of a client the doc lacks waits first (see [`Gapped`]).
    fn apply(
        &mut self,
        origin: Option<ConnId>,
        update: Update,
        raw: Vec<u8>,
        http: Option<Waiter>,
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        // Numbered as it arrives: the client counts its messages in the order it sent them.
        let message_no = origin.and_then(|c| self.peers.get_mut(c)).map(|p| {
            p.doc_messages += 1;
            p.doc_messages
        });
        if self.skips_clocks(&update) {
            match (origin, message_no) {
                (Some(conn), Some(message)) => {
                    debug!(board = %self.id, conn, message, "an update waits for clocks it skips");
                    if let Some(peer) = self.peers.get_mut(conn) {
                        peer.held_from.get_or_insert(message);
                    }
                    self.gapped.push(Gapped {
                        conn,
                        message,
                        update,
                        raw,
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
        self.integrate(origin, message_no, update, raw, http, held);
        self.release_gapped();
    }

    /// Whether `update` holds a client's clocks past the doc's next one for that client. yrs
    /// 0.28 integrates such a block with a hole before it (shown by reads, missing from the
    /// state vector and from the transaction's update, so it would be shown but never stored),
    /// and panics when a later update's range spans the hole: such an update waits instead.
    fn skips_clocks(&self, update: &Update) -> bool {
        let lower = update.state_vector_lower();
        let sv = self.doc.transact().state_vector();
        lower.iter().any(|(client, &clock)| clock > sv.get(client))
    }

    /// Applies the updates that waited for clocks they skipped, once the doc has them.
    fn release_gapped(&mut self) {
        loop {
            let Some(at) = self
                .gapped
                .iter()
                .position(|g| !self.skips_clocks(&g.update))
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
            self.integrate(Some(g.conn), Some(g.message), g.update, g.raw, None, g.held);
        }
    }

    /// Checks an update against the board's limits, applies it, and queues what must follow
    /// once it is durable.
    fn integrate(
        &mut self,
        origin: Option<ConnId>,
        message_no: Option<u64>,
        update: Update,
        raw: Vec<u8>,
        http: Option<Waiter>,
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let limit = self.shared.config.board.max_board_bytes;
        if limit != 0 && self.size + raw.len() as u64 > limit {
            self.shared.metrics.error(kind::BOARD_TOO_LARGE);
            warn!(board = %self.id, conn = ?origin, size = self.size, update = raw.len(), limit, "update refused: the board would exceed its size limit");
            if let Some(conn) = origin {
                self.close_peer(conn, close::TOO_LARGE, "board size limit reached");
            }
            if let Some(waiter) = http {
                waiter.answer(Err(BoardError::TooLarge(limit)));
            }
            return;
        }
        // Checked against the board's own nesting: the update may put items into types an
        // earlier update created.
        let checked = match self.nesting.check(&raw) {
            Ok(checked) => checked,
            Err(e) => {
                self.shared.metrics.error(kind::TOO_DEEP);
                warn!(board = %self.id, conn = ?origin, error = %e, "update refused");
                if let Some(conn) = origin {
                    self.close_peer(conn, close::BAD_UPDATE, "update nests too deeply");
                }
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
            self.close_all(CloseReason {
                code: close::INTERNAL,
                reason: "board unavailable; reconnect",
            });
            return;
        };
        // Whatever yrs integrated is part of what was checked.
        self.nesting.record(checked);
        let changed = delta.as_slice() != Update::EMPTY_V1;
        if let Err(e) = &result {
            warn!(board = %self.id, conn = ?origin, error = %e, "update does not apply");
            self.shared.metrics.error(kind::BAD_UPDATE);
            if let Some(conn) = origin {
                self.close_peer(conn, close::BAD_UPDATE, "update does not apply");
            }
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
        let batch = &mut self.next;
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
        self.dispatch();
    }

    /// Turns the board into `target`'s content as one forward change (crdt-schema's restore
    /// rules), committed and broadcast like any update. Runs right after the version `before`
    /// was saved, with nothing applied in between.
    fn restore(
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
            self.next.broadcasts.push((None, delta));
        }
        self.next.http.push(Waiter::with(reply, (report, before)));
        self.dispatch();
    }

    /// Records the nesting of an edit the server made itself (a restore, the assistant).
    fn admit_own(&mut self, delta: &[u8]) {
        if let Err(e) = self.nesting.admit(delta) {
            warn!(board = %self.id, error = %e, "the server's own edit nests past the limit");
        }
    }

    /// Adds `update` to what the next commit stores.
    fn hold(&mut self, update: Vec<u8>) {
        let len = update.len() as u64;
        self.size += len;
        self.shared.metrics.pending_bytes.inc_by(len as i64);
        let batch = &mut self.next;
        batch.first_at.get_or_insert_with(std::time::Instant::now);
        batch.bytes += len;
        batch.updates.push(update);
    }

    /// Sends the next batch to the committer unless [`MAX_IN_FLIGHT`] are in flight.
    fn dispatch(&mut self) {
        if self.in_flight.len() >= MAX_IN_FLIGHT || self.next.is_empty() {
            return;
        }
        if self.next.updates.is_empty() {
            // Only no-ops: durable already, as soon as what came before is.
            if self.in_flight.is_empty() {
                let batch = std::mem::take(&mut self.next);
                self.release(batch);
            }
            return;
        }
        let mut batch = std::mem::take(&mut self.next);
        let (reply, rx) = oneshot::channel();
        let updates = std::mem::take(&mut batch.updates);
        batch.stored = updates.len();
        let request = CommitRequest {
            board: self.id.clone(),
            updates,
            reply,
        };
        match self.shared.committer.submit(request) {
            Ok(()) => self.in_flight.push_back(InFlight { batch, reply: rx }),
            Err(_) => self.fail(&CommitError::Stopped, batch),
        }
    }

    fn on_committed(&mut self, result: Result<Seq, CommitError>) {
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
    fn note_rows(&mut self, last: Seq, count: usize) {
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
    fn read_gaps(&mut self) {
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
    fn on_healed(&mut self, result: Result<Vec<Vec<u8>>, maintenance::JobError>) {
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
    fn close_all(&mut self, reason: CloseReason) {
        let held = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|f| f.batch)
            .chain([std::mem::take(&mut self.next)]);
        for batch in held {
            self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
            batch.fail(&BoardError::Gone);
        }
        for cmd in std::mem::take(&mut self.deferred) {
            if let BoardCmd::HttpUpdate { reply, .. } = cmd {
                let _ = reply.send(Err(BoardError::Gone));
            }
        }
        self.deferred_bytes = 0;
        self.gapped.clear();
        self.waiting.clear();
        if let Some((_, after)) = self.saving.take() {
            after.refuse(&BoardError::Gone);
        }
        for peer in self.peers.take_all() {
            peer.link.close(reason);
        }
        self.stopped = true;
    }

    /// Moves the batches after `batch` whose commits are answered already (they were in the
    /// same group, mostly) into it, so that they are released together: each peer then gets
    /// one merged update per group, not one per batch, however many batches a burst made.
    /// Returns the last sequence number committed, and the first later batch that failed.
    fn absorb_answered(
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
    fn release(&mut self, batch: Batch) {
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
    fn fail(&mut self, error: &CommitError, batch: Batch) {
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
        for cmd in std::mem::take(&mut self.deferred) {
            if let BoardCmd::HttpUpdate { reply, .. } = cmd {
                let _ = reply.send(Err(BoardError::CommitFailed));
            }
        }
        self.deferred_bytes = 0;
        self.gapped.clear();
        // Reads waiting are dropped: their callers ask again and reach the reloaded board.
        self.waiting.clear();
        if let Some((_, after)) = self.saving.take() {
            after.refuse(&BoardError::CommitFailed);
        }
        for peer in self.peers.take_all() {
            peer.link.close(CloseReason {
                code: close::INTERNAL,
                reason: "commit failed; reconnect",
            });
        }
        self.failing = true;
        self.stopped = self.in_flight.is_empty();
    }

    /// A commit answered after one failed: its HTTP writers learn the truth; nothing is shown
    /// (the connections are closed). The actor stops after the last answer.
    fn on_committed_while_failing(&mut self, batch: Batch, committed: bool) {
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

    /// [`Self::answer_waiting`], if anything waits and the doc can answer now.
    fn answer_waiting_if_ready(&mut self) {
        if self.can_answer() && !(self.waiting.is_empty() && self.deferred.is_empty()) {
            self.answer_waiting();
        }
    }

    /// Serves reads that waited for durable state, then the updates held back meanwhile. An
    /// edit or a version save among the reads makes the reads after it wait again.
    fn answer_waiting(&mut self) {
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

    /// Runs a server-side peer's edit on the doc (which holds only durable data). Its update
    /// is stored and broadcast to every connection; the reply waits for durability.
    fn run_edit(
        &mut self,
        edit: Box<dyn FnOnce(&Doc) -> ai_agent::Edited + Send>,
        reply: oneshot::Sender<Result<serde_json::Value, BoardError>>,
    ) {
        let limit = self.shared.config.board.max_board_bytes;
        if limit != 0 && self.size >= limit {
            self.shared.metrics.error(kind::BOARD_TOO_LARGE);
            let _ = reply.send(Err(BoardError::TooLarge(limit)));
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
                self.next.broadcasts.push((None, update));
                self.next.http.push(Waiter::with(reply, edited.result));
                self.dispatch();
            }
            _ => {
                let _ = reply.send(Ok(edited.result));
            }
        }
    }

    fn answer(&mut self, read: Read) {
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
    fn save_version(&mut self, meta: VersionMeta, after: AfterSave) {
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

    fn on_saved(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
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

    fn on_awareness(&mut self, conn: ConnId, update: AwarenessUpdate, frame: &Bytes) {
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
                if let Some(frame) = applied.frame {
                    // Echoed to everyone, the sender included: it keeps clients' watchdogs
                    // quiet.
                    self.broadcast(&frame, None);
                }
            }
            Err(e) if e.is_limit() => {
                info!(board = %self.id, conn, error = %e, "closing: awareness over its limits");
                self.shared.metrics.error(kind::AWARENESS_LIMIT);
                self.close_peer(conn, close::TOO_LARGE, "awareness over its limits");
            }
            Err(e) => {
                debug!(board = %self.id, conn, error = %e, "bad awareness update");
                self.close_peer(conn, close::BAD_MESSAGE, "bad awareness update");
            }
        }
    }

    fn send(&mut self, conn: ConnId, frame: Bytes) {
        let undelivered = self.peers.send(conn, frame, &self.shared.metrics);
        self.settle(undelivered);
    }

    /// Sends `frame` to every peer except `skip`. A peer whose queue is full is closed, never
    /// silently skipped: it resyncs when it reconnects.
    fn broadcast(&mut self, frame: &Bytes, skip: Option<ConnId>) {
        let undelivered = self.peers.broadcast(frame, skip, &self.shared.metrics);
        self.settle(undelivered);
    }

    /// Closes the connections a frame could not be queued for.
    fn settle(&mut self, undelivered: impl IntoIterator<Item = Undelivered>) {
        for failed in undelivered {
            match failed {
                Undelivered::TooSlow(conn) => {
                    info!(board = %self.id, conn, "closing a connection too slow to keep up");
                    self.shared.metrics.error(kind::TOO_SLOW);
                    self.close_peer(conn, close::TOO_SLOW, "too slow; reconnect");
                }
                Undelivered::Closed(conn) => self.remove_peer(conn),
            }
        }
    }

    fn close_peer(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if let Some(peer) = self.peers.get(conn) {
            peer.link.close(CloseReason { code, reason });
        }
        self.remove_peer(conn);
    }

    /// Forgets a connection and clears the awareness states it controlled, for everyone else.
    fn remove_peer(&mut self, conn: ConnId) {
        if self.peers.remove(conn).is_none() {
            return;
        }
        self.gapped.retain(|g| g.conn != conn);
        if self.peers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        if let Some(frame) = self.presence.remove_conn(conn) {
            self.broadcast(&frame, None);
        }
    }

    /// Saves an automatic version now (in the background) if anything changed since the last
    /// one, from durable state only: the doc if it holds nothing undurable, otherwise the
    /// stored rows. It counts as taken once it is saved.
    fn checkpoint(&mut self, reason: &'static str) {
        if self.last_seq <= self.checkpoint_seq || self.checkpoint.is_some() {
            return;
        }
        let source = self.durable_source();
        let meta = maintenance::automatic(reason);
        self.checkpoint = Some(maintenance::save_version(
            &self.shared,
            &self.id,
            source,
            meta,
        ));
    }

    fn on_checkpointed(&mut self, result: Result<VersionInfo, maintenance::JobError>) {
        match result {
            Ok(info) => {
                self.checkpoint_seq = self.checkpoint_seq.max(info.covers_seq);
                self.checkpoint_at = Instant::now();
            }
            Err(e) => {
                // Tried again after another interval (or as many rows) at the latest.
                warn!(board = %self.id, error = %e, "automatic version failed");
                self.checkpoint_at = Instant::now();
            }
        }
    }

    /// Starts a background compaction once the log after the snapshot passes a threshold, from
    /// durable state only (see [`maintenance`]).
    fn maybe_compact(&mut self) {
        let config = &self.shared.config.board;
        let rows = self.last_seq - self.snapshot_seq;
        let due =
            rows >= config.compact_rows || (rows > 0 && self.log_bytes >= config.compact_bytes);
        if self.compaction.is_some() || !due || self.last_seq < self.compaction_retry_at {
            return;
        }
        self.compaction_bytes = self.log_bytes;
        let source = self.durable_source();
        self.compaction = Some(maintenance::compact(&self.shared, &self.id, source));
    }

    /// Where durable state comes from now: the doc, if it holds exactly the stored rows up to
    /// `last_seq` (nothing in flight, no rows of another writer unread), else the stored rows.
    fn durable_source(&self) -> Source {
        if self.is_quiescent() && self.is_complete() {
            Source::Doc {
                state: self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
                seq: self.last_seq,
            }
        } else {
            Source::Stored
        }
    }

    fn on_compacted(&mut self, result: Result<Option<CompactionStats>, maintenance::JobError>) {
        match result {
            Ok(Some(stats)) => {
                debug!(board = %self.id, upto = stats.snapshot_seq, rows = stats.rows_deleted, bytes = stats.snapshot_bytes, "compacted");
                self.snapshot_seq = self.snapshot_seq.max(stats.snapshot_seq);
                self.log_bytes = self.log_bytes.saturating_sub(self.compaction_bytes);
                self.size = stats.snapshot_bytes + self.log_bytes;
                self.shared.metrics.compactions.inc();
            }
            Ok(None) => {}
            Err(e) => {
                warn!(board = %self.id, error = %e, "compaction failed; retrying later");
                self.shared.metrics.error(kind::COMPACTION_FAILED);
                self.compaction_retry_at = self.last_seq + self.shared.config.board.compact_rows;
            }
        }
    }
}

impl AfterSave {
    /// Answers the caller that waited for the save with `error`.
    fn refuse(self, error: &BoardError) {
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
