//! WebSocket connections at `/v1/sync/{board}`: one task per socket, reading and writing.
//!
//! The reader decodes each frame (outside any lock, never panicking) and hands it to the
//! board's actor; the writer drains the connection's bounded outbound queue, batching frames
//! into one flush, and sends pings. Either side ending ends the other. Close codes are listed
//! in [`crate::board::peer::close`] and `PROTOCOL.md`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info};

use crate::board::peer::{CloseReason, ConnId, PeerLink, close};
use crate::board::{BoardCmd, Read};
use crate::ids::BoardId;
use crate::protocol::{self, Incoming, ProtocolError};
use crate::server::AppState;

/// Interval between server pings.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A connection that sends nothing (not even a pong) for this long is considered dead and
/// closed. y-websocket clients renew awareness every 15 s and answer pings.
const READ_TIMEOUT: Duration = Duration::from_secs(90);
/// tungstenite's read buffer; its 128 KiB default would dominate an idle connection's memory.
const READ_BUFFER: usize = 4 << 10;
/// Bytes buffered before tungstenite writes to the socket (we flush after each batch anyway).
const WRITE_BUFFER: usize = 16 << 10;
/// How long a closing connection may take to accept its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// `GET /v1/sync/{board}`: upgrades to a WebSocket speaking y-protocols. `?ack=1` asks for
/// durable acknowledgements.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Path(board): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let wants_acks = params.get("ack").is_some_and(|v| v == "1" || v == "true");
    let max = state.limits.max_message_bytes;
    let tracker = state.tracker.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let conn = state.next_conn_id();
            let span = tracing::info_span!("conn", conn, board = %board);
            tracker.track_future(run(state, socket, board, conn, wants_acks).instrument(span))
        })
}

async fn run(state: AppState, socket: WebSocket, board: String, conn: ConnId, wants_acks: bool) {
    let (mut sink, mut stream) = socket.split();
    let board = match BoardId::parse(&board) {
        Ok(board) => board,
        Err(e) => {
            info!(error = %e, "refused: invalid board id");
            send_close(&mut sink, close::BAD_MESSAGE, "invalid board id").await;
            return;
        }
    };
    let (outbox, mut queue) = mpsc::channel(state.limits.outbound_queue.max(1));
    let link = PeerLink {
        outbox,
        kill: CancellationToken::new(),
        reason: Default::default(),
    };
    // Join (asking again if the actor reached was just evicted).
    let joined = state
        .boards
        .call_with_handle(&board, |reply| BoardCmd::Join {
            conn,
            link: link.clone(),
            wants_acks,
            reply,
        })
        .await;
    let handle = match joined {
        Ok((Ok(()), handle)) => handle,
        Ok((Err(e), _)) | Err(e) => {
            info!(error = %e, "join failed");
            let (code, reason) = if state.shutdown.is_cancelled() {
                (close::SERVER_RESTART, "server restarting")
            } else {
                (close::INTERNAL, "board unavailable; reconnect")
            };
            send_close(&mut sink, code, reason).await;
            return;
        }
    };
    debug!(wants_acks, "joined");
    let reader = read_loop(&handle, conn, &link, &mut stream);
    let writer = write_loop(&state.shutdown, &link, &mut queue, &mut sink);
    tokio::join!(reader, writer);
    let _ = handle.send(BoardCmd::Leave { conn }).await;
    debug!(reason = ?link.reason.get(), "closed");
}

async fn read_loop(
    handle: &crate::board::registry::BoardHandle,
    conn: ConnId,
    link: &PeerLink,
    stream: &mut SplitStream<WebSocket>,
) {
    loop {
        let next = tokio::select! {
            biased;
            () = link.kill.cancelled() => break,
            next = tokio::time::timeout(READ_TIMEOUT, stream.next()) => match next {
                Ok(next) => next,
                Err(_) => {
                    info!("closing a connection silent for {}s", READ_TIMEOUT.as_secs());
                    link.close(CloseReason { code: close::INTERNAL, reason: "no traffic; reconnect" });
                    break;
                }
            },
        };
        let message = match next {
            None => break,
            Some(Err(e)) => {
                // tungstenite reports a message over the size limit as a capacity error.
                let text = e.to_string();
                if text.contains("Space limit exceeded") {
                    info!(error = %text, "refused: message too large");
                    link.close(CloseReason {
                        code: close::TOO_LARGE,
                        reason: "message too large",
                    });
                } else {
                    debug!(error = %text, "read failed");
                }
                break;
            }
            Some(Ok(message)) => message,
        };
        let frame = match message {
            Message::Binary(frame) => frame,
            Message::Text(_) => {
                info!("refused: text frame");
                link.close(CloseReason {
                    code: close::BAD_MESSAGE,
                    reason: "text frames are not part of the protocol",
                });
                break;
            }
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        let cmd = match protocol::decode(&frame) {
            Ok(incoming) => command(conn, incoming, frame),
            Err(e) => {
                info!(error = %e, "refused: bad message");
                link.close(refusal(&e));
                break;
            }
        };
        let Some(cmd) = cmd else { continue };
        if handle.send(cmd).await.is_err() {
            link.close(CloseReason {
                code: close::INTERNAL,
                reason: "board unavailable; reconnect",
            });
            break;
        }
    }
    link.kill.cancel();
}

fn command(conn: ConnId, incoming: Incoming, frame: Bytes) -> Option<BoardCmd> {
    Some(match incoming {
        Incoming::SyncStep1(sv) => BoardCmd::Read(Read::SyncStep1 { conn, sv }),
        Incoming::Update { update, raw } => BoardCmd::Update { conn, update, raw },
        Incoming::Awareness { update } => BoardCmd::Awareness {
            conn,
            update,
            frame,
        },
        Incoming::QueryAwareness => BoardCmd::QueryAwareness { conn },
        Incoming::Auth => return None,
    })
}

fn refusal(e: &ProtocolError) -> CloseReason {
    match e {
        ProtocolError::BadUpdate(_) => CloseReason {
            code: close::BAD_UPDATE,
            reason: "update does not decode",
        },
        ProtocolError::Undecodable(_) | ProtocolError::UnsupportedType(_) => CloseReason {
            code: close::BAD_MESSAGE,
            reason: "not a y-protocols message",
        },
    }
}

async fn write_loop(
    shutdown: &CancellationToken,
    link: &PeerLink,
    queue: &mut mpsc::Receiver<Bytes>,
    sink: &mut SplitSink<WebSocket, Message>,
) {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        let batch = tokio::select! {
            biased;
            () = link.kill.cancelled() => break,
            () = shutdown.cancelled() => {
                link.close(CloseReason { code: close::SERVER_RESTART, reason: "server restarting" });
                break;
            }
            frame = queue.recv() => match frame {
                Some(frame) => Some(frame),
                None => break,
            },
            _ = ping.tick() => None,
        };
        // Writing may block on a client that stopped reading: stay responsive to `kill` (the
        // actor closing a slow connection) while it does.
        let write = async {
            match batch {
                Some(frame) => {
                    sink.feed(Message::Binary(frame)).await?;
                    while let Ok(frame) = queue.try_recv() {
                        sink.feed(Message::Binary(frame)).await?;
                    }
                    sink.flush().await
                }
                None => sink.send(Message::Ping(Bytes::new())).await,
            }
        };
        tokio::select! {
            biased;
            () = link.kill.cancelled() => break,
            written = write => if written.is_err() {
                link.kill.cancel();
                return;
            },
        }
    }
    link.kill.cancel();
    // The close frame waits behind anything still buffered; a client that never reads again
    // gets the TCP connection dropped instead.
    let reason = link.reason.get().copied().unwrap_or(CloseReason {
        code: 1000,
        reason: "",
    });
    let _ = tokio::time::timeout(CLOSE_GRACE, send_close(sink, reason.code, reason.reason)).await;
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
