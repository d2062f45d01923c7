//! The board actor loop. See the module docs of [`super`] for the durability rules.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use crdt_schema::restore::RestoreReport;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use yrs::sync::AwarenessUpdate;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use super::batch::{Batch, Outgoing, Waiter};
use super::peer::{CloseReason, ConnId, Delivery, Peer, close};
use super::presence::Presence;
use super::registry::Shared;
use super::{BoardCmd, BoardError, Read};
use crate::commit::CommitRequest;
use crate::ids::{BoardId, Seq};
use crate::metrics::kind;
use crate::protocol;
use crate::storage::replay::replay_into;
use crate::storage::{CompactionStats, NewSnapshot, NewVersion, StorageError, VersionKind};

type CommitReply = oneshot::Receiver<Result<Seq, Arc<StorageError>>>;

/// Batches of one board sent to the committer and not yet answered, at most. Each update goes
/// out as soon as it is applied and joins the next group the committer starts. Were only one
/// batch in flight, an update arriving just after one went out would wait for that commit, then
/// for a whole paced group of its own: at 4,000 updates/s on one board, p50 3.2 ms instead of
/// 1.9 (BENCHMARKS.md). The committer answers a board's batches in order, so they are released
/// in order. The bound only matters when commits stall: past it, updates gather in `next`.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug)]
struct InFlight {
    batch: Batch,
    reply: CommitReply,
}

#[derive(Debug)]
struct Compaction {
    upto: Seq,
    bytes_at_start: u64,
    reply: oneshot::Receiver<Result<CompactionStats, StorageError>>,
}

#[derive(Debug)]
struct BoardActor {
    id: BoardId,
    actor_id: u64,
    shared: Arc<Shared>,
    doc: Doc,
    presence: Presence,
    peers: HashMap<ConnId, Peer>,
    /// Sent to the committer and not yet durable, oldest first; at most [`MAX_IN_FLIGHT`].
    in_flight: VecDeque<InFlight>,
    /// Applied and not yet sent to the committer: goes out as soon as fewer than
    /// [`MAX_IN_FLIGHT`] batches are in flight.
    next: Batch,
    /// Reads waiting for the doc to hold only durable data.
    waiting: Vec<Read>,
    /// Updates held back while reads wait.
    deferred: VecDeque<BoardCmd>,
    last_seq: Seq,
    snapshot_seq: Seq,
    /// Log bytes appended since the snapshot (approximate across restarts: counted on load).
    log_bytes: u64,
    /// The board's size for its limit: the encoded state at load (or at the last compaction)
    /// plus every update stored since.
    size: u64,
    compaction: Option<Compaction>,
    /// Don't try compacting again before the log reaches this sequence (after a failure).
    compaction_retry_at: Seq,
    /// The sequence the newest automatic version covers.
    checkpoint_seq: Seq,
    /// When the newest automatic version was taken (or the board loaded).
    checkpoint_at: Instant,
    idle_since: Option<Instant>,
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
    let loaded = load(&shared, &id).await;
    let (doc, stats, size) = match loaded {
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
        presence,
        peers: HashMap::new(),
        in_flight: VecDeque::new(),
        next: Batch::default(),
        waiting: Vec::new(),
        deferred: VecDeque::new(),
        last_seq: stats.last_seq,
        snapshot_seq: stats.snapshot_seq,
        log_bytes: stats.log_bytes as u64,
        size,
        compaction: None,
        compaction_retry_at: 0,
        checkpoint_seq,
        checkpoint_at: Instant::now(),
        idle_since: Some(Instant::now()),
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
) -> Result<(Doc, crate::storage::replay::ReplayStats, u64), BoardError> {
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
        let stats = replay_into(&doc, &stored)?;
        let size = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len() as u64;
        Ok::<_, crate::storage::replay::ReplayError>((doc, stats, size))
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))?;
    debug!(board = %id, rows, "board loaded");
    Ok(replayed)
}

/// Answers every queued command with `error` (or by dropping its reply).
fn refuse_all(rx: &mut mpsc::Receiver<BoardCmd>, error: &BoardError) {
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        match cmd {
            BoardCmd::Join { reply, .. } | BoardCmd::HttpUpdate { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            BoardCmd::Restore { reply, .. } => {
                let _ = reply.send(Err(error.clone()));
            }
            _ => {}
        }
    }
}

async fn commit_done(in_flight: &mut VecDeque<InFlight>) -> Result<Seq, String> {
    match in_flight.front_mut() {
        Some(f) => match (&mut f.reply).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the committer stopped".into()),
        },
        None => std::future::pending().await,
    }
}

async fn compaction_done(compaction: &mut Option<Compaction>) -> Result<CompactionStats, String> {
    match compaction {
        Some(c) => match (&mut c.reply).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the compaction task stopped".into()),
        },
        None => std::future::pending().await,
    }
}

async fn idle_expired(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
                result = compaction_done(&mut self.compaction) => self.on_compacted(result),
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    self.drain(rx);
                }
                cmd = rx.recv(), if !draining => match cmd {
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
            if self.stopped {
                break;
            }
            if draining && self.in_flight.is_empty() && self.compaction.is_none() {
                break;
            }
        }
    }

    /// Shutdown: stop taking commands, but apply every update already received so that it is
    /// committed before the actor stops.
    fn drain(&mut self, rx: &mut mpsc::Receiver<BoardCmd>) {
        self.shared.remove_if(&self.id, self.actor_id);
        rx.close();
        self.waiting.clear();
        let mut pending: VecDeque<BoardCmd> = std::mem::take(&mut self.deferred);
        while let Ok(cmd) = rx.try_recv() {
            pending.push_back(cmd);
        }
        for cmd in pending {
            match cmd {
                BoardCmd::Update { .. }
                | BoardCmd::HttpUpdate { .. }
                | BoardCmd::Restore { .. } => {
                    self.handle(cmd);
                }
                BoardCmd::Join { reply, .. } => {
                    let _ = reply.send(Err(BoardError::Gone));
                }
                _ => {}
            }
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.peers.is_empty()
            && self.is_quiescent()
            && self.waiting.is_empty()
            && self.compaction.is_none();
        idle.then_some(self.idle_since?)
            .map(|since| since + self.shared.config.board.idle_timeout)
    }

    /// The doc holds nothing that is not durable.
    fn is_quiescent(&self) -> bool {
        self.in_flight.is_empty() && self.next.updates.is_empty()
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
            cmd @ (BoardCmd::Update { .. }
            | BoardCmd::HttpUpdate { .. }
            | BoardCmd::Restore { .. })
                if !self.waiting.is_empty() =>
            {
                self.deferred.push_back(cmd);
            }
            BoardCmd::Update { conn, update, raw } => self.apply(Some(conn), update, raw, None),
            BoardCmd::HttpUpdate { raw, reply } => match protocol::decode_update(&raw) {
                Ok(update) => self.apply(None, update, raw, Some(Waiter::reply(reply))),
                Err(e) => {
                    let _ = reply.send(Err(BoardError::Rejected(e.to_string())));
                }
            },
            BoardCmd::Restore {
                target,
                origin,
                reply,
            } => self.restore(&target, &origin, reply),
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
            BoardCmd::Read(read) => {
                if self.is_quiescent() {
                    self.answer(read);
                } else {
                    self.waiting.push(read);
                }
            }
            BoardCmd::Shutdown { reason, reply } => {
                for peer in self.peers.values() {
                    peer.link.close(reason);
                }
                self.peers.clear();
                self.shared.remove_if(&self.id, self.actor_id);
                self.stopped = true;
                let _ = reply.send(());
            }
        }
    }

    /// Applies an update to the doc and queues what must follow once it is durable.
    fn apply(
        &mut self,
        origin: Option<ConnId>,
        update: Update,
        raw: Vec<u8>,
        http: Option<Waiter>,
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
        let metrics = &self.shared.metrics;
        metrics.updates_received.inc();
        metrics.update_bytes_received.inc_by(raw.len() as u64);
        let message_no = origin.and_then(|c| self.peers.get_mut(&c)).map(|p| {
            p.doc_messages += 1;
            p.doc_messages
        });
        let (result, delta, had_pending, pending) = {
            let mut txn = self.doc.transact_mut_with(origin.unwrap_or(0));
            let had_pending = txn.has_missing_updates();
            let result = txn.apply_update(update);
            let delta = txn.encode_update_v1();
            let pending = txn.has_missing_updates();
            (result, delta, had_pending, pending)
        };
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
        if changed {
            // The sender has this content, unless it completed updates that were pending.
            let skip = if had_pending { None } else { origin };
            batch.broadcasts.push((skip, delta));
        }
        if let (Some(conn), Some(n), false) = (origin, message_no, rejected) {
            batch.acks.insert(conn, n);
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
    /// rules), committed and broadcast like any update.
    fn restore(
        &mut self,
        target: &[u8],
        origin: &str,
        reply: oneshot::Sender<Result<RestoreReport, BoardError>>,
    ) {
        let (result, delta) = {
            let mut txn = self.doc.transact_mut_with(origin);
            let result = crdt_schema::restore::restore_from_update_v1(&mut txn, target);
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
            self.hold(delta.clone());
            self.next.broadcasts.push((None, delta));
        }
        self.next.http.push(Waiter::with(reply, report));
        self.dispatch();
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
        let request = CommitRequest {
            board: self.id.clone(),
            updates: std::mem::take(&mut batch.updates),
            reply,
        };
        match self.shared.committer.submit(request) {
            Ok(()) => self.in_flight.push_back(InFlight { batch, reply: rx }),
            Err(_) => self.fail("the committer stopped", batch),
        }
    }

    fn on_committed(&mut self, result: Result<Seq, String>) {
        let Some(InFlight { mut batch, .. }) = self.in_flight.pop_front() else {
            return;
        };
        match result {
            Ok(seq) => {
                let (seq, failed) = self.absorb_answered(&mut batch, seq);
                self.last_seq = seq;
                self.log_bytes += batch.bytes;
                self.release(batch);
                if let Some((error, later)) = failed {
                    self.fail(&error, later);
                    return;
                }
                self.dispatch();
                if self.is_quiescent() && !self.waiting.is_empty() {
                    self.answer_waiting();
                }
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

    /// Moves the batches after `batch` whose commits are answered already (they were in the
    /// same group, mostly) into it, so that they are released together: each peer then gets
    /// one merged update per group, not one per batch, however many batches a burst made.
    /// Returns the last sequence number committed, and the first later batch that failed.
    fn absorb_answered(
        &mut self,
        batch: &mut Batch,
        mut seq: Seq,
    ) -> (Seq, Option<(String, Batch)>) {
        while let Some(front) = self.in_flight.front_mut() {
            let answer = match front.reply.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => break,
                Ok(Ok(seq)) => Ok(seq),
                Ok(Err(e)) => Err(e.to_string()),
                Err(oneshot::error::TryRecvError::Closed) => Err("the committer stopped".into()),
            };
            let Some(InFlight { batch: later, .. }) = self.in_flight.pop_front() else {
                break;
            };
            match answer {
                Ok(later_seq) => {
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
            if self.peers.get(&conn).is_some_and(|p| p.wants_acks) {
                self.send(conn, protocol::durable_ack(count));
            }
        }
        for waiter in batch.http {
            waiter.answer(Ok(()));
        }
    }

    /// A commit failed: nothing it held was shown to anyone. Close every connection so that
    /// clients resend on reconnect, and stop so the board reloads from the database.
    fn fail(&mut self, error: &str, batch: Batch) {
        warn!(board = %self.id, error, peers = self.peers.len(), "commit failed; closing the board's connections");
        // Later batches are failed with it, even one that may yet commit: none was shown to
        // anyone, and its senders resend on reconnect (a Yjs update applies once however
        // often it arrives).
        let later = std::mem::take(&mut self.in_flight)
            .into_iter()
            .map(|f| f.batch)
            .chain([std::mem::take(&mut self.next)]);
        for batch in [batch].into_iter().chain(later) {
            self.shared.metrics.pending_bytes.dec_by(batch.bytes as i64);
            batch.fail(&BoardError::CommitFailed);
        }
        for cmd in std::mem::take(&mut self.deferred) {
            match cmd {
                BoardCmd::HttpUpdate { reply, .. } => {
                    let _ = reply.send(Err(BoardError::CommitFailed));
                }
                BoardCmd::Restore { reply, .. } => {
                    let _ = reply.send(Err(BoardError::CommitFailed));
                }
                _ => {}
            }
        }
        for peer in self.peers.values() {
            peer.link.close(CloseReason {
                code: close::INTERNAL,
                reason: "commit failed; reconnect",
            });
        }
        self.peers.clear();
        self.waiting.clear();
        self.stopped = true;
    }

    /// Serves reads that waited for durable state, then the updates held back meanwhile. An
    /// edit among the reads makes the doc hold undurable data again: the reads after it wait
    /// for the next commit.
    fn answer_waiting(&mut self) {
        let mut reads = std::mem::take(&mut self.waiting).into_iter();
        while let Some(read) = reads.next() {
            if !self.is_quiescent() {
                self.waiting.push(read);
                self.waiting.extend(reads);
                return;
            }
            self.answer(read);
        }
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
                let update = self.doc.transact().encode_state_as_update_v1(&sv);
                self.send(conn, protocol::sync_step2(update));
            }
            Read::State { reply } => {
                let state = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let _ = reply.send(state);
            }
            Read::Snapshot { reply } => {
                let state = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                let _ = reply.send((state, self.last_seq));
            }
            Read::Json { reply } => {
                let board = crdt_schema::read_board(&self.doc.transact());
                let _ = reply.send(board);
            }
            Read::Edit { edit, reply } => self.run_edit(edit, reply),
        }
    }

    fn on_awareness(&mut self, conn: ConnId, update: AwarenessUpdate, frame: &Bytes) {
        let peers = &self.peers;
        let applied = self
            .presence
            .apply(conn, update, frame, |c| peers.get(&c).map(|p| &p.identity));
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
            Err(e) => {
                debug!(board = %self.id, conn, error = %e, "bad awareness update");
                self.close_peer(conn, close::BAD_MESSAGE, "bad awareness update");
            }
        }
    }

    fn send(&mut self, conn: ConnId, frame: Bytes) {
        let delivery = match self.peers.get(&conn) {
            Some(peer) => peer.offer(frame),
            None => return,
        };
        self.shared.metrics.frames_sent.inc();
        self.after_delivery(conn, delivery);
    }

    /// Sends `frame` to every peer except `skip`. A peer whose queue is full is closed, never
    /// silently skipped: it resyncs when it reconnects.
    fn broadcast(&mut self, frame: &Bytes, skip: Option<ConnId>) {
        let mut failed = Vec::new();
        let (mut sent, mut deepest) = (0u64, 0usize);
        for (conn, peer) in &self.peers {
            if Some(*conn) == skip {
                continue;
            }
            match peer.offer(frame.clone()) {
                Delivery::Queued(depth) => {
                    sent += 1;
                    deepest = deepest.max(depth);
                }
                other => failed.push((*conn, other)),
            }
        }
        let metrics = &self.shared.metrics;
        metrics.frames_sent.inc_by(sent);
        if sent > 0 {
            metrics.queue_depth.observe(deepest as f64);
        }
        for (conn, delivery) in failed {
            self.after_delivery(conn, delivery);
        }
    }

    fn after_delivery(&mut self, conn: ConnId, delivery: Delivery) {
        match delivery {
            Delivery::Queued(_) => {}
            Delivery::Full => {
                info!(board = %self.id, conn, "closing a connection too slow to keep up");
                self.shared.metrics.error(kind::TOO_SLOW);
                self.close_peer(conn, close::TOO_SLOW, "too slow; reconnect");
            }
            Delivery::Closed => self.remove_peer(conn),
        }
    }

    fn close_peer(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if let Some(peer) = self.peers.get(&conn) {
            peer.link.close(CloseReason { code, reason });
        }
        self.remove_peer(conn);
    }

    /// Forgets a connection and clears the awareness states it controlled, for everyone else.
    fn remove_peer(&mut self, conn: ConnId) {
        if self.peers.remove(&conn).is_none() {
            return;
        }
        if self.peers.is_empty() {
            self.idle_since = Some(Instant::now());
        }
        if let Some(frame) = self.presence.remove_conn(conn) {
            self.broadcast(&frame, None);
        }
    }

    /// Saves an automatic version of the board now (in the background) if anything changed
    /// since the last one, then applies retention.
    fn checkpoint(&mut self, reason: &'static str) {
        if self.last_seq <= self.checkpoint_seq {
            return;
        }
        let data = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (store, id, covers_seq) = (self.shared.store.clone(), self.id.clone(), self.last_seq);
        let keep = self.shared.config.board.keep_auto_versions;
        self.checkpoint_seq = covers_seq;
        self.checkpoint_at = Instant::now();
        let metrics = self.shared.metrics.clone();
        self.shared.tracker.spawn(async move {
            let version = NewVersion {
                kind: VersionKind::Auto,
                label: None,
                author: Some("server"),
                reason: Some(reason),
                covers_seq,
                data: &data,
            };
            let saved = store.save_version(&id, version).await;
            match saved {
                Ok(_) => {
                    metrics.versions_saved.inc();
                    if let Err(e) = store.prune_versions(&id, keep).await {
                        warn!(board = %id, error = %e, "version retention failed");
                    }
                }
                Err(e) => warn!(board = %id, error = %e, "automatic version failed"),
            }
        });
    }

    /// Starts a background compaction once the log after the snapshot passes a threshold.
    ///
    /// The snapshot is the doc's state now, which holds every committed row up to `last_seq`
    /// (and possibly updates still in flight: harmless, since applying an update twice
    /// changes nothing, and if their commit fails the board reloads from this snapshot).
    fn maybe_compact(&mut self) {
        let config = &self.shared.config.board;
        let rows = self.last_seq - self.snapshot_seq;
        let due =
            rows >= config.compact_rows || (rows > 0 && self.log_bytes >= config.compact_bytes);
        if self.compaction.is_some() || !due || self.last_seq < self.compaction_retry_at {
            return;
        }
        let data = self
            .doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (tx, reply) = oneshot::channel();
        let (store, id, upto) = (self.shared.store.clone(), self.id.clone(), self.last_seq);
        self.shared.tracker.spawn(async move {
            let result = match store
                .begin_compaction(&id, NewSnapshot { upto, data: &data })
                .await
            {
                Ok(pending) => pending.commit().await,
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
        });
        self.compaction = Some(Compaction {
            upto,
            bytes_at_start: self.log_bytes,
            reply,
        });
    }

    fn on_compacted(&mut self, result: Result<CompactionStats, String>) {
        let Some(c) = self.compaction.take() else {
            return;
        };
        match result {
            Ok(stats) => {
                debug!(board = %self.id, upto = c.upto, rows = stats.rows_deleted, bytes = stats.snapshot_bytes, "compacted");
                self.snapshot_seq = c.upto;
                self.log_bytes = self.log_bytes.saturating_sub(c.bytes_at_start);
                self.size = stats.snapshot_bytes + self.log_bytes;
                self.shared.metrics.compactions.inc();
            }
            Err(e) => {
                warn!(board = %self.id, error = %e, "compaction failed; retrying later");
                self.shared.metrics.error(kind::COMPACTION_FAILED);
                self.compaction_retry_at = self.last_seq + self.shared.config.board.compact_rows;
            }
        }
    }
}
