//! A session's writer: everything queued for the connection, in one flush per batch; pings;
//! and the close frame.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_util::sync::CancellationToken;

use crate::board::link::Side;
use crate::board::peer::{CloseReason, PeerLink};
use crate::refusal::Refusal;

/// Interval between server pings, at most: a third of the read timeout if that is shorter, so
/// that a live client that says nothing else still answers in time.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a closing connection may take to accept its close frame.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a refused or closed connection's stream is drained, at most.
const DRAIN_FOR: Duration = Duration::from_secs(1);

/// The largest frame a message is written in. A longer message (a large board's sync step 2)
/// goes out as a first frame and continuations, each a slice of the same shared bytes, so that a
/// connection's write buffer never holds more than about one frame of it: the buffer is a copy,
/// and it keeps its capacity for the life of the connection.
pub(crate) const MAX_FRAME: usize = 64 << 10;

/// Queues the binary message `payload` on `sink`, in frames of at most [`MAX_FRAME`] bytes
/// (one `Message::Binary` if it fits). `feed` waits while the sink's buffer is full, so a slow
/// client holds the shared bytes, not copies of them.
pub(crate) async fn feed_binary<Si>(sink: &mut Si, payload: Bytes) -> Result<(), Si::Error>
where
    Si: Sink<Message> + Unpin,
{
    if payload.len() <= MAX_FRAME {
        return sink.feed(Message::Binary(payload)).await;
    }
    feed_fragments(sink, payload.slice(..MAX_FRAME), payload.slice(MAX_FRAME..)).await
}

/// Queues the binary message `head • tail` as fragments: `head` (at most [`MAX_FRAME`] bytes)
/// as the first frame, then `tail` in slices of at most [`MAX_FRAME`]. Neither is copied: a
/// Hocuspocus document's name goes in front of a large board's frame this way.
pub(crate) async fn feed_fragments<Si>(
    sink: &mut Si,
    head: Bytes,
    tail: Bytes,
) -> Result<(), Si::Error>
where
    Si: Sink<Message> + Unpin,
{
    let binary = Frame::message(head, OpCode::Data(Data::Binary), tail.is_empty());
    sink.feed(Message::Frame(binary)).await?;
    let mut start = 0;
    while start < tail.len() {
        let end = (start + MAX_FRAME).min(tail.len());
        let last = end == tail.len();
        let next = Frame::message(tail.slice(start..end), OpCode::Data(Data::Continue), last);
        sink.feed(Message::Frame(next)).await?;
        start = end;
    }
    Ok(())
}

/// The close of a connection that ended without a refusal: the client left, or its socket
/// failed.
pub(super) const NORMAL_CLOSURE: CloseReason = CloseReason {
    code: 1000,
    reason: "",
};

/// How often the writer pings for a read timeout: never more than [`PING_EVERY`] apart, and
/// never zero (`interval` panics on a zero period).
pub(super) fn ping_interval(read_timeout: Duration) -> Duration {
    PING_EVERY
        .min(read_timeout / 3)
        .max(Duration::from_millis(10))
}

/// Writes what the link queues until it closes (or the server shuts down: 1012), then sends
/// the close frame with the link's reason.
pub(super) async fn write_loop<Si>(
    shutdown: &CancellationToken,
    link: &PeerLink,
    sink: &mut Si,
    ping_every: Duration,
) where
    Si: Sink<Message> + Unpin,
{
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
                        feed_binary(sink, frame).await?;
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
pub(super) async fn drain<St, E>(stream: &mut St)
where
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Sends a close frame with `reason`, then closes the sink.
pub(super) async fn send_close<Si>(sink: &mut Si, reason: CloseReason)
where
    Si: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: reason.code.into(),
        reason: reason.reason.into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What was fed, as (binary or continuation, final, payload address, payload length).
    fn frames(sink: &[Message]) -> Vec<(OpCode, bool, *const u8, usize)> {
        sink.iter()
            .map(|m| match m {
                Message::Frame(f) => (
                    f.header().opcode,
                    f.header().is_final,
                    f.payload().as_ptr(),
                    f.payload().len(),
                ),
                other => panic!("not a frame: {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_message_over_one_frame_goes_out_as_fragments_of_the_same_bytes() {
        let (binary, more) = (OpCode::Data(Data::Binary), OpCode::Data(Data::Continue));
        let payload = Bytes::from(vec![1u8; 2 * MAX_FRAME + 5]);
        let at = payload.as_ptr();
        let mut sink: Vec<Message> = Vec::new();
        feed_binary(&mut sink, payload).await.unwrap();
        assert_eq!(
            frames(&sink),
            [
                (binary, false, at, MAX_FRAME),
                (more, false, at.wrapping_add(MAX_FRAME), MAX_FRAME),
                (more, true, at.wrapping_add(2 * MAX_FRAME), 5),
            ]
        );

        // Up to one frame: a plain binary message.
        let mut sink: Vec<Message> = Vec::new();
        feed_binary(&mut sink, Bytes::from(vec![2u8; MAX_FRAME]))
            .await
            .unwrap();
        assert!(matches!(&sink[..], [Message::Binary(b)] if b.len() == MAX_FRAME));

        // A head and a tail: the head alone first, then the tail's slices.
        let (head, tail) = (
            Bytes::from_static(b"name"),
            Bytes::from(vec![3u8; MAX_FRAME + 1]),
        );
        let (head_at, tail_at) = (head.as_ptr(), tail.as_ptr());
        let mut sink: Vec<Message> = Vec::new();
        feed_fragments(&mut sink, head, tail).await.unwrap();
        assert_eq!(
            frames(&sink),
            [
                (binary, false, head_at, 4),
                (more, false, tail_at, MAX_FRAME),
                (more, true, tail_at.wrapping_add(MAX_FRAME), 1),
            ]
        );
    }
}
