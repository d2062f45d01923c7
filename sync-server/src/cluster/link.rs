//! The Redis side of the cluster: a publisher and a subscriber, each on its own connection,
//! each reconnecting with backoff when Redis goes away.
//!
//! - The **publisher** takes what is queued and sends it as one pipeline of `PUBLISH`es (one
//!   round trip for a burst, like the group commit), in order. While Redis is away, messages
//!   are dropped and counted: they are hints, the others read the rows from the database.
//! - The **subscriber** holds one pub/sub connection subscribed to the nodes channel and to
//!   the channel of every board this node holds; it routes messages to the boards' actors,
//!   keeps track of the other nodes' heartbeats, and sends this node's own. After a reconnect
//!   it subscribes again to everything and tells every held board to check the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::message::{Body, Message, NodeId};
use super::{Control, Inbound, Inner, Outgoing};
use crate::ids::BoardId;

/// Messages waiting for the publisher, at most; past it they are dropped (counted).
pub(super) const PUBLISH_QUEUE: usize = 16 * 1024;
/// Messages sent in one pipeline, at most.
const PIPELINE: usize = 512;
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Waits between reconnection attempts: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shutting down, the publisher stops once nothing was published for this long.
const QUIET: Duration = Duration::from_millis(250);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

/// Sends what the board actors publish.
pub(super) async fn publisher(
    inner: Arc<Inner>,
    client: redis::Client,
    mut rx: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut stopping = false;
    'connect: loop {
        let connecting =
            tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection());
        let mut conn = tokio::select! {
            () = shutdown.cancelled() => return,
            result = connecting => match result {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    down(&inner, &inner.publisher_up, &format!("cannot connect: {:?}", e.kind()));
                    drain_dropped(&inner, &mut rx);
                    if sleep_or_stop(&shutdown, backoff).await { return; }
                    backoff = next_backoff(backoff);
                    continue 'connect;
                }
                Err(_) => {
                    down(&inner, &inner.publisher_up, "connecting timed out");
                    drain_dropped(&inner, &mut rx);
                    if sleep_or_stop(&shutdown, backoff).await { return; }
                    backoff = next_backoff(backoff);
                    continue 'connect;
                }
            },
        };
        backoff = BACKOFF_FIRST;
        if !inner.publisher_up.swap(true, Ordering::Relaxed) {
            info!(node = %inner.node, "Redis publisher connected");
        }
        inner
            .metrics
            .cluster
            .redis_up
            .set(i64::from(inner.subscriber_up.load(Ordering::Relaxed)));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {
                    // Board actors still commit what they hold: keep publishing until they
                    // are quiet.
                    stopping = true;
                    continue;
                }
                () = tokio::time::sleep(QUIET), if stopping => {
                    // Say goodbye, so the others clear this node's presence at once.
                    let leaving = Message { node: inner.node.clone(), sent_at: super::message::now_micros(), body: Body::Leaving };
                    let _: Result<(), _> = redis::cmd("PUBLISH").arg(inner.nodes_channel()).arg(leaving.encode()).query_async(&mut conn).await;
                    return;
                }
                n = rx.recv_many(&mut batch, PIPELINE) => {
                    if n == 0 {
                        return;
                    }
                }
                _ = heartbeat.tick(), if !stopping => {
                    let beat = Message { node: inner.node.clone(), sent_at: super::message::now_micros(), body: Body::Heartbeat };
                    batch.push(Outgoing { channel: inner.nodes_channel(), payload: beat.encode() });
                }
            }
            let mut pipe = redis::pipe();
            for out in &batch {
                pipe.cmd("PUBLISH")
                    .arg(&out.channel)
                    .arg(&out.payload)
                    .ignore();
            }
            let sent = batch.len() as u64;
            batch.clear();
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    inner.metrics.cluster.published.sent.inc_by(sent);
                }
                Err(e) => {
                    inner.metrics.cluster.published.dropped.inc_by(sent);
                    down(
                        &inner,
                        &inner.publisher_up,
                        &format!("publish failed: {:?}", e.kind()),
                    );
                    continue 'connect;
                }
            }
        }
    }
}

/// While Redis is away, what is queued is dropped (counted) rather than kept: the others read
/// it from the database, and a backlog would only arrive late.
fn drain_dropped(inner: &Inner, rx: &mut mpsc::Receiver<Outgoing>) {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    inner.metrics.cluster.published.dropped.inc_by(n);
}

fn down(inner: &Inner, flag: &std::sync::atomic::AtomicBool, why: &str) {
    if flag.swap(false, Ordering::Relaxed) {
        warn!(node = %inner.node, reason = why, "Redis unavailable: serving this node's clients, healing from the database");
    } else {
        debug!(node = %inner.node, reason = why, "Redis still unavailable");
    }
    inner.metrics.cluster.redis_up.set(0);
}

/// Returns `true` if shutdown came first.
async fn sleep_or_stop(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// The other nodes this node has heard from, and when.
#[derive(Debug, Default)]
struct Nodes {
    seen: HashMap<NodeId, Instant>,
}

impl Nodes {
    fn heard(&mut self, node: &NodeId) {
        self.seen.insert(node.clone(), Instant::now());
    }

    /// After a reconnect: what was not heard while this node was not listening says nothing
    /// about the others; they have `timeout` from now.
    fn refresh(&mut self) {
        let now = Instant::now();
        for at in self.seen.values_mut() {
            *at = now;
        }
    }

    fn gone(&mut self, node: &NodeId) -> bool {
        self.seen.remove(node).is_some()
    }

    /// Nodes silent for longer than `timeout`, forgotten.
    fn expired(&mut self, timeout: Duration) -> Vec<NodeId> {
        let now = Instant::now();
        let gone: Vec<NodeId> = self
            .seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.seen.remove(n);
        }
        gone
    }
}

/// Receives the other nodes' messages for the boards this node holds.
pub(super) async fn subscriber(
    inner: Arc<Inner>,
    client: redis::Client,
    mut control: mpsc::UnboundedReceiver<Control>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_FIRST;
    let mut nodes = Nodes::default();
    let mut check = tokio::time::interval(HEARTBEAT / 2);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let board_prefix = format!("{}:b:", inner.config.prefix);
    let nodes_channel = inner.nodes_channel();
    'connect: loop {
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub());
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            result = connecting => match result {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => {
                    down(&inner, &inner.subscriber_up, &format!("cannot subscribe: {:?}", e.kind()));
                    if sleep_or_stop(&shutdown, backoff).await { return; }
                    backoff = next_backoff(backoff);
                    continue 'connect;
                }
                Err(_) => {
                    down(&inner, &inner.subscriber_up, "subscribing timed out");
                    if sleep_or_stop(&shutdown, backoff).await { return; }
                    backoff = next_backoff(backoff);
                    continue 'connect;
                }
            },
        };
        let (mut sink, mut stream) = pubsub.split();
        // Requests made while disconnected are in the map already: subscribe to all of it.
        while control.try_recv().is_ok() {}
        let mut channels = vec![nodes_channel.clone()];
        let held = inner.held();
        channels.extend(held.iter().map(|b| inner.channel(b)));
        if let Err(e) = sink.subscribe(&channels).await {
            down(
                &inner,
                &inner.subscriber_up,
                &format!("subscribe failed: {:?}", e.kind()),
            );
            if sleep_or_stop(&shutdown, backoff).await {
                return;
            }
            backoff = next_backoff(backoff);
            continue 'connect;
        }
        backoff = BACKOFF_FIRST;
        if !inner.subscriber_up.swap(true, Ordering::Relaxed) {
            info!(node = %inner.node, boards = held.len(), "Redis subscriber connected");
        }
        inner
            .metrics
            .cluster
            .redis_up
            .set(i64::from(inner.publisher_up.load(Ordering::Relaxed)));
        nodes.refresh();
        // Anything published while this node was not listening is in the database.
        inner.deliver_all(|| Inbound::Resync);
        for board in &held {
            inner.publish(inner.channel(board), Body::AwarenessQuery);
        }
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                request = control.recv() => {
                    let Some(request) = request else { return };
                    let result = match &request {
                        Control::Subscribe(board) => sink.subscribe(inner.channel(board)).await,
                        Control::Unsubscribe(board) => {
                            // Subscribed again since: keep it.
                            if inner.subs().contains_key(board) { Ok(()) } else { sink.unsubscribe(inner.channel(board)).await }
                        }
                    };
                    if let Err(e) = result {
                        down(&inner, &inner.subscriber_up, &format!("subscribe failed: {:?}", e.kind()));
                        continue 'connect;
                    }
                    if let Control::Subscribe(board) = request {
                        // Confirmed: what was committed before it is in the database.
                        inner.deliver(&board, || Inbound::Resync);
                        inner.publish(inner.channel(&board), Body::AwarenessQuery);
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        down(&inner, &inner.subscriber_up, "connection closed");
                        continue 'connect;
                    };
                    route(&inner, &mut nodes, &board_prefix, &nodes_channel, msg.get_channel_name(), msg.get_payload_bytes());
                }
                _ = check.tick() => {
                    for node in nodes.expired(inner.config.node_timeout) {
                        info!(node = %inner.node, gone = %node, "a node stopped answering: clearing its presence");
                        inner.metrics.cluster.nodes_gone.inc();
                        inner.deliver_all(|| Inbound::NodeGone(node.clone()));
                    }
                }
            }
        }
    }
}

/// Sends one message from Redis where it belongs.
fn route(
    inner: &Inner,
    nodes: &mut Nodes,
    board_prefix: &str,
    nodes_channel: &str,
    channel: &str,
    payload: &[u8],
) {
    let metrics = &inner.metrics.cluster;
    let message = match Message::decode(payload) {
        Ok(m) => m,
        Err(e) => {
            metrics.bad_messages.inc();
            debug!(channel, error = %e, "dropped a message from Redis");
            return;
        }
    };
    if message.node == inner.node {
        return;
    }
    let lag = super::message::now_micros().saturating_sub(message.sent_at);
    metrics.lag_seconds.observe(lag as f64 / 1e6);
    if channel == nodes_channel {
        match message.body {
            Body::Heartbeat => nodes.heard(&message.node),
            Body::Leaving => {
                if nodes.gone(&message.node) {
                    info!(node = %inner.node, gone = %message.node, "a node left: clearing its presence");
                }
                inner.deliver_all(|| Inbound::NodeGone(message.node.clone()));
            }
            _ => {
                metrics.bad_messages.inc();
            }
        }
        return;
    }
    let Some(board) = channel
        .strip_prefix(board_prefix)
        .and_then(|id| BoardId::parse(id).ok())
    else {
        metrics.bad_messages.inc();
        return;
    };
    nodes.heard(&message.node);
    metrics.received.inc();
    let node = message.node;
    match message.body {
        Body::Update { rows, updates } => inner.deliver(&board, || Inbound::Update {
            node: node.clone(),
            rows: rows.clone(),
            updates: updates.clone(),
        }),
        Body::Awareness(update) => inner.deliver(&board, || Inbound::Awareness {
            node: node.clone(),
            update: update.clone(),
        }),
        Body::AwarenessQuery => inner.deliver(&board, || Inbound::AwarenessQuery),
        Body::Deleted => inner.deliver(&board, || Inbound::Deleted),
        Body::Heartbeat | Body::Leaving => {
            metrics.bad_messages.inc();
        }
    }
}
