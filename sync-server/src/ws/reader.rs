//! A session's reader: takes frames off the socket and hands them to the board's actor.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::board::link::{Delivery, Side};
use crate::board::peer::{ConnId, PeerLink};
use crate::board::registry::BoardHandle;
use crate::board::{BoardCmd, Read, Step1Answer};
use crate::limits::{Limits, MessageLimiter, Throttled};
use crate::metrics::{Metrics, kind};
use crate::protocol::{self, Incoming, ProtocolError};
use crate::refusal::Refusal;

/// What a read-only connection is told when it sends document content.
pub(super) const READ_ONLY_REASON: &str = "read-only: this connection's token does not allow editing the board; the update was not applied";

/// The most permits a tokio semaphore holds, rounded down to a `u32`.
const MAX_PERMITS: u32 = 1 << 30;

/// What the reader needs to know about its connection.
#[derive(Debug)]
pub(super) struct Reader {
    pub(super) conn: ConnId,
    pub(super) link: PeerLink,
    pub(super) can_write: bool,
    pub(super) expires_at: Option<Instant>,
    pub(super) read_timeout: Duration,
    pub(super) limiter: MessageLimiter,
    /// See [`Limits::abuse_window`].
    pub(super) abuse_window: Duration,
    /// Bytes of updates this connection may have sent and not yet seen committed: each update
    /// holds its size in permits until its commit is answered.
    pub(super) uncommitted: Arc<Semaphore>,
    /// The most permits one update takes (all of them, for an update as large as the budget).
    pub(super) max_uncommitted: u32,
    pub(super) metrics: Arc<Metrics>,
    /// The server's shutdown: a board that stopped because of it closes the socket with 1012
    /// (restarting), not as unavailable.
    pub(super) shutdown: CancellationToken,
}

impl Reader {
    pub(super) fn new(
        conn: ConnId,
        link: PeerLink,
        can_write: bool,
        expires_at: Option<Instant>,
        limits: &Limits,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let budget = uncommitted_budget(limits);
        Self {
            conn,
            link,
            can_write,
            expires_at,
            read_timeout: limits.read_timeout,
            limiter: MessageLimiter::new(limits.message_rate, limits.message_burst),
            abuse_window: limits.abuse_window,
            uncommitted: Arc::new(Semaphore::new(budget as usize)),
            max_uncommitted: budget,
            metrics,
            shutdown,
        }
    }
}

/// The per-connection budget of uncommitted update bytes: at least one largest message.
pub(super) fn uncommitted_budget(limits: &Limits) -> u32 {
    let bytes = limits.max_uncommitted_bytes.max(limits.max_message_bytes);
    u32::try_from(bytes).unwrap_or(u32::MAX).min(MAX_PERMITS)
}

/// Reads until the stream ends, the link closes or the reader closes it with a refusal; then
/// ends the link (which stops the writer).
pub(super) async fn read_loop<St, E>(handle: &BoardHandle, session: &Reader, stream: &mut St)
where
    St: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let link = &session.link;
    // One timer for both deadlines, made once: it is pushed back only when it fires early, so
    // a busy connection costs no timer work per message (and an idle one holds one timer).
    let read_timeout = session.read_timeout;
    let expires_at = session.expires_at;
    let next_deadline = |silent_at: Instant| expires_at.map_or(silent_at, |at| at.min(silent_at));
    let mut last_read = Instant::now();
    let timer = tokio::time::sleep_until(next_deadline(last_read + read_timeout));
    tokio::pin!(timer);
    let mut throttled = Throttled::new(session.abuse_window, std::time::Instant::now());
    loop {
        let next = tokio::select! {
            biased;
            () = link.closed(Side::Reader) => break,
            () = &mut timer => {
                let now = Instant::now();
                if expires_at.is_some_and(|at| now >= at) {
                    info!("closing: the token expired");
                    link.close(Refusal::TokenExpired.count(&session.metrics));
                    break;
                }
                let silent_at = last_read + read_timeout;
                if now < silent_at {
                    timer.as_mut().reset(next_deadline(silent_at));
                    continue;
                }
                info!("closing a connection silent for {}s", read_timeout.as_secs());
                link.close(Refusal::Silent.count(&session.metrics));
                break;
            }
            next = stream.next() => next,
        };
        last_read = Instant::now();
        let message = match next {
            None => break,
            Some(Err(e)) => {
                if let Some(refusal) = read_failed(&e) {
                    link.close(refusal.count(&session.metrics));
                }
                break;
            }
            Some(Ok(message)) => message,
        };
        // Over the rate, the wait is a future of its own (boxed): this loop's future lives as
        // long as the connection, and should not carry room for a wait it seldom has.
        if let Err(wait) = session.limiter.check()
            && !Box::pin(throttle(session, &mut throttled, wait)).await
        {
            break;
        }
        let frame = match message {
            Message::Binary(frame) => frame,
            Message::Text(_) => {
                info!("refused: text frame");
                link.close(Refusal::TextFrame.count(&session.metrics));
                break;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let cmd = match protocol::decode(&frame) {
            Ok(Incoming::Update { update, .. }) if !session.can_write => {
                // A read-only client's step 2 with nothing in it is fine; content is refused.
                if !update.is_empty() {
                    debug!("refused an update from a read-only connection");
                    session.metrics.error(kind::READ_ONLY);
                    if !notify_read_only(link, &session.metrics) {
                        break;
                    }
                }
                continue;
            }
            Ok(Incoming::Update {
                update,
                raw,
                scanned,
            }) => {
                // Wait (reading nothing more) until this connection's earlier updates are
                // committed enough to make room for this one.
                let permits = u32::try_from(raw.len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, session.max_uncommitted);
                let held = match session.uncommitted.clone().try_acquire_many_owned(permits) {
                    Ok(held) => held,
                    Err(TryAcquireError::Closed) => break,
                    Err(TryAcquireError::NoPermits) => {
                        match Box::pin(wait_for_room(session, permits)).await {
                            Some(held) => held,
                            None => break,
                        }
                    }
                };
                BoardCmd::Update {
                    conn: session.conn,
                    update,
                    raw,
                    scanned,
                    held,
                }
            }
            Ok(incoming) => match command(session.conn, incoming, frame) {
                Some(cmd) => cmd,
                None => continue,
            },
            Err(e) => {
                info!(error = %e, "refused: bad message");
                link.close(refusal(&e).count(&session.metrics));
                break;
            }
        };
        if handle.send(cmd).await.is_err() {
            // The board's actor stopped: because the server is shutting down (the writer may
            // not have seen it yet), or it failed.
            let refusal = if session.shutdown.is_cancelled() {
                Refusal::ServerRestart
            } else {
                Refusal::BoardUnavailable
            };
            link.close(refusal.count(&session.metrics));
            break;
        }
    }
    link.end();
}

/// Why a failed read closes the connection with a refusal of its own: only a message over the
/// size limit (tungstenite reports it as a capacity error); other failures end it.
pub(super) fn read_failed(e: &impl Display) -> Option<Refusal> {
    let text = e.to_string();
    if text.contains("Space limit exceeded") {
        info!(error = %text, "refused: message too large");
        Some(Refusal::MessageTooLarge)
    } else {
        debug!(error = %text, "read failed");
        None
    }
}

/// Tells a read-only connection its update was refused. The notice is never silently
/// dropped: a connection too slow to take it is closed (1013). Returns whether it goes on.
pub(super) fn notify_read_only(link: &PeerLink, metrics: &Metrics) -> bool {
    match link.offer(protocol::permission_denied(READ_ONLY_REASON)) {
        Delivery::Queued(_) => true,
        Delivery::Closed => false,
        Delivery::Full => {
            link.close(Refusal::TooSlow.count(metrics));
            false
        }
    }
}

/// What flood control decided about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Within its rate (again): read on.
    Go,
    /// The connection closed while it waited.
    Closed,
    /// Over its rate for most of its abuse window: close it (1008).
    Abusive,
}

/// Flood control: a connection over its message rate (the limiter said to `wait`) waits,
/// reading nothing, until its budget refills; TCP backpressure slows the sender and nothing is
/// lost. Only a connection over its rate for most of a minute is [`Flow::Abusive`] (closed with
/// 1008, which clients reconnect from). `closed` resolves if the connection closes meanwhile.
pub(super) async fn slow_down<F>(
    limiter: &MessageLimiter,
    metrics: &Metrics,
    throttled: &mut Throttled,
    closed: F,
    mut wait: Duration,
) -> Flow
where
    F: Future<Output = ()>,
{
    metrics.error(kind::THROTTLED);
    debug!(
        wait_ms = wait.as_millis() as u64,
        "slowing down a connection over its message rate"
    );
    tokio::pin!(closed);
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            biased;
            () = &mut closed => return Flow::Closed,
            () = tokio::time::sleep(wait) => {}
        }
        let now = std::time::Instant::now();
        if throttled.add(now, now - started) {
            info!("closing: over the message rate for most of its abuse window");
            return Flow::Abusive;
        }
        match limiter.check() {
            Ok(()) => return Flow::Go,
            Err(more) => wait = more,
        }
    }
}

/// Waits until `permits` of the connection's uncommitted budget are free; `None` if the
/// connection closes meanwhile.
async fn wait_for_room(session: &Reader, permits: u32) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        () = session.link.closed(Side::Reader) => None,
        held = session.uncommitted.clone().acquire_many_owned(permits) => held.ok(),
    }
}

/// [`slow_down`] for a y-websocket connection over its rate (the limiter said to `wait`).
/// Returns whether it goes on.
async fn throttle(session: &Reader, throttled: &mut Throttled, wait: Duration) -> bool {
    let closed = session.link.closed(Side::Reader);
    match slow_down(&session.limiter, &session.metrics, throttled, closed, wait).await {
        Flow::Go => true,
        Flow::Closed => false,
        Flow::Abusive => {
            session
                .link
                .close(Refusal::MessageRate.count(&session.metrics));
            false
        }
    }
}

/// The command for a message other than a document update (see [`read_loop`]).
fn command(conn: ConnId, incoming: Incoming, frame: Bytes) -> Option<BoardCmd> {
    Some(match incoming {
        Incoming::SyncStep1(sv) => BoardCmd::Read(Read::SyncStep1 {
            conn,
            sv,
            answer: Step1Answer::Step2,
        }),
        Incoming::Update { .. } => return None,
        Incoming::Awareness { update } => BoardCmd::Awareness {
            conn,
            update,
            frame,
        },
        Incoming::QueryAwareness => BoardCmd::QueryAwareness { conn },
        Incoming::Auth => return None,
    })
}

/// Why a frame that does not decode closes its connection.
pub(super) fn refusal(e: &ProtocolError) -> Refusal {
    match e {
        ProtocolError::BadUpdate(_) => Refusal::UpdateUndecodable,
        ProtocolError::TooDeep(_) => Refusal::TooDeep,
        ProtocolError::Undecodable(_) | ProtocolError::UnsupportedType(_) => Refusal::NotAMessage,
    }
}
