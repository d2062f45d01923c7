//! WebSocket connections at `/v1/sync/{board}`: a reader and a writer task per socket.
//!
//! The reader decodes each frame (outside any lock, never panicking) and hands it to the
//! board's actor; the writer takes everything in the connection's bounded outbound queue
//! ([`crate::board::link`]) at once, writes it in one flush, and sends pings. Either side
//! ending ends the other. Every close code and reason is a [`Refusal`], documented in
//! `PROTOCOL.md`; the session counts the refusals it decides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};

use crate::auth::{AuthError, Denied, Grant, Role, TokenError};
use crate::board::link::{Delivery, Side};
use crate::board::peer::{CloseReason, ConnId, PeerLink};
use crate::board::presence::Identity;
use crate::board::{BoardCmd, BoardError, Read};
use crate::http::{ApiError, ApiPath, ApiQuery, bearer_token, request_id};
use crate::ids::BoardId;
use crate::limits::{AddressSlot, MessageLimiter, Throttled};
use crate::metrics::{Metrics, kind};
use crate::protocol::{self, Incoming, ProtocolError};
use crate::refusal::Refusal;
use crate::server::AppState;

/// Interval between server pings, at most: a third of the read timeout if that is shorter, so
/// that a live client that says nothing else still answers in time.
const PING_EVERY: Duration = Duration::from_secs(30);
/// tungstenite's read buffer, zero-filled and so resident on every connection: its 128 KiB
/// default would dominate an idle connection's memory. Most messages (drags, awareness) are
/// 30-300 bytes; larger ones take one read per 512 bytes (BENCHMARKS.md, idle memory).
const READ_BUFFER: usize = 512;
/// Bytes buffered before tungstenite writes to the socket (we flush after each batch anyway).
const WRITE_BUFFER: usize = 16 << 10;
/// How long a closing connection may take to accept its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// What a read-only connection is told when it sends document content.
const READ_ONLY_REASON: &str = "read-only: this connection's token does not allow editing the board; the update was not applied";

/// `GET /v1/sync/{board}`: upgrades to a WebSocket speaking y-protocols. `?ack=1` asks for
/// durable acknowledgements; `?token=` (or `Authorization: Bearer`) carries the token.
///
/// A disallowed `Origin` is refused before the upgrade (403). Every other refusal (no or bad
/// token, another board's token, a connection limit) upgrades and then closes with a
/// documented code and reason, which WebSocket clients can read, unlike an HTTP status.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    ApiPath(board): ApiPath<String>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    ConnectInfo(peer_addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // A plain GET, or a handshake missing a header: say so in the usual JSON.
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                "websocket_required",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    if !origin_allowed(&state.limits.allowed_origins, &headers) {
        state.metrics.error(kind::ORIGIN);
        info!("refused a WebSocket from an origin that is not allowed");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin may not open WebSockets to this server",
        )
        .into_response();
    }
    let wants_acks = params.get("ack").is_some_and(|v| v == "1" || v == "true");
    let token = params
        .get("token")
        .map(String::as_str)
        .or_else(|| bearer_token(&headers));
    let admission = admit(&state, &board, token, peer_addr);
    let request = request_id(&headers);
    let max = state.limits.max_message_bytes;
    let tracker = state.tracker.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let conn = state.next_conn_id();
            let span = tracing::info_span!("conn", conn, board = %board, request_id = %request);
            tracker.track_future(run(state, socket, admission, conn, wants_acks).instrument(span))
        })
}

/// Whether the request's `Origin` (if any) may open a WebSocket.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        // Non-browser clients send no Origin; the allow-list guards against other web pages.
        None => true,
        Some(Ok(origin)) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
        Some(Err(_)) => false,
    }
}

/// A connection allowed in.
#[derive(Debug)]
struct Admitted {
    board: BoardId,
    grant: Grant,
    _slot: AddressSlot,
}

/// Checks the board id, the token and the per-address limit, in that order.
fn admit(
    state: &AppState,
    board: &str,
    token: Option<&str>,
    peer: SocketAddr,
) -> Result<Admitted, CloseReason> {
    let refuse = |refusal: Refusal| refusal.count(&state.metrics);
    let board = BoardId::parse(board).map_err(|e| {
        info!(error = %e, "refused: invalid board id");
        refuse(Refusal::InvalidBoardId)
    })?;
    let grant = state.auth.authenticate(token).map_err(|e| {
        info!(error = %e, "refused: not authenticated");
        refuse(match e {
            AuthError::Missing => Refusal::TokenRequired,
            AuthError::Invalid(TokenError::Expired) => Refusal::TokenExpired,
            AuthError::Invalid(_) => Refusal::InvalidToken,
        })
    })?;
    grant.allows(&board, Role::Read).map_err(|e| {
        info!(error = %e, "refused: not allowed");
        refuse(match e {
            Denied::Expired => Refusal::TokenExpired,
            Denied::OtherBoard | Denied::Role { .. } => Refusal::OtherBoard,
        })
    })?;
    let slot = state.addresses.acquire(peer.ip()).ok_or_else(|| {
        info!(addr = %peer.ip(), "refused: too many connections from this address");
        refuse(Refusal::AddressFull)
    })?;
    Ok(Admitted {
        board,
        grant,
        _slot: slot,
    })
}

/// What the reader needs to know about its connection.
#[derive(Debug)]
struct Session {
    conn: ConnId,
    link: PeerLink,
    can_write: bool,
    expires_at: Option<Instant>,
    read_timeout: Duration,
    limiter: MessageLimiter,
    /// See [`crate::server::Limits::abuse_window`].
    abuse_window: Duration,
    /// Bytes of updates this connection may have sent and not yet seen committed: each update
    /// holds its size in permits until its commit is answered.
    uncommitted: Arc<Semaphore>,
    /// The most permits one update takes (all of them, for an update as large as the budget).
    max_uncommitted: u32,
    metrics: Arc<Metrics>,
}

async fn run(
    state: AppState,
    socket: WebSocket,
    admission: Result<Admitted, CloseReason>,
    conn: ConnId,
    wants_acks: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let admitted = match admission {
        Ok(admitted) => admitted,
        Err(reason) => {
            send_close(&mut sink, reason).await;
            drain(&mut stream).await;
            return;
        }
    };
    // Only a writer may create a board by connecting to it.
    if admitted.grant.role < Role::Write {
        match state.boards.store().get_board(&admitted.board).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                info!("refused: a read-only token for a board that does not exist");
                let reason = Refusal::BoardNotFound.count(&state.metrics);
                send_close(&mut sink, reason).await;
                drain(&mut stream).await;
                return;
            }
            Err(e) => {
                info!(error = %e, "refused: cannot look the board up");
                send_close(&mut sink, Refusal::BoardUnavailable.into()).await;
                drain(&mut stream).await;
                return;
            }
        }
    }
    let link = PeerLink::new(
        state.limits.outbound_queue,
        state.limits.outbound_queue_bytes,
    );
    let identity = if state.auth.is_open() {
        Identity::Open
    } else {
        Identity::User(admitted.grant.user.as_deref().map(Arc::from))
    };
    // Join (asking again if the actor reached was just evicted).
    let joined = state
        .boards
        .call_with_handle(&admitted.board, |reply| BoardCmd::Join {
            conn,
            link: link.clone(),
            wants_acks,
            identity: identity.clone(),
            reply,
        })
        .await;
    let handle = match joined {
        Ok((Ok(()), handle)) => handle,
        Ok((Err(e), _)) | Err(e) => {
            info!(error = %e, "join failed");
            let refusal = join_refusal(&e, state.shutdown.is_cancelled());
            // The actor counted the full board when it refused the join.
            let reason = if refusal == Refusal::BoardFull {
                refusal.close_reason()
            } else {
                refusal.count(&state.metrics)
            };
            send_close(&mut sink, reason).await;
            drain(&mut stream).await;
            return;
        }
    };
    let metrics = state.metrics.clone();
    metrics.connections.inc();
    metrics.connections_opened.inc();
    let session = Session {
        conn,
        link: link.clone(),
        can_write: admitted.grant.role >= Role::Write,
        expires_at: admitted.grant.remaining().map(|left| Instant::now() + left),
        read_timeout: state.limits.read_timeout,
        limiter: MessageLimiter::new(state.limits.message_rate, state.limits.message_burst),
        abuse_window: state.limits.abuse_window,
        uncommitted: Arc::new(Semaphore::new(uncommitted_budget(&state.limits) as usize)),
        max_uncommitted: uncommitted_budget(&state.limits),
        metrics: metrics.clone(),
    };
    debug!(wants_acks, role = %admitted.grant.role, "joined");
    // The writer is a task of its own: a fan-out wakes it alone, without polling the reader's
    // socket, timers and lock too (as one task joining both halves would, on every frame). It
    // logs nothing, so it runs outside the connection's span: entering and leaving a span on
    // every wake costs about 1.5% of the CPU of a large fan-out.
    let writer = {
        let (shutdown, link) = (state.shutdown.clone(), link.clone());
        // Never zero: `interval` panics on a zero period.
        let ping_every = PING_EVERY
            .min(state.limits.read_timeout / 3)
            .max(Duration::from_millis(10));
        state
            .tracker
            .spawn(async move { write_loop(&shutdown, &link, &mut sink, ping_every).await })
    };
    read_loop(&handle, &session, &mut stream).await;
    let _ = writer.await;
    drain(&mut stream).await;
    let _ = handle.send(BoardCmd::Leave { conn }).await;
    metrics.connections.dec();
    debug!(reason = ?link.reason(), "closed");
}

/// Why a join the board refused closes the connection.
fn join_refusal(e: &BoardError, shutting_down: bool) -> Refusal {
    if shutting_down {
        Refusal::ServerRestart
    } else {
        match e {
            BoardError::Full => Refusal::BoardFull,
            BoardError::Deleted => Refusal::BoardDeleted,
            _ => Refusal::BoardUnavailable,
        }
    }
}

async fn expiry(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The per-connection budget of uncommitted update bytes: at least one largest message.
fn uncommitted_budget(limits: &crate::server::Limits) -> u32 {
    let bytes = limits.max_uncommitted_bytes.max(limits.max_message_bytes);
    u32::try_from(bytes).unwrap_or(u32::MAX).min(MAX_PERMITS)
}

/// The most permits a tokio semaphore holds, rounded down to a `u32`.
const MAX_PERMITS: u32 = 1 << 30;

async fn read_loop(
    handle: &crate::board::registry::BoardHandle,
    session: &Session,
    stream: &mut SplitStream<WebSocket>,
) {
    let link = &session.link;
    // Both timers are made once, not per message: the silence timer is pushed back only when
    // it fires early, so a busy connection costs no timer work per message.
    let expired = expiry(session.expires_at);
    tokio::pin!(expired);
    let read_timeout = session.read_timeout;
    let silence = tokio::time::sleep(read_timeout);
    tokio::pin!(silence);
    let mut last_read = Instant::now();
    let mut throttled = Throttled::new(session.abuse_window, std::time::Instant::now());
    loop {
        let next = tokio::select! {
            biased;
            () = link.closed(Side::Reader) => break,
            () = &mut expired => {
                info!("closing: the token expired");
                link.close(Refusal::TokenExpired.count(&session.metrics));
                break;
            }
            () = &mut silence => {
                let deadline = last_read + read_timeout;
                if Instant::now() < deadline {
                    silence.as_mut().reset(deadline);
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
                // tungstenite reports a message over the size limit as a capacity error.
                let text = e.to_string();
                if text.contains("Space limit exceeded") {
                    info!(error = %text, "refused: message too large");
                    link.close(Refusal::MessageTooLarge.count(&session.metrics));
                } else {
                    debug!(error = %text, "read failed");
                }
                break;
            }
            Some(Ok(message)) => message,
        };
        if !throttle(session, &mut throttled).await {
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
            Message::Ping(_) | Message::Pong(_) => continue,
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
                let held = tokio::select! {
                    biased;
                    () = link.closed(Side::Reader) => break,
                    held = session.uncommitted.clone().acquire_many_owned(permits) => match held {
                        Ok(held) => held,
                        Err(_) => break,
                    },
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
            link.close(Refusal::BoardUnavailable.into());
            break;
        }
    }
    link.end();
}

/// Tells a read-only connection its update was refused. The notice is never silently
/// dropped: a connection too slow to take it is closed (1013). Returns whether it goes on.
fn notify_read_only(link: &PeerLink, metrics: &Metrics) -> bool {
    match link.offer(protocol::permission_denied(READ_ONLY_REASON)) {
        Delivery::Queued(_) => true,
        Delivery::Closed => false,
        Delivery::Full => {
            link.close(Refusal::TooSlow.count(metrics));
            false
        }
    }
}

/// Flood control: a connection over its message rate waits, reading nothing, until its budget
/// refills; TCP backpressure slows the sender and nothing is lost. Only a connection over its
/// rate for most of a minute is closed (1008, which clients reconnect from). Returns whether
/// the connection goes on.
async fn throttle(session: &Session, throttled: &mut Throttled) -> bool {
    let Err(mut wait) = session.limiter.check() else {
        return true;
    };
    session.metrics.error(kind::THROTTLED);
    debug!(
        wait_ms = wait.as_millis() as u64,
        "slowing down a connection over its message rate"
    );
    loop {
        let started = std::time::Instant::now();
        tokio::select! {
            biased;
            () = session.link.closed(Side::Reader) => return false,
            () = tokio::time::sleep(wait) => {}
        }
        let now = std::time::Instant::now();
        if throttled.add(now, now - started) {
            info!("closing: over the message rate for most of its abuse window");
            session
                .link
                .close(Refusal::MessageRate.count(&session.metrics));
            return false;
        }
        match session.limiter.check() {
            Ok(()) => return true,
            Err(more) => wait = more,
        }
    }
}

/// The command for a message other than a document update (see [`read_loop`]).
fn command(conn: ConnId, incoming: Incoming, frame: Bytes) -> Option<BoardCmd> {
    Some(match incoming {
        Incoming::SyncStep1(sv) => BoardCmd::Read(Read::SyncStep1 { conn, sv }),
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
fn refusal(e: &ProtocolError) -> Refusal {
    match e {
        ProtocolError::BadUpdate(_) => Refusal::UpdateUndecodable,
        ProtocolError::TooDeep(_) => Refusal::TooDeep,
        ProtocolError::Undecodable(_) | ProtocolError::UnsupportedType(_) => Refusal::NotAMessage,
    }
}

async fn write_loop(
    shutdown: &CancellationToken,
    link: &PeerLink,
    sink: &mut SplitSink<WebSocket, Message>,
    ping_every: Duration,
) {
    let mut ping = tokio::time::interval(ping_every);
    ping.reset();
    // Made once and kept: a fresh `cancelled()` per batch would join and leave the shutdown
    // token's waiter list (a lock every connection's writer shares) on every wake.
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    loop {
        let batch = tokio::select! {
            biased;
            frames = link.next_batch() => match frames {
                Some(frames) => Some(frames),
                None => break,
            },
            () = &mut shutting_down => {
                link.close(Refusal::ServerRestart.into());
                break;
            }
            _ = ping.tick() => None,
        };
        // Writing may block on a client that stopped reading: stay responsive to the link
        // closing (the actor closing a slow connection) while it does.
        let write = async {
            match batch {
                Some(frames) => {
                    for frame in frames {
                        sink.feed(Message::Binary(frame)).await?;
                    }
                    sink.flush().await
                }
                None => sink.send(Message::Ping(Bytes::new())).await,
            }
        };
        tokio::select! {
            biased;
            () = link.closed(Side::Writer) => break,
            written = write => if written.is_err() {
                link.end();
                return;
            },
        }
    }
    link.end();
    // The close frame waits behind anything still buffered; a client that never reads again
    // gets the TCP connection dropped instead.
    let reason = link.reason().unwrap_or(NORMAL_CLOSURE);
    let _ = tokio::time::timeout(CLOSE_GRACE, send_close(sink, reason)).await;
}

/// After our close frame: reads (and drops) what the client still sends, until its close reply
/// or the end of the stream, for at most a second. Dropping a socket with unread data makes the
/// kernel reset the connection, and a client that had sent something would then see 1006
/// instead of our close code.
async fn drain(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The close of a connection that ended without a refusal: the client left, or its socket
/// failed.
const NORMAL_CLOSURE: CloseReason = CloseReason {
    code: 1000,
    reason: "",
};

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, reason: CloseReason) {
    let frame = CloseFrame {
        code: reason.code,
        reason: reason.reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_notice_that_does_not_fit_closes_the_connection() {
        let metrics = Metrics::new();
        let link = PeerLink::new(1, usize::MAX);
        assert!(notify_read_only(&link, &metrics));
        // The queue is full now: the next notice closes the connection as too slow.
        assert!(!notify_read_only(&link, &metrics));
        assert_eq!(link.reason(), Some(Refusal::TooSlow.close_reason()));
        assert!(
            metrics
                .render()
                .contains(r#"sync_errors_total{kind="too_slow"} 1"#)
        );
    }
}
