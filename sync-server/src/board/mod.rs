//! Board actors: one task owns each loaded board's `yrs::Doc` and awareness.
//!
//! # Layout
//!
//! - [`registry`]: atomic get-or-spawn of actors, and their removal when they stop.
//! - `actor`: the actor loop: applies updates, sends them to the group committer, releases
//!   broadcasts and acknowledgements only once durable, answers reads, compacts, evicts itself.
//! - `pipeline`: the durability pipeline as a state machine without I/O: when updates are
//!   submitted and released, when reads are answered, what a failed commit fails.
//! - `policy`: when compaction and automatic versions are due, and the board size rule.
//! - `batch`: what waits on one commit.
//! - `fanout`: the board's connections and sending frames to them.
//! - `maintenance`: compaction and versions as tracked background jobs.
//! - [`peer`]: a connection as the actor sees it, and the close codes.
//!
//! # Durable before broadcast
//!
//! An update is applied to the actor's doc at once (to validate it and to compute exactly
//! what is new), but everything that would let another peer see it (the broadcast, a sync
//! step 2 answer, an HTTP read) waits until the commit holding it succeeds. Reads that arrive
//! while updates are still in flight wait for a moment when the doc holds only durable data;
//! new updates are held back meanwhile, so that moment comes within about two commits. If a
//! commit fails, every connection of the board is closed (clients keep their edits and resend
//! them when they reconnect) and the actor stops, so the board is reloaded from the database.

mod actor;
mod batch;
mod fanout;
pub(crate) mod link;
mod maintenance;
pub mod peer;
mod pipeline;
mod policy;
pub(crate) mod presence;
pub mod registry;

use std::time::Duration;

use bytes::Bytes;
use crdt_schema::restore::RestoreReport;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use yrs::sync::AwarenessUpdate;
use yrs::{StateVector, Update};

use self::peer::{ConnId, Outbound, Wants};
use crate::storage::{VersionInfo, VersionKind};

/// Who and why, for a version the board actor saves.
#[derive(Debug, Clone)]
pub(crate) struct VersionMeta {
    pub(crate) kind: VersionKind,
    pub(crate) label: Option<String>,
    pub(crate) author: Option<String>,
    pub(crate) reason: Option<String>,
}

/// Limits and thresholds of board actors.
#[derive(Debug, Clone)]
pub struct BoardConfig {
    /// Commands queued to one actor before senders wait.
    pub inbox: usize,
    /// How long a board with no connections stays loaded.
    pub idle_timeout: Duration,
    /// Compact once this many log rows follow the snapshot.
    pub compact_rows: i64,
    /// Compact once this many log bytes follow the snapshot.
    pub compact_bytes: u64,
    /// Save an automatic version once this many updates follow the last one (and when an
    /// idle board is evicted with changes since its last version).
    pub checkpoint_rows: i64,
    /// Save an automatic version when the board changed and the last one is this old.
    pub checkpoint_interval: Duration,
    /// Automatic versions kept per board; older ones are pruned. Named versions are kept.
    pub keep_auto_versions: u32,
    /// Largest a board may grow, in bytes of stored updates (approximate: the encoded state
    /// at load plus what was added since). An update that would pass it is refused. Zero: no
    /// limit.
    pub max_board_bytes: u64,
    /// Connections one board accepts at once. Zero: no limit.
    pub max_connections: usize,
    /// Reads (HTTP reads, versions, restores, the assistant's edits) that may wait for the
    /// board's durable state at once; past it a read is answered [`BoardError::Busy`] (503). A
    /// connection's repeated sync step 1 waits only once, so those are bounded by the
    /// connections.
    pub max_waiting_reads: usize,
    /// Bytes of updates the board holds back while reads wait for durable state; past it an
    /// update is refused (a WebSocket client is closed with 1013 and resends when it
    /// reconnects; an HTTP writer gets 503). One update of any size may always wait.
    pub max_deferred_bytes: usize,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            inbox: 1024,
            idle_timeout: Duration::from_secs(30),
            compact_rows: 2000,
            compact_bytes: 4 << 20,
            checkpoint_rows: 1000,
            checkpoint_interval: Duration::from_secs(600),
            keep_auto_versions: 50,
            max_board_bytes: 64 << 20,
            max_connections: 10_000,
            max_waiting_reads: 1024,
            max_deferred_bytes: 64 << 20,
        }
    }
}

/// Why a board operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BoardError {
    /// The board does not exist (and the request does not create boards).
    #[error("board not found")]
    NotFound,
    /// The board was deleted, and connecting does not bring it back.
    #[error("board was deleted")]
    Deleted,
    /// The board could not be loaded; the reason is logged.
    #[error("board could not be loaded")]
    LoadFailed,
    /// The update did not apply.
    #[error("update rejected: {0}")]
    Rejected(String),
    /// Committing failed; nothing was acknowledged. The reason is logged.
    #[error("the update could not be stored")]
    CommitFailed,
    /// The update would make the board larger than its limit.
    #[error("the board would exceed its size limit of {0} bytes")]
    TooLarge(u64),
    /// The board has as many connections as it accepts.
    #[error("the board has too many connections")]
    Full,
    /// The actor stopped (evicted, shutting down or failed); try again.
    #[error("board actor stopped")]
    Gone,
    /// The update nests values or shared types deeper than the limit.
    #[error("{0}")]
    TooDeep(crdt_schema::guard::GuardError),
    /// The board has as many requests waiting as it holds; try again shortly.
    #[error("the board is busy; try again")]
    Busy,
}

/// How a client's sync step 1 is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step1Answer {
    /// With a sync step 2 (y-websocket: the board's step 1 went out when it joined).
    Step2,
    /// With a sync step 2, then the board's own step 1, so that the client answers with what
    /// the board lacks (Hocuspocus providers count on it after each of their step 1s).
    Step2AndStep1,
}

/// A read served from durable state.
pub(crate) enum Read {
    /// A client's sync step 1: answer on its connection.
    SyncStep1 {
        conn: ConnId,
        sv: StateVector,
        answer: Step1Answer,
    },
    /// Whether the board already holds everything in `update` (all its blocks and deletions):
    /// document content from a read-only connection, never applied, only compared. `held` is
    /// its share of the connection's budget of bytes waiting, given back with the answer.
    Holds {
        update: Update,
        held: OwnedSemaphorePermit,
        reply: oneshot::Sender<bool>,
    },
    /// The whole board as a Yjs update v1.
    State {
        reply: oneshot::Sender<Result<Vec<u8>, BoardError>>,
    },
    /// The board as typed JSON (crdt-schema view).
    Json {
        reply: oneshot::Sender<Result<crdt_schema::Board, BoardError>>,
    },
    /// Saves the board's state now as a version, holding every change back until it is
    /// saved, so that the version is exactly the state at this point of the board's history.
    SaveVersion {
        meta: VersionMeta,
        reply: oneshot::Sender<Result<VersionInfo, BoardError>>,
    },
    /// Restores the board to `target` (a full state, Yjs update v1) as one forward change with
    /// origin `origin`, after saving the state before it as the version `before` (atomically:
    /// no change lands between the two). `reply` resolves once the restore is durable.
    Restore {
        target: Vec<u8>,
        /// The target is a version the board had (parts of it still waiting for dependencies
        /// when it was saved are left out), not an upload (which must be a complete state).
        from_version: bool,
        origin: String,
        before: VersionMeta,
        reply: oneshot::Sender<Result<(RestoreReport, VersionInfo), BoardError>>,
    },
    /// A server-side peer (the assistant) runs `edit` against the live doc, which then holds
    /// only durable data. An update it returns is stored and broadcast to every connection
    /// like any other; `reply` resolves with the edit's result once that is durable (at once
    /// for reads).
    Edit {
        edit: Box<dyn FnOnce(&yrs::Doc) -> ai_agent::Edited + Send>,
        reply: oneshot::Sender<Result<serde_json::Value, BoardError>>,
    },
}

/// Answers `reply` with `error`.
fn refuse<T>(reply: oneshot::Sender<Result<T, BoardError>>, error: &BoardError) {
    let _ = reply.send(Err(error.clone()));
}

impl Read {
    /// Answers the read with `error` (a sync step 1 has no one to answer).
    pub(crate) fn refuse(self, error: &BoardError) {
        match self {
            Read::SyncStep1 { .. } | Read::Holds { .. } => {}
            Read::State { reply } => refuse(reply, error),
            Read::Json { reply } => refuse(reply, error),
            Read::SaveVersion { reply, .. } => refuse(reply, error),
            Read::Restore { reply, .. } => refuse(reply, error),
            Read::Edit { reply, .. } => refuse(reply, error),
        }
    }
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Read::SyncStep1 { .. } => "SyncStep1",
            Read::Holds { .. } => "Holds",
            Read::State { .. } => "State",
            Read::Json { .. } => "Json",
            Read::SaveVersion { .. } => "SaveVersion",
            Read::Restore { .. } => "Restore",
            Read::Edit { .. } => "Edit",
        })
    }
}

/// Commands a board actor accepts.
#[derive(Debug)]
pub(crate) enum BoardCmd {
    /// A connection joins; the actor sends it every awareness state, and sync step 1 if it
    /// wants it now ([`Wants::step1_on_join`]).
    Join {
        conn: ConnId,
        link: Outbound,
        wants: Wants,
        identity: presence::Identity,
        reply: oneshot::Sender<Result<(), BoardError>>,
    },
    /// A connection left (or was closed).
    Leave { conn: ConnId },
    /// Document content from a connection. `held` is the connection's budget of uncommitted
    /// bytes that this update takes until its commit is answered.
    Update {
        conn: ConnId,
        update: Update,
        raw: Vec<u8>,
        /// What the guard read of it (its values are checked; how it nests here is not yet).
        scanned: crdt_schema::guard::Scanned,
        held: OwnedSemaphorePermit,
    },
    /// Document content from the HTTP API (Yjs update v1, decoded by the actor); `reply`
    /// resolves once durable.
    HttpUpdate {
        raw: Vec<u8>,
        reply: oneshot::Sender<Result<(), BoardError>>,
    },
    /// An awareness update from a connection, with the frame it came in.
    Awareness {
        conn: ConnId,
        update: AwarenessUpdate,
        frame: Bytes,
    },
    /// A connection asks for every awareness state.
    QueryAwareness { conn: ConnId },
    /// A stateless message (an application's signal, never stored): `frame` (see
    /// [`crate::protocol::stateless`]) goes to every connection that takes them, except `from`.
    /// `reply`, if any, learns to how many.
    Stateless {
        from: Option<ConnId>,
        frame: Bytes,
        reply: Option<oneshot::Sender<usize>>,
    },
    /// Shows (Some: the state as JSON) or clears (None) the server's own awareness entry,
    /// which stands for the assistant while a run works.
    ServerPresence {
        state: Option<String>,
        reply: oneshot::Sender<()>,
    },
    /// A read from durable state.
    Read(Read),
    /// Close every connection with `reason` and stop (the board is being deleted).
    Shutdown {
        reason: peer::CloseReason,
        reply: oneshot::Sender<()>,
    },
}

impl BoardCmd {
    /// Answers the command with `error` if someone waits for an answer (a joining connection,
    /// an HTTP writer, a read); others are dropped.
    pub(crate) fn refuse(self, error: &BoardError) {
        match self {
            BoardCmd::Join { reply, .. } | BoardCmd::HttpUpdate { reply, .. } => {
                refuse(reply, error);
            }
            BoardCmd::Read(read) => read.refuse(error),
            _ => {}
        }
    }
}
