//! Several nodes serving the same boards: fan-out between nodes through Redis, healing from
//! the database.
//!
//! PostgreSQL is the only record. A node publishes to Redis only what it has committed (the
//! board's sequence numbers and the updates), after the commit; Redis carries hints, never
//! anything the database lacks. So "durable before visible" holds across nodes: a client on
//! another node sees an update only once it is committed.
//!
//! - **Holding a board.** A board actor subscribes to its board's channel while it runs
//!   ([`Cluster::subscribe`]; the [`Subscription`] unsubscribes when dropped), so a node
//!   receives only the boards it holds, and only while it has clients or work on them.
//! - **Healing.** Sequence numbers reveal a gap, and the actor reads the missing rows from the
//!   database (the board pipeline's `ReadRows`). A lost *last* message has no successor: every
//!   `heal_interval`, [`poll`] reads the last sequence number of every board this node holds
//!   in one query, and an actor behind reads what it lacks. After Redis comes back, every held
//!   board checks the database at once ([`Inbound::Resync`]). So a node whose Redis is down
//!   still serves its own clients durably, and converges from the database.
//! - **Presence.** Awareness updates of a node's connections go to the others, which show
//!   them to theirs; every node says it is alive on the nodes channel each second, and the
//!   presence of a node not heard from for `node_timeout` (or that said it was leaving) is
//!   cleared everywhere.
//! - **Deletion.** A node that deletes a board says so; the others close their clients of it
//!   (and a node that missed it finds the board gone at its next check).
//!
//! `link` runs the Redis side (a publisher and a subscriber task, each reconnecting with
//! backoff); `message` is the encoding; `poll` the database check.

mod link;
pub(crate) mod message;
mod poll;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use self::message::NodeId;
use self::message::{Body, Message};
use crate::ids::{BoardId, Seq};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How a node joins the others.
#[derive(Clone)]
pub struct ClusterConfig {
    /// Redis, for fan-out between nodes (`redis://` or `rediss://`; may hold a password:
    /// never printed).
    pub redis_url: String,
    /// Prefix of every Redis channel this deployment uses (several deployments can share one
    /// Redis).
    pub prefix: String,
    /// How often the database is checked for rows the boards this node holds lack (a lost
    /// last message has no successor to reveal the gap).
    pub heal_interval: Duration,
    /// A node not heard from for this long is gone: its clients' presence is cleared.
    pub node_timeout: Duration,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &crate::storage::redact(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("heal_interval", &self.heal_interval)
            .field("node_timeout", &self.node_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// Defaults for a Redis URL: prefix `boards`, a check of the database every 2 s, nodes
    /// gone after 3 s of silence.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            prefix: "boards".into(),
            heal_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(3),
        }
    }
}

/// A node id for this process: `base` (or the host's name) and a random suffix, so that a
/// node restarted under the same name is never taken for its previous run (whose presence
/// the others clear when it stops answering).
pub fn default_node_id(base: Option<&str>) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let base: String = base
        .unwrap_or(host.trim())
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(message::MAX_NODE_ID_LEN - 7)
        .collect();
    let base = if base.is_empty() { "node".into() } else { base };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}.{}", &suffix[..6])
}

/// Why the cluster link could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL does not parse (its text is not repeated: it may hold a password).
    #[error("REDIS_URL is not a valid Redis URL")]
    BadUrl,
    /// Fan-out between nodes needs a database all nodes share.
    #[error(
        "REDIS_URL is set but the database is {0}: several nodes need one PostgreSQL database \
         (DATABASE_URL=postgres://...); unset REDIS_URL to run one node on SQLite"
    )]
    NeedsPostgres(crate::storage::Backend),
    /// The node id is not 1 to 64 characters of `[A-Za-z0-9._-]`.
    #[error("the node id must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadNodeId,
}

/// What a board actor hears from other nodes about its board.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Rows another node committed, and their updates.
    Update {
        node: NodeId,
        rows: Vec<(Seq, u32)>,
        updates: Vec<Bytes>,
    },
    /// Another node's connections' presence changed.
    Awareness { node: NodeId, update: Bytes },
    /// Another node started holding the board and asks for the presence of this node's
    /// connections.
    AwarenessQuery,
    /// Another node deleted the board.
    Deleted,
    /// A node is gone: clear the presence it brought.
    NodeGone(NodeId),
    /// The database's last sequence number for the board (`None`: the board is gone).
    Stored(Option<Seq>),
    /// Messages may have been lost (Redis came back, or the subscription is new): check the
    /// database.
    Resync,
}

/// Largest updates carried in one message; past it, the rows are announced without them and
/// read from the database by the nodes that hold the board (an import, a restore of a large
/// board): Redis and every node's inbox stay small.
pub(crate) const MAX_INLINE_BYTES: usize = 64 << 10;

/// Messages queued to a board actor, at most; past it they are dropped (counted): the actor
/// finds what it missed at its next check of the database. With [`MAX_INLINE_BYTES`], a
/// board's inbox holds at most 16 MiB of updates.
const INBOX: usize = 256;

/// The cluster link, shared by the board actors. `Cluster::single()` is a node alone: nothing
/// is published, nothing is received.
#[derive(Clone, Default)]
pub(crate) struct Cluster {
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Cluster({})", inner.node),
            None => f.write_str("Cluster(single)"),
        }
    }
}

struct Inner {
    node: NodeId,
    config: ClusterConfig,
    /// To the publisher task.
    out: mpsc::Sender<Outgoing>,
    /// Subscribe and unsubscribe requests, to the subscriber task.
    control: mpsc::UnboundedSender<Control>,
    subs: Mutex<HashMap<BoardId, HashMap<u64, mpsc::Sender<Inbound>>>>,
    next_sub: AtomicU64,
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    /// Test hook: publishes are dropped (counted) while set.
    drop_publishes: AtomicBool,
    metrics: Arc<Metrics>,
}

/// A message for the publisher: its channel and bytes.
#[derive(Debug)]
struct Outgoing {
    channel: String,
    payload: Vec<u8>,
}

#[derive(Debug)]
enum Control {
    Subscribe(BoardId),
    Unsubscribe(BoardId),
}

/// A board actor's subscription to its board's channel; unsubscribes when dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Inbound>,
    _guard: SubGuard,
}

#[derive(Debug)]
struct SubGuard {
    cluster: Cluster,
    board: BoardId,
    id: u64,
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.cluster.inner {
            let mut subs = inner.subs();
            if let Some(board) = subs.get_mut(&self.board) {
                board.remove(&self.id);
                if board.is_empty() {
                    subs.remove(&self.board);
                    let _ = inner.control.send(Control::Unsubscribe(self.board.clone()));
                }
            }
        }
    }
}

impl Subscription {
    /// The next message for the board (never resolves for a node alone).
    pub(crate) async fn recv(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }
}

impl Inner {
    fn subs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<BoardId, HashMap<u64, mpsc::Sender<Inbound>>>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn channel(&self, board: &BoardId) -> String {
        format!("{}:b:{}", self.config.prefix, board)
    }

    fn nodes_channel(&self) -> String {
        format!("{}:nodes", self.config.prefix)
    }

    /// Delivers `make()` to every subscription of `board`; a full inbox drops it (counted).
    fn deliver(&self, board: &BoardId, make: impl Fn() -> Inbound) {
        let subs = self.subs();
        let Some(board) = subs.get(board) else {
            return;
        };
        for tx in board.values() {
            if tx.try_send(make()).is_err() {
                self.metrics.cluster.dropped.inc();
            }
        }
    }

    /// Delivers `make()` to every subscription of every board.
    fn deliver_all(&self, make: impl Fn() -> Inbound) {
        let subs = self.subs();
        for board in subs.values() {
            for tx in board.values() {
                if tx.try_send(make()).is_err() {
                    self.metrics.cluster.dropped.inc();
                }
            }
        }
    }

    fn held(&self) -> Vec<BoardId> {
        self.subs().keys().cloned().collect()
    }

    fn publish(&self, channel: String, body: Body) {
        if self.drop_publishes.load(Ordering::Relaxed) {
            self.metrics.cluster.published.dropped.inc();
            return;
        }
        let payload = Message {
            node: self.node.clone(),
            sent_at: message::now_micros(),
            body,
        }
        .encode();
        if self.out.try_send(Outgoing { channel, payload }).is_err() {
            // Redis is slow or away: the others heal from the database.
            self.metrics.cluster.published.dropped.inc();
        }
    }
}

impl Cluster {
    /// A node alone (no `REDIS_URL`).
    pub(crate) fn single() -> Self {
        Self::default()
    }

    /// Starts the link to Redis and the database check, as tasks `tracker` waits for; they
    /// stop with `shutdown` (saying first that this node leaves).
    pub(crate) fn start(
        node: NodeId,
        config: ClusterConfig,
        store: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, ClusterError> {
        if !message::valid_node_id(&node) {
            return Err(ClusterError::BadNodeId);
        }
        let client =
            redis::Client::open(config.redis_url.as_str()).map_err(|_| ClusterError::BadUrl)?;
        let (out, out_rx) = mpsc::channel(link::PUBLISH_QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            node,
            config,
            out,
            control,
            subs: Mutex::new(HashMap::new()),
            next_sub: AtomicU64::new(1),
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
            drop_publishes: AtomicBool::new(false),
            metrics,
        });
        tracker.spawn(link::publisher(
            inner.clone(),
            client.clone(),
            out_rx,
            shutdown.clone(),
        ));
        tracker.spawn(link::subscriber(
            inner.clone(),
            client,
            control_rx,
            shutdown.clone(),
        ));
        tracker.spawn(poll::run(inner.clone(), store, shutdown));
        Ok(Self { inner: Some(inner) })
    }

    /// Whether this node is one of several.
    pub(crate) fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether Redis is reachable (always, for a node alone): `/readyz` reports a node whose
    /// Redis is down as degraded (it still serves its clients durably).
    pub(crate) fn redis_up(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| {
            i.publisher_up.load(Ordering::Relaxed) && i.subscriber_up.load(Ordering::Relaxed)
        })
    }

    /// Subscribes a board actor to its board's messages (`None` for a node alone). A new
    /// subscription gets [`Inbound::Resync`] once Redis confirms it, so that nothing published
    /// between the actor's load and the subscription is missed.
    pub(crate) fn subscribe(&self, board: &BoardId) -> Option<Subscription> {
        let inner = self.inner.as_ref()?;
        let (tx, rx) = mpsc::channel(INBOX);
        let id = inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut subs = inner.subs();
            let entry = subs.entry(board.clone()).or_default();
            entry.insert(id, tx);
            entry.len() == 1
        };
        if first {
            let _ = inner.control.send(Control::Subscribe(board.clone()));
        } else {
            // The channel is subscribed already: check the database once instead.
            inner.deliver(board, || Inbound::Resync);
        }
        Some(Subscription {
            rx,
            _guard: SubGuard {
                cluster: self.clone(),
                board: board.clone(),
                id,
            },
        })
    }

    /// Publishes rows this node committed for `board`, after the commit. Updates larger than
    /// [`MAX_INLINE_BYTES`] together are left out: the message then says only which rows
    /// there are, and the other nodes read them from the database (Redis carries hints).
    pub(crate) fn publish_update(
        &self,
        board: &BoardId,
        rows: Vec<(Seq, u32)>,
        mut updates: Vec<Bytes>,
    ) {
        if let Some(inner) = &self.inner {
            if rows.is_empty() {
                return;
            }
            if updates.iter().map(Bytes::len).sum::<usize>() > MAX_INLINE_BYTES {
                updates.clear();
            }
            inner.publish(inner.channel(board), Body::Update { rows, updates });
        }
    }

    /// Publishes an awareness update (the y-protocols payload) of this node's connections.
    pub(crate) fn publish_awareness(&self, board: &BoardId, update: Bytes) {
        if let Some(inner) = &self.inner {
            inner.publish(inner.channel(board), Body::Awareness(update));
        }
    }

    /// Tells the other nodes that `board` was deleted.
    pub(crate) fn publish_deleted(&self, board: &BoardId) {
        if let Some(inner) = &self.inner {
            inner.publish(inner.channel(board), Body::Deleted);
        }
    }

    /// Test hook: drop every publish while `drop` is set (counted as dropped), as if Redis
    /// lost them.
    pub(crate) fn set_drop_publishes(&self, drop: bool) {
        if let Some(inner) = &self.inner {
            inner.drop_publishes.store(drop, Ordering::Relaxed);
        }
    }
}
