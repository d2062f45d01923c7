//! A Hocuspocus socket's writer: takes every queued frame of the socket's link at once, frames
//! each for the wire (its document's name in front), writes them in one flush; sends the
//! dialect's pings and the close frame.
//!
//! Boards queue y-protocols frames and two of the server's own: a durable acknowledgement
//! (`[100, count]`: the first `count` document messages are committed), which becomes one
//! SyncStatus `[name][8][1]` per newly committed message, and a stateless message (`[101]
//! payload`), which becomes `[name][5] payload`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio_util::sync::CancellationToken;

use super::frame;
use crate::board::link::Side;
use crate::board::link::mux::{ChannelId, MuxLink, SESSION};
use crate::protocol::{MSG_DURABLE_ACK, MSG_STATELESS};
use crate::refusal::Refusal;

/// How often the writer pings: at most this far apart (a third of the read timeout if that is
/// shorter). Providers drop a socket that brought nothing for 30 s (`messageReconnectTimeout`)
/// and count only messages, not WebSocket pings, so the dialect's own ping (`[9]`, answered
/// `[10]`) keeps both sides' timers quiet even on a socket whose documents are idle.
const PING_EVERY: Duration = Duration::from_secs(15);

/// How often a socket's writer pings for a read timeout.
pub(super) fn ping_interval(read_timeout: Duration) -> Duration {
    PING_EVERY
        .min(read_timeout / 3)
        .max(Duration::from_millis(10))
}

/// What the writer knows of one open document: its name as encoded in front of every frame,
/// and how many of its messages it has told the provider are committed.
#[derive(Debug)]
struct Outgoing {
    prefix: Bytes,
    committed: u64,
}

/// The socket's open documents as the writer frames them, by channel; the reader adds and
/// removes them. Frames of a channel it does not know (a document that left) are dropped.
#[derive(Debug, Clone, Default)]
pub(super) struct Framing(Arc<Mutex<HashMap<ChannelId, Outgoing>>>);

impl Framing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, Outgoing>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add(&self, channel: ChannelId, name: &str) {
        self.lock().insert(
            channel,
            Outgoing {
                prefix: frame::prefix(name),
                committed: 0,
            },
        );
    }

    pub(super) fn remove(&self, channel: ChannelId) {
        self.lock().remove(&channel);
    }

    /// The frames of a batch as they go on the wire, in order.
    fn frame(&self, batch: impl IntoIterator<Item = (ChannelId, Bytes)>) -> Vec<Bytes> {
        let mut docs = self.lock();
        let mut out = Vec::new();
        for (channel, body) in batch {
            if channel == SESSION {
                out.push(body);
                continue;
            }
            let Some(doc) = docs.get_mut(&channel) else {
                continue;
            };
            match body.first() {
                Some(&tag) if u64::from(tag) == MSG_DURABLE_ACK => {
                    let count = durable_ack(&body).unwrap_or(doc.committed);
                    while doc.committed < count {
                        doc.committed += 1;
                        out.push(frame::committed(&doc.prefix));
                    }
                }
                Some(&MSG_STATELESS) => {
                    out.push(frame::stateless_from_board(&doc.prefix, &body));
                }
                _ => out.push(frame::prefixed(&doc.prefix, &body)),
            }
        }
        out
    }
}

/// The count of a board's durable acknowledgement `[100, varUint count]`.
fn durable_ack(body: &[u8]) -> Option<u64> {
    let (mut num, mut shift) = (0u64, 0u32);
    for &b in body.get(1..)? {
        num |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(num);
        }
        shift += 7;
    }
    None
}

/// Writes what the link queues until it closes (or the server shuts down: 1012), then sends
/// the close frame with the link's reason.
pub(super) async fn write_loop<Si>(
    shutdown: &CancellationToken,
    mux: &MuxLink,
    framing: &Framing,
    sink: &mut Si,
    ping_every: Duration,
) where
    Si: Sink<Message> + Unpin,
{
    let mut ping = tokio::time::interval(ping_every);
    ping.reset();
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    loop {
        let batch = tokio::select! {
            biased;
            frames = mux.next_batch() => match frames {
                Some(frames) => Some(framing.frame(frames)),
                None => break,
            },
            () = &mut shutting_down => {
                mux.close(Refusal::ServerRestart.into());
                break;
            }
            _ = ping.tick() => None,
        };
        let write = async {
            match batch {
                Some(frames) => {
                    for frame in frames {
                        sink.feed(Message::Binary(frame)).await?;
                    }
                    sink.flush().await
                }
                None => sink.send(Message::Binary(frame::ping())).await,
            }
        };
        tokio::select! {
            biased;
            () = mux.closed(Side::Writer) => break,
            written = write => if written.is_err() {
                mux.end();
                return;
            },
        }
    }
    mux.end();
    let reason = mux.reason().unwrap_or(crate::ws::writer::NORMAL_CLOSURE);
    let _ = tokio::time::timeout(
        crate::ws::writer::CLOSE_GRACE,
        crate::ws::writer::send_close(sink, reason),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_become_one_sync_status_per_committed_message() {
        let framing = Framing::default();
        framing.add(3, "b");
        let frames = framing.frame([
            (3, crate::protocol::durable_ack(2)),
            (SESSION, Bytes::from_static(&[10])),
            (3, crate::protocol::durable_ack(2)),
            (3, crate::protocol::durable_ack(3)),
            (3, crate::protocol::update(&[0, 0])),
            (3, crate::protocol::stateless("s")),
            (4, crate::protocol::update(&[0, 0])),
        ]);
        let committed = frame::sync_status("b", true);
        assert_eq!(
            frames,
            [
                committed.clone(),
                committed.clone(),
                Bytes::from_static(&[10]),
                committed,
                Bytes::from_static(&[1, b'b', 0, 2, 2, 0, 0]),
                Bytes::from_static(&[1, b'b', 5, 1, b's']),
            ],
            "acks only grow; frames of an unknown channel are dropped"
        );
        framing.remove(3);
        assert!(
            framing
                .frame([(3, crate::protocol::update(&[0, 0]))])
                .is_empty()
        );
    }
}
