//! The board actor: the task that owns a board's doc and does what the durability pipeline
//! ([`super::pipeline`]) and the upkeep policy ([`super::policy`]) decide. See the module docs
//! of [`super`] for the durability rules and limits.
//!
//! - `load`: loading a board;
//! - `commands`: dispatching commands;
//! - `effects`: doing what the pipeline decided (submit, release, fail, answer, apply);
//! - `apply`: updates, restores and the server's own edits, up to the pipeline;
//! - `reads`: reads from durable state, and versions saved with every change held back;
//! - `peers`: connections, awareness, sending, closing;
//! - `upkeep`: automatic versions and compaction;
//! - `nodes`: what other nodes say about the board (their rows, presence, the deletion).

mod apply;
mod commands;
mod effects;
mod load;
mod nodes;
mod peers;
mod reads;
#[cfg(test)]
mod tests;
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
use self::load::{LoadedState, load};
use self::reads::AfterSave;
use super::batch::{Batch, Outgoing, Waiter};
use super::fanout::{Peers, Undelivered};
use super::maintenance::{self, Job, Source};
use super::peer::{CloseReason, ConnId, Peer};
use super::pipeline::{CommitError, Effect, HeldUpdate, Limits, Pipeline, WaitingRead};
use super::policy::{Due, Size, Upkeep};
use super::presence::Presence;
use super::registry::Shared;
use super::{BoardCmd, BoardError, Read, Step1Answer, VersionMeta};
use crate::cluster::{Inbound, Subscription};
use crate::commit::CommitRequest;
use crate::ids::{BoardId, Seq};
use crate::metrics::kind;
use crate::protocol;
use crate::refusal::Refusal;
use crate::storage::replay::{ReplayError, ReplayStats, replay_with_nesting};
use crate::storage::{CompactionStats, StorageError, VersionInfo, VersionKind};

type CommitReply = oneshot::Receiver<Result<Seq, Arc<StorageError>>>;

/// Batches of one board sent to the committer and not yet answered, at most. Each update goes
/// out as soon as it is applied and joins the next group the committer starts. Were only one
/// batch in flight, an update arriving just after one went out would wait for that commit,
/// then for a whole paced group of its own: at 4,000 updates/s on one board, p50 3.2 ms
/// instead of 1.9 (BENCHMARKS.md). The committer answers a board's batches in order.
const MAX_IN_FLIGHT: usize = 64;

impl WaitingRead for Read {
    fn step1_of(&self) -> Option<ConnId> {
        match self {
            Read::SyncStep1 { conn, .. } => Some(*conn),
            _ => None,
        }
    }
}

impl HeldUpdate for BoardCmd {
    fn bytes(&self) -> usize {
        match self {
            BoardCmd::Update { raw, .. } | BoardCmd::HttpUpdate { raw, .. } => raw.len(),
            _ => 0,
        }
    }
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
    /// What is durable, what waits, and what to do next.
    pipeline: Pipeline<Read, BoardCmd>,
    /// The committer's answers for the pipeline's batches in flight, oldest first.
    replies: VecDeque<CommitReply>,
    size: Size,
    upkeep: Upkeep,
    compaction: Option<Job<Option<CompactionStats>>>,
    /// An automatic version being saved.
    checkpoint: Option<Job<VersionInfo>>,
    /// A version being saved while every change waits, and what follows it.
    saving: Option<(Job<VersionInfo>, AfterSave)>,
    /// Updates waiting for clocks they skip, in arrival order.
    gapped: Vec<Gapped>,
    /// Rows other writers committed, being read to catch up.
    healing: Option<Job<Vec<Vec<u8>>>>,
    /// What other nodes say about the board (`None` on a node alone).
    subscription: Option<Subscription>,
    /// The board's last sequence number being read from the database (other nodes' messages
    /// may have been lost).
    checking: Option<Job<Option<Seq>>>,
    idle_since: Option<Instant>,
    /// The board is being deleted: answered, and the actor stops, once nothing is in flight.
    deleting: Option<oneshot::Sender<()>>,
    /// Set when the actor must stop at the end of this iteration.
    stopped: bool,
    /// The sync step 2 answering an empty state vector (a client joining with nothing): encoded
    /// once and shared by every such joiner until the doc changes (see [`FullState`]).
    full_state: FullState,
}

/// The board's whole state as one sync step 2 frame, shared (`Bytes`) by every connection that
/// joins with an empty state vector while the doc does not change: 50 clients opening a 50 MB
/// board at once queue one encoding, not 50 (BENCHMARKS.md, issue 19). The doc counts its
/// changing transactions; a frame encoded at an older count is stale.
#[derive(Debug)]
struct FullState {
    /// Changing transactions of the doc so far (bumped by an observer on the doc).
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the observer is registered (if not, the frame is never reused).
    observed: bool,
    /// The frame, the count it was encoded at, and the length of the update inside it.
    frame: Option<(u64, Bytes, usize)>,
}

impl FullState {
    /// Counts the doc's changes from now on, starting from `loaded`: the doc's whole state as
    /// the load encoded it to measure the board (the first joiner takes it).
    fn new(doc: &Doc, loaded: LoadedState) -> Self {
        let changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = changes.clone();
        let observed = doc
            .observe_after_transaction("full-state", move |txn| {
                if txn.before_state() != txn.after_state() || !txn.delete_set().is_empty() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .is_ok();
        Self {
            changes,
            observed,
            frame: Some((0, loaded.frame, loaded.update_len)),
        }
    }

    /// The sync step 2 of the doc's whole state: the shared frame if the doc has not changed
    /// since it was encoded (and the observer is in place), otherwise a fresh one, kept.
    fn frame(&mut self, doc: &Doc) -> Bytes {
        self.current(doc).0
    }

    /// The doc's whole state as an update (for a snapshot or a version): a slice of the shared
    /// frame, so a compaction and the joiners of a large board hold one encoding between them.
    fn state(&mut self, doc: &Doc) -> Bytes {
        let (frame, update_len) = self.current(doc);
        frame.slice(frame.len() - update_len..)
    }

    fn current(&mut self, doc: &Doc) -> (Bytes, usize) {
        let now = self.changes.load(std::sync::atomic::Ordering::Relaxed);
        if self.observed
            && let Some((at, frame, update_len)) = &self.frame
            && *at == now
        {
            return (frame.clone(), *update_len);
        }
        self.frame = None; // dropped before the new one is encoded
        let (frame, update_len) = protocol::sync_step2_of(&doc.transact(), &StateVector::default());
        self.frame = Some((now, frame.clone(), update_len));
        (frame, update_len)
    }

    /// Lets the shared frame go when no connection's queue holds it any more (it is only a
    /// cache: the next joiner encodes it again).
    fn release_unused(&mut self) {
        if self.frame.as_ref().is_some_and(|(_, f, _)| f.is_unique()) {
            self.frame = None;
        }
    }
}

/// Runs a board actor: loads the board, then serves commands until evicted, deleted, failed
/// or shut down. Always removes itself from the registry before returning.
pub(super) async fn run(
    shared: Arc<Shared>,
    id: BoardId,
    actor_id: u64,
    mut rx: mpsc::Receiver<BoardCmd>,
) {
    // Before loading: what other nodes commit meanwhile is either in what is loaded or
    // heard of (rows already loaded are recognised by their sequence numbers).
    let subscription = shared.cluster.subscribe(&id);
    let (doc, nesting, stats, full_state) = match load(&shared, &id).await {
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
    let config = &shared.config.board;
    let limits = Limits {
        max_in_flight: MAX_IN_FLIGHT,
        max_waiting_reads: config.max_waiting_reads,
        max_deferred_bytes: config.max_deferred_bytes,
    };
    let mut actor = BoardActor {
        size: Size::new(full_state.update_len as u64, config.max_board_bytes),
        full_state: FullState::new(&doc, full_state),
        presence: Presence::new(doc.clone()),
        pipeline: Pipeline::new(limits, stats.last_seq),
        replies: VecDeque::new(),
        upkeep: Upkeep::new(
            stats.snapshot_seq,
            stats.log_bytes as u64,
            checkpoint_seq,
            Instant::now(),
        ),
        id,
        actor_id,
        doc,
        nesting,
        peers: Peers::default(),
        compaction: None,
        checkpoint: None,
        saving: None,
        gapped: Vec::new(),
        healing: None,
        subscription,
        checking: None,
        idle_since: Some(Instant::now()),
        deleting: None,
        stopped: false,
        shared,
    };
    actor.shared.metrics.boards_loaded.inc();
    actor.maybe_compact();
    actor.serve(&mut rx).await;
    actor.shared.metrics.boards_loaded.dec();
    actor.shared.remove_if(&actor.id, actor.actor_id);
    refuse_all(&mut rx, &BoardError::Gone);
}

/// Answers every queued command with `error`. [`BoardError::Gone`] is not sent but shown by
/// dropping the reply: callers then ask the registry again and reach a new actor.
fn refuse_all(rx: &mut mpsc::Receiver<BoardCmd>, error: &BoardError) {
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        if !matches!(error, BoardError::Gone) {
            cmd.refuse(error);
        }
    }
}

/// Resolves with the answer to the oldest commit in flight (never, if none is).
async fn commit_done(replies: &mut VecDeque<CommitReply>) -> Result<Seq, CommitError> {
    match replies.front_mut() {
        Some(reply) => match reply.await {
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

/// The next message from other nodes (never, on a node alone).
async fn from_nodes(subscription: &mut Option<Subscription>) -> Option<Inbound> {
    match subscription {
        Some(sub) => sub.recv().await,
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
            let taking = !draining && self.deleting.is_none() && !self.pipeline.is_failing();
            tokio::select! {
                biased;
                first = commit_done(&mut self.replies) => self.on_committed(first),
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
                result = maintenance::finished(&mut self.checking) => {
                    self.checking = None;
                    match result {
                        Ok(Some(last)) => self.behind(last),
                        Ok(None) => self.on_cluster(Inbound::Deleted),
                        Err(e) => debug!(board = %self.id, error = %e, "cannot check the board's stored rows"),
                    }
                }
                Some(message) = from_nodes(&mut self.subscription), if !draining && !self.pipeline.is_failing() => {
                    self.on_cluster(message);
                }
                () = shutdown.cancelled(), if !draining => {
                    draining = true;
                    self.drain(rx);
                }
                cmd = rx.recv(), if taking => match cmd {
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
            self.run_effects();
            self.full_state.release_unused();
            let answered = self.pipeline.is_answered();
            if self.deleting.is_some() && answered {
                if let Some(reply) = self.deleting.take() {
                    let _ = reply.send(());
                }
                break;
            }
            if self.stopped || (draining && answered && self.compaction.is_none()) {
                break;
            }
        }
    }

    /// Shutdown: stop taking commands, but apply every update already received so that it is
    /// committed before the actor stops.
    fn drain(&mut self, rx: &mut mpsc::Receiver<BoardCmd>) {
        self.shared.remove_if(&self.id, self.actor_id);
        rx.close();
        for read in self.pipeline.drain() {
            read.refuse(&BoardError::Gone);
        }
        self.run_effects();
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                BoardCmd::Update { .. } | BoardCmd::HttpUpdate { .. } => self.handle(cmd),
                other => other.refuse(&BoardError::Gone),
            }
            self.run_effects();
        }
    }

    /// When the board may be evicted: idle, with no one connected, nothing waiting, flying or
    /// being read (the pipeline is settled), and no compaction running.
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.peers.is_empty() && self.pipeline.is_settled() && self.compaction.is_none();
        idle.then_some(self.idle_since?)
            .map(|since| since + self.shared.config.board.idle_timeout)
    }
}
