//! One connection carrying several boards (the Hocuspocus dialect multiplexes documents over
//! one socket): one outbound queue, bounded in frames and bytes like a [`super::PeerLink`]'s,
//! shared by a channel per board and by the session's own frames ([`SESSION`]).
//!
//! Each board's actor sees its channel as an ordinary connection ([`super::Outbound`]): it
//! offers frames to it and may close it. Closing a channel does not close the connection: the
//! session learns of it ([`MuxLink::event`]) and decides what the connection does (close one
//! document, or the whole socket). The session closes a channel itself when its client leaves a
//! board ([`MuxLink::drop_channel`]). The queue is the connection's, so one slow socket is too
//! slow for every board on it.
//!
//! The writer takes every queued frame at once, each tagged with its channel, and frames it for
//! the wire (the board's name in front); the board actor never knows which dialect a
//! connection speaks.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{Delivery, Side};
use crate::board::peer::CloseReason;

/// A channel of a multiplexed link: one board on the connection.
pub(crate) type ChannelId = u32;

/// The session's own channel: frames it queues already framed for the wire. Always open.
pub(crate) const SESSION: ChannelId = 0;

/// A multiplexed connection's outbound side; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct MuxLink(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

/// A frame queued on a [`MuxLink`], as the writer takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub(crate) channel: ChannelId,
    pub(crate) frame: Bytes,
}

/// What [`MuxLink::next_batch`] resolves to: every queued frame, and the open channels' labels
/// if they changed since the version the writer has.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) frames: VecDeque<Queued>,
    /// The labels of the channels open now, and their version, if it is not the writer's.
    pub(crate) labels: Option<Labels>,
}

/// The labels of a link's open channels (given when each was opened: what the writer needs to
/// frame a channel's frames for the wire), at one version.
#[derive(Debug, Clone, Default)]
pub(crate) struct Labels {
    pub(crate) version: u64,
    pub(crate) labels: Vec<(ChannelId, Bytes)>,
}

impl Labels {
    /// The label of `channel`, if it was open at this version.
    pub(crate) fn get(&self, channel: ChannelId) -> Option<&Bytes> {
        self.labels
            .iter()
            .find_map(|(c, label)| (*c == channel).then_some(label))
    }
}

/// An open channel.
#[derive(Debug)]
struct Channel {
    id: ChannelId,
    label: Bytes,
    /// Whether a sync step 2 answer waits in the queue for it.
    sync_reply: bool,
    /// That answer's bytes (outside the byte bound, as on a link of its own: see
    /// [`super`]).
    reply_bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Queued>,
    /// Bytes in `frames`, the channels' sync step 2 answers not counted.
    bytes: usize,
    /// Open channels besides [`SESSION`] (a few per connection: a list beats a hash map).
    channels: Vec<Channel>,
    /// Changes whenever a channel opens or closes: the writer refreshes its labels then.
    version: u64,
    /// Channels their board closed, with its reason, not yet seen by the session.
    closed_by_board: VecDeque<(ChannelId, CloseReason)>,
    closed: bool,
    /// Closing once the writer has taken what is queued ([`MuxLink::finish`]).
    finishing: bool,
    reason: Option<CloseReason>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// What the session learns from [`MuxLink::event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MuxEvent {
    /// The whole connection closed.
    Closed,
    /// A board closed its channel with this reason (the connection stays open).
    ChannelClosed(ChannelId, CloseReason),
}

impl State {
    fn register(&mut self, side: Side, cx: &Context<'_>) {
        let slot = match side {
            Side::Reader => &mut self.reader,
            Side::Writer => &mut self.writer,
        };
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    fn drop_frames_of(&mut self, channel: ChannelId) {
        let before = self.frames.len();
        self.frames.retain(|q| q.channel != channel);
        if self.frames.len() != before {
            let replies: usize = self.replies().map(|c| c.reply_bytes).sum();
            let all: usize = self.frames.iter().map(|q| q.frame.len()).sum();
            self.bytes = all.saturating_sub(replies);
        }
    }

    /// The channels whose sync step 2 answer waits in the queue.
    fn replies(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(|c| c.sync_reply)
    }

    fn channel(&mut self, id: ChannelId) -> Option<&mut Channel> {
        self.channels.iter_mut().find(|c| c.id == id)
    }

    /// Removes channel `id`; whether it was open.
    fn remove_channel(&mut self, id: ChannelId) -> bool {
        let before = self.channels.len();
        self.channels.retain(|c| c.id != id);
        let removed = self.channels.len() != before;
        if removed {
            self.version += 1;
        }
        removed
    }
}

impl MuxLink {
    /// A link whose queue holds at most `capacity` frames (at least one) and `max_bytes` bytes
    /// (or one frame of any size), over every channel together.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self(Arc::new(Shared {
            capacity: capacity.max(1),
            max_bytes,
            state: Mutex::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still whole.
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens `channel` (not [`SESSION`]), labelled `label` (see [`Labels`]), and returns its
    /// end for a board.
    pub(crate) fn open(&self, channel: ChannelId, label: Bytes) -> ChannelLink {
        debug_assert_ne!(channel, SESSION);
        let mut state = self.lock();
        state.remove_channel(channel);
        state.channels.push(Channel {
            id: channel,
            label,
            sync_reply: false,
            reply_bytes: 0,
        });
        state.version += 1;
        drop(state);
        ChannelLink {
            mux: self.clone(),
            channel,
        }
    }

    /// Closes `channel` from the session's side (its client left the board): what the board
    /// offers to it from now on is refused as [`Delivery::Closed`], and its queued frames are
    /// dropped. Nothing is reported back to the session.
    pub(crate) fn drop_channel(&self, channel: ChannelId) {
        let mut state = self.lock();
        if state.remove_channel(channel) {
            state.drop_frames_of(channel);
        }
        state.closed_by_board.retain(|(c, _)| *c != channel);
    }

    /// Queues `frame` on `channel`: the session's own ([`SESSION`]) or a board's.
    pub(crate) fn offer(&self, channel: ChannelId, frame: Bytes) -> Delivery {
        self.push(channel, frame, false)
    }

    fn push(&self, channel: ChannelId, frame: Bytes, sync_reply: bool) -> Delivery {
        let (depth, wake) = {
            let mut state = self.lock();
            if state.closed || state.finishing {
                return Delivery::Closed;
            }
            // Frames counted against the byte bound: all but the sync step 2 answers.
            let others = state.frames.len() - state.replies().count();
            let over_bytes = !sync_reply
                && others > 0
                && state.bytes.saturating_add(frame.len()) > self.0.max_bytes;
            let full = state.frames.len() >= self.0.capacity || over_bytes;
            let sync_reply = sync_reply && channel != SESSION;
            if channel != SESSION {
                let Some(open) = state.channel(channel) else {
                    return Delivery::Closed;
                };
                if sync_reply && !full && !open.sync_reply {
                    open.sync_reply = true;
                    open.reply_bytes = frame.len();
                }
            }
            if full {
                return Delivery::Full;
            }
            if !sync_reply {
                state.bytes += frame.len();
            }
            state.frames.push_back(Queued { channel, frame });
            (state.frames.len(), state.writer.take())
        };
        if let Some(writer) = wake {
            writer.wake();
        }
        Delivery::Queued(depth)
    }

    /// Closes the whole connection with `reason` (the first reason given wins); queued frames
    /// are dropped.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.shut(Some(reason));
    }

    /// Closes the whole connection without a reason of its own (it ended). A connection
    /// finishing ([`MuxLink::finish`]) is left to its writer.
    pub(crate) fn end(&self) {
        if !self.lock().finishing {
            self.shut(None);
        }
    }

    /// Closes the whole connection with `reason` once the writer has sent what is queued now
    /// (a refusal the client must read before the close frame): nothing more is queued, the
    /// reader stops, and the writer takes the rest, then closes.
    pub(crate) fn finish(&self, reason: CloseReason) {
        let (reader, writer) = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            if state.reason.is_none() {
                state.reason = Some(reason);
            }
            state.finishing = true;
            state.channels.clear();
            (state.reader.take(), state.writer.take())
        };
        for waker in [reader, writer].into_iter().flatten() {
            waker.wake();
        }
    }

    fn shut(&self, reason: Option<CloseReason>) {
        let (reader, writer, dropped) = {
            let mut state = self.lock();
            if state.reason.is_none() {
                state.reason = reason;
            }
            state.closed = true;
            state.bytes = 0;
            state.channels.clear();
            (
                state.reader.take(),
                state.writer.take(),
                std::mem::take(&mut state.frames),
            )
        };
        drop(dropped);
        for waker in [reader, writer].into_iter().flatten() {
            waker.wake();
        }
    }

    /// Why the connection was closed, if a reason was given.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.lock().reason
    }

    /// Resolves once the whole connection is closed.
    pub(crate) fn closed(&self, side: Side) -> Closed<'_> {
        Closed { mux: self, side }
    }

    /// Resolves to the next thing the session must handle: the connection closed, or a board
    /// closed its channel. Only the session's reader calls it.
    pub(crate) fn event(&self) -> Event<'_> {
        Event { mux: self }
    }

    /// Resolves to every queued frame, with its channel, once there is at least one (and to the
    /// channels' labels if their version is not `labels`), or to `None` once the connection is
    /// closed. Only the writer calls it.
    pub(crate) fn next_batch(&self, labels: u64) -> NextBatch<'_> {
        NextBatch { mux: self, labels }
    }
}

/// One board's channel of a [`MuxLink`], as the board's actor holds it.
#[derive(Debug, Clone)]
pub(crate) struct ChannelLink {
    mux: MuxLink,
    channel: ChannelId,
}

impl ChannelLink {
    pub(crate) fn offer(&self, frame: Bytes) -> Delivery {
        self.mux.push(self.channel, frame, false)
    }

    pub(crate) fn offer_sync_reply(&self, frame: Bytes) -> Delivery {
        self.mux.push(self.channel, frame, true)
    }

    pub(crate) fn sync_reply_waiting(&self) -> bool {
        self.mux
            .lock()
            .channel(self.channel)
            .is_some_and(|c| c.sync_reply)
    }

    /// The board closes this channel: its frames are dropped, and the session is told why.
    pub(crate) fn close(&self, reason: CloseReason) {
        let reader = {
            let mut state = self.mux.lock();
            if !state.remove_channel(self.channel) {
                return;
            }
            state.drop_frames_of(self.channel);
            state.closed_by_board.push_back((self.channel, reason));
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// See [`MuxLink::closed`].
#[derive(Debug)]
pub(crate) struct Closed<'a> {
    mux: &'a MuxLink,
    side: Side,
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.mux.lock();
        // A finishing connection is closed for its reader; its writer still has work.
        if state.closed || (state.finishing && self.side == Side::Reader) {
            return Poll::Ready(());
        }
        state.register(self.side, cx);
        Poll::Pending
    }
}

/// See [`MuxLink::event`].
#[derive(Debug)]
pub(crate) struct Event<'a> {
    mux: &'a MuxLink,
}

impl Future for Event<'_> {
    type Output = MuxEvent;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MuxEvent> {
        let mut state = self.mux.lock();
        if state.closed || state.finishing {
            return Poll::Ready(MuxEvent::Closed);
        }
        if let Some((channel, reason)) = state.closed_by_board.pop_front() {
            return Poll::Ready(MuxEvent::ChannelClosed(channel, reason));
        }
        state.register(Side::Reader, cx);
        Poll::Pending
    }
}

/// See [`MuxLink::next_batch`].
#[derive(Debug)]
pub(crate) struct NextBatch<'a> {
    mux: &'a MuxLink,
    labels: u64,
}

impl Future for NextBatch<'_> {
    type Output = Option<Batch>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.mux.lock();
        if state.closed {
            return Poll::Ready(None);
        }
        if !state.frames.is_empty() {
            state.bytes = 0;
            for channel in &mut state.channels {
                channel.sync_reply = false;
                channel.reply_bytes = 0;
            }
            let labels = (state.version != self.labels).then(|| Labels {
                version: state.version,
                labels: state
                    .channels
                    .iter()
                    .map(|c| (c.id, c.label.clone()))
                    .collect(),
            });
            return Poll::Ready(Some(Batch {
                frames: std::mem::take(&mut state.frames),
                labels,
            }));
        }
        if state.finishing {
            return Poll::Ready(None);
        }
        state.register(Side::Writer, cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(0.into()));
        (count.clone(), Waker::from(count))
    }

    const TOO_LARGE: CloseReason = CloseReason {
        code: 4413,
        reason: "board size limit reached",
    };

    fn batch(mux: &MuxLink) -> Vec<(ChannelId, Bytes)> {
        let (_, waker) = counter();
        match Pin::new(&mut mux.next_batch(0)).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Some(batch)) => batch
                .frames
                .into_iter()
                .map(|q| (q.channel, q.frame))
                .collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn open(mux: &MuxLink, channel: ChannelId) -> ChannelLink {
        mux.open(channel, Bytes::from(format!("label-{channel}")))
    }

    #[test]
    fn a_batch_brings_the_labels_when_channels_changed() {
        let mux = MuxLink::new(16, usize::MAX);
        let a = open(&mux, 1);
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut take = |seen: u64| match Pin::new(&mut mux.next_batch(seen)).poll(&mut cx) {
            Poll::Ready(Some(batch)) => batch.labels,
            other => panic!("a batch, not {other:?}"),
        };
        a.offer(Bytes::from_static(b"a"));
        let labels = take(0).expect("new labels");
        assert_eq!(labels.get(1), Some(&Bytes::from_static(b"label-1")));
        assert_eq!(labels.get(2), None);
        a.offer(Bytes::from_static(b"a"));
        assert!(take(labels.version).is_none(), "unchanged");
        let b = open(&mux, 2);
        b.offer(Bytes::from_static(b"b"));
        let newer = take(labels.version).expect("a channel opened");
        assert!(newer.get(2).is_some());
        mux.drop_channel(1);
        mux.offer(SESSION, Bytes::from_static(b"s"));
        let last = take(newer.version).expect("a channel closed");
        assert_eq!(last.get(1), None);
    }

    #[test]
    fn channels_share_one_bounded_queue_in_order() {
        let mux = MuxLink::new(3, usize::MAX);
        let (a, b) = (open(&mux, 1), open(&mux, 2));
        assert_eq!(a.offer(Bytes::from_static(b"a1")), Delivery::Queued(1));
        assert_eq!(
            mux.offer(SESSION, Bytes::from_static(b"s")),
            Delivery::Queued(2)
        );
        assert_eq!(b.offer(Bytes::from_static(b"b1")), Delivery::Queued(3));
        assert_eq!(a.offer(Bytes::from_static(b"a2")), Delivery::Full);
        let got = batch(&mux);
        assert_eq!(
            got,
            [
                (1, Bytes::from_static(b"a1")),
                (SESSION, Bytes::from_static(b"s")),
                (2, Bytes::from_static(b"b1"))
            ]
        );
        assert_eq!(mux.offer(7, Bytes::from_static(b"x")), Delivery::Closed);
    }

    #[test]
    fn sync_replies_larger_than_the_byte_bound_are_queued_beside_other_frames() {
        // A big board's first sync behind the session's Auth answer, then live updates.
        let mux = MuxLink::new(100, 10);
        let (a, b) = (open(&mux, 1), open(&mux, 2));
        assert_eq!(
            mux.offer(SESSION, Bytes::from(vec![0; 4])),
            Delivery::Queued(1)
        );
        assert_eq!(
            a.offer_sync_reply(Bytes::from(vec![0; 50])),
            Delivery::Queued(2)
        );
        assert_eq!(
            b.offer_sync_reply(Bytes::from(vec![0; 70])),
            Delivery::Queued(3)
        );
        assert_eq!(a.offer(Bytes::from(vec![0; 6])), Delivery::Queued(4));
        // The bound still holds for everything else.
        assert_eq!(b.offer(Bytes::from_static(b"x")), Delivery::Full);
        // A channel closing takes its answer with it; the others' bytes stay counted.
        a.close(CloseReason {
            code: 4000,
            reason: "",
        });
        assert_eq!(b.offer(Bytes::from(vec![0; 6])), Delivery::Queued(3));
        assert_eq!(b.offer(Bytes::from_static(b"x")), Delivery::Full);
    }

    #[test]
    fn a_board_closing_its_channel_tells_the_session_and_leaves_the_rest_open() {
        let mux = MuxLink::new(16, usize::MAX);
        let (a, b) = (open(&mux, 1), open(&mux, 2));
        a.offer(Bytes::from_static(b"a"));
        b.offer(Bytes::from_static(b"b"));
        let (wakes, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut event = mux.event();
        assert!(Pin::new(&mut event).poll(&mut cx).is_pending());
        a.close(TOO_LARGE);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            Pin::new(&mut event).poll(&mut cx),
            Poll::Ready(MuxEvent::ChannelClosed(1, TOO_LARGE))
        );
        assert_eq!(a.offer(Bytes::from_static(b"late")), Delivery::Closed);
        assert!(b.offer(Bytes::from_static(b"b2")) == Delivery::Queued(2));
        assert_eq!(
            batch(&mux),
            [
                (2, Bytes::from_static(b"b")),
                (2, Bytes::from_static(b"b2"))
            ],
            "the closed channel's frames are dropped, the others' kept"
        );
        assert_eq!(mux.reason(), None, "the connection itself stays open");
    }

    #[test]
    fn the_session_dropping_a_channel_reports_nothing() {
        let mux = MuxLink::new(16, usize::MAX);
        let a = open(&mux, 1);
        a.offer(Bytes::from_static(b"a"));
        mux.drop_channel(1);
        a.close(TOO_LARGE);
        let (_, waker) = counter();
        assert!(
            Pin::new(&mut mux.event())
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(a.offer(Bytes::from_static(b"b")), Delivery::Closed);
        mux.offer(SESSION, Bytes::from_static(b"s"));
        assert_eq!(batch(&mux), [(SESSION, Bytes::from_static(b"s"))]);
    }

    #[test]
    fn sync_replies_are_remembered_per_channel_until_taken() {
        let mux = MuxLink::new(16, usize::MAX);
        let (a, b) = (open(&mux, 1), open(&mux, 2));
        a.offer_sync_reply(Bytes::from_static(b"s2"));
        assert!(a.sync_reply_waiting());
        assert!(!b.sync_reply_waiting());
        batch(&mux);
        assert!(!a.sync_reply_waiting());
    }

    #[test]
    fn a_finishing_connection_sends_what_is_queued_then_closes() {
        let mux = MuxLink::new(16, usize::MAX);
        let a = open(&mux, 1);
        mux.offer(SESSION, Bytes::from_static(b"denied"));
        mux.finish(TOO_LARGE);
        mux.end();
        assert_eq!(a.offer(Bytes::from_static(b"late")), Delivery::Closed);
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert!(
            Pin::new(&mut mux.closed(Side::Reader))
                .poll(&mut cx)
                .is_ready()
        );
        assert!(
            Pin::new(&mut mux.closed(Side::Writer))
                .poll(&mut cx)
                .is_pending()
        );
        assert_eq!(batch(&mux), [(SESSION, Bytes::from_static(b"denied"))]);
        assert!(matches!(
            Pin::new(&mut mux.next_batch(0)).poll(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(mux.reason(), Some(TOO_LARGE));
    }

    #[test]
    fn closing_the_connection_closes_every_channel() {
        let mux = MuxLink::new(16, 10);
        let a = open(&mux, 1);
        assert_eq!(a.offer(Bytes::from(vec![0; 25])), Delivery::Queued(1));
        assert_eq!(a.offer(Bytes::from_static(b"x")), Delivery::Full);
        mux.close(TOO_LARGE);
        mux.end();
        assert_eq!(mux.reason(), Some(TOO_LARGE));
        assert_eq!(a.offer(Bytes::from_static(b"x")), Delivery::Closed);
        assert_eq!(
            mux.offer(SESSION, Bytes::from_static(b"x")),
            Delivery::Closed
        );
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            Pin::new(&mut mux.event()).poll(&mut cx),
            Poll::Ready(MuxEvent::Closed)
        );
        assert!(matches!(
            Pin::new(&mut mux.next_batch(0)).poll(&mut cx),
            Poll::Ready(None)
        ));
    }
}
