//! A Hocuspocus socket's writer: takes every queued frame of the socket's link at once, frames
//! each for the wire (its document's name in front), writes them in one flush; sends the
//! dialect's pings and the close frame.
//!
//! Boards queue y-protocols frames and two of the server's own: a durable acknowledgement
//! (`[100, count]`: the first `count` document messages are committed), which becomes one
//! SyncStatus `[name][8][1]` per newly committed message, and a stateless message (`[101]
//! payload`), which becomes `[name][5] payload`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::frame;
use crate::board::link::Side;
use crate::board::link::mux::{ChannelId, Labels, MuxLink, Queued, SESSION};
use crate::protocol::{MSG_DURABLE_ACK, MSG_STATELESS};
use crate::refusal::Refusal;
use crate::ws::writer::{MAX_FRAME, feed_binary, feed_fragments};

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

/// How many of each open document's messages the writer has told the provider are committed,
/// by channel; the reader adds and removes documents. The writer locks it only for a batch
/// holding a durable acknowledgement.
#[derive(Debug, Clone, Default)]
pub(super) struct Framing(Arc<Mutex<HashMap<ChannelId, u64>>>);

impl Framing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelId, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add(&self, channel: ChannelId) {
        self.lock().insert(channel, 0);
    }

    pub(super) fn remove(&self, channel: ChannelId) {
        self.lock().remove(&channel);
    }

    /// Appends the messages of a batch as they go on the wire to `out`, in order. A channel's
    /// label is its document's name as it goes in front of its frames; frames of a channel
    /// closed since they were queued are dropped.
    fn frame(&self, batch: impl IntoIterator<Item = Queued>, labels: &Labels, out: &mut Vec<Wire>) {
        for Queued { channel, frame } in batch {
            if channel == SESSION {
                out.push(Wire::Whole(frame));
                continue;
            }
            let Some(label) = labels.get(channel) else {
                continue;
            };
            match frame.first() {
                Some(&tag) if u64::from(tag) == MSG_DURABLE_ACK => {
                    let mut docs = self.lock();
                    // A document that left is told nothing more.
                    let Some(committed) = docs.get_mut(&channel) else {
                        continue;
                    };
                    let count = durable_ack(&frame).unwrap_or(*committed);
                    while *committed < count {
                        *committed += 1;
                        out.push(Wire::Whole(frame::committed(label)));
                    }
                }
                Some(&MSG_STATELESS) => {
                    out.push(Wire::Whole(frame::stateless_from_board(label, &frame)));
                }
                _ => out.push(prefixed(label, &frame)),
            }
        }
    }
}

thread_local! {
    /// The last frame this thread prefixed: a board's broadcast reaches every socket's writer
    /// with the same bytes and, on one board, the same name, so the writers that run after
    /// the first on this thread share its copy instead of each allocating one (BENCHMARKS.md).
    /// The cached frame is kept alive with it, so its address cannot be reused meanwhile.
    static LAST: RefCell<Option<(Bytes, Bytes, Bytes)>> = const { RefCell::new(None) };
}

/// Largest frame [`LAST`] keeps: live updates and awareness (tens to hundreds of bytes), not a
/// board's sync step 2, which a thread would otherwise hold on to until its next frame.
const CACHED_FRAME_BYTES: usize = 4 << 10;

/// A message as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wire {
    /// In one piece.
    Whole(Bytes),
    /// A document's label in front of a frame over [`MAX_FRAME`] (a large board's step 2):
    /// written as fragments, the label first, so the frame is never copied per socket.
    Labelled(Bytes, Bytes),
}

/// `label • frame`: shared with the last call on this thread that prefixed the same frame (the
/// same bytes in memory, not merely equal ones) with an equal label; or, for a frame too large
/// to copy, the two pieces.
fn prefixed(label: &Bytes, frame: &Bytes) -> Wire {
    if frame.len() > MAX_FRAME {
        return Wire::Labelled(label.clone(), frame.clone());
    }
    if frame.len() > CACHED_FRAME_BYTES {
        return Wire::Whole(frame::prefixed(label, frame));
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((body, prefix, out)) = &*last
            && body.as_ptr() == frame.as_ptr()
            && body.len() == frame.len()
            && prefix == label
        {
            return Wire::Whole(out.clone());
        }
        let out = frame::prefixed(label, frame);
        *last = Some((frame.clone(), label.clone(), out.clone()));
        Wire::Whole(out)
    })
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
    // Reused from batch to batch.
    let mut frames = Vec::new();
    let mut labels = Labels::default();
    loop {
        let batch = tokio::select! {
            biased;
            batch = mux.next_batch(labels.version) => match batch {
                Some(batch) => {
                    if let Some(newer) = batch.labels {
                        labels = newer;
                    }
                    framing.frame(batch.frames, &labels, &mut frames);
                    true
                }
                None => break,
            },
            () = &mut shutting_down => {
                mux.close(Refusal::ServerRestart.into());
                break;
            }
            _ = ping.tick() => false,
        };
        let write = async {
            if batch {
                for wire in frames.drain(..) {
                    match wire {
                        Wire::Whole(frame) => feed_binary(sink, frame).await?,
                        Wire::Labelled(label, frame) => {
                            feed_fragments(sink, label, frame).await?;
                        }
                    }
                }
                sink.flush().await
            } else {
                sink.send(Message::Binary(frame::ping())).await
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

    fn queued(channel: ChannelId, frame: Bytes) -> Queued {
        Queued { channel, frame }
    }

    #[test]
    fn acks_become_one_sync_status_per_committed_message() {
        let framing = Framing::default();
        framing.add(3);
        let mut frames = Vec::new();
        let labels = Labels {
            version: 1,
            labels: vec![(3, frame::prefix("b")), (4, frame::prefix("c"))],
        };
        framing.frame(
            [
                queued(3, crate::protocol::durable_ack(2)),
                queued(SESSION, Bytes::from_static(&[10])),
                queued(3, crate::protocol::durable_ack(2)),
                queued(3, crate::protocol::durable_ack(3)),
                queued(3, crate::protocol::update(&[0, 0])),
                queued(3, crate::protocol::stateless("s")),
                queued(4, crate::protocol::durable_ack(1)),
                queued(5, crate::protocol::update(&[0, 0])),
            ],
            &labels,
            &mut frames,
        );
        let committed = Wire::Whole(frame::sync_status("b", true));
        assert_eq!(
            frames,
            [
                committed.clone(),
                committed.clone(),
                Wire::Whole(Bytes::from_static(&[10])),
                committed,
                Wire::Whole(Bytes::from_static(&[1, b'b', 0, 2, 2, 0, 0])),
                Wire::Whole(Bytes::from_static(&[1, b'b', 5, 1, b's'])),
            ],
            "acks only grow; a document that left is told of none, a closed channel nothing"
        );
    }

    #[test]
    fn one_frame_prefixed_once_per_thread_is_shared() {
        let body = crate::protocol::update(&[0, 0]);
        let (a, b) = (frame::prefix("b"), frame::prefix("b"));
        let whole = |wire| match wire {
            Wire::Whole(bytes) => bytes,
            Wire::Labelled(..) => panic!("a small frame is copied whole"),
        };
        let first = whole(prefixed(&a, &body));
        let second = whole(prefixed(&b, &body));
        assert_eq!(first.as_ptr(), second.as_ptr(), "the same copy");
        // Equal bytes elsewhere in memory, or another name, are framed anew.
        let copy = Bytes::copy_from_slice(&body);
        let third = whole(prefixed(&a, &copy));
        assert_eq!(third, first);
        assert_ne!(third.as_ptr(), first.as_ptr());
        let other = whole(prefixed(&frame::prefix("c"), &copy));
        assert_eq!(&other[..2], [1, b'c']);
    }

    #[test]
    fn a_large_frame_keeps_its_bytes_and_gets_the_label_in_front() {
        let body = crate::protocol::update(&vec![7; MAX_FRAME + 1]);
        let label = frame::prefix("big");
        let Wire::Labelled(head, tail) = prefixed(&label, &body) else {
            panic!("a frame over MAX_FRAME is not copied");
        };
        assert_eq!(head, label);
        assert_eq!(tail.as_ptr(), body.as_ptr(), "the board's own bytes");
    }
}
