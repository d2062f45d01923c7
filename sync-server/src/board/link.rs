//! The link between a board actor and one connection's task: a bounded outbound queue and a
//! switch that closes the connection.
//!
//! The queue is bounded in frames and in bytes: a connection that stops reading is closed as
//! too slow once either bound is reached, so what it can make the server hold is bounded
//! whatever the board's size. A frame larger than the byte bound still goes out alone, so the
//! bound is never below one frame. A sync step 2 answer is outside the byte bound: a big
//! board's first sync (50 MB) is larger than the bound (32 MiB by default) and is legitimately
//! queued behind the board's step 1 or followed by live updates; it is bounded by the board's
//! size instead, and the actor queues at most one per connection (see below). The queue also remembers
//! whether a sync step 2 answer waits in it, so that a client asking again and again is
//! answered once, not once per request.
//!
//! The actor offers frames and may close the link; the connection's writer takes everything
//! queued at once and writes it in one flush; its reader waits for the link to close. Either side
//! may close it, and the first close reason given is the one the client sees.
//!
//! This is a mutex around a `VecDeque`, not a channel: a fan-out to many connections offers one
//! frame to each, and the writer wakes once per batch, not once per frame. An idle connection
//! holds no queue allocation at all (the writer takes the whole queue with it), which matters
//! with thousands of idle connections (BENCHMARKS.md, idle memory).
//!
//! A connection that carries several boards (the Hocuspocus dialect) has one queue for all of
//! them, with a channel per board ([`mux`]). A board holds either kind as an [`Outbound`]: it
//! offers frames and closes, and never knows which dialect the connection speaks.

pub(crate) mod mux;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::peer::CloseReason;

/// What happened when a frame was offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Queued; the number is how many frames now wait in its queue.
    Queued(usize),
    /// Its queue is full: it is too slow and must be closed.
    Full,
    /// It is closed.
    Closed,
}

/// Which side of the connection waits on the link (each has its own waker slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Reader,
    Writer,
}

/// A connection's outbound side as its board sees it: a link of its own (one board per
/// connection) or one board's channel of a multiplexed link.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A connection to this board alone.
    Direct(PeerLink),
    /// This board's channel of a connection carrying several boards.
    Channel(mux::ChannelLink),
}

impl From<PeerLink> for Outbound {
    fn from(link: PeerLink) -> Self {
        Self::Direct(link)
    }
}

impl From<mux::ChannelLink> for Outbound {
    fn from(link: mux::ChannelLink) -> Self {
        Self::Channel(link)
    }
}

impl Outbound {
    /// Queues `frame` unless the queue is full or the link closed.
    pub(crate) fn offer(&self, frame: Bytes) -> Delivery {
        match self {
            Self::Direct(link) => link.offer(frame),
            Self::Channel(link) => link.offer(frame),
        }
    }

    /// Queues a sync step 2 answer, like [`Outbound::offer`]; see
    /// [`Outbound::sync_reply_waiting`].
    pub(crate) fn offer_sync_reply(&self, frame: Bytes) -> Delivery {
        match self {
            Self::Direct(link) => link.offer_sync_reply(frame),
            Self::Channel(link) => link.offer_sync_reply(frame),
        }
    }

    /// Whether a sync step 2 answer waits in the queue, not yet taken by the writer.
    pub(crate) fn sync_reply_waiting(&self) -> bool {
        match self {
            Self::Direct(link) => link.sync_reply_waiting(),
            Self::Channel(link) => link.sync_reply_waiting(),
        }
    }

    /// Closes the connection (a board's channel: only that board's part of it) with
    /// `reason`.
    pub(crate) fn close(&self, reason: CloseReason) {
        match self {
            Self::Direct(link) => link.close(reason),
            Self::Channel(link) => link.close(reason),
        }
    }
}

/// One connection's link; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct PeerLink(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`, the sync step 2 answer not counted.
    bytes: usize,
    /// Whether `frames` holds a sync step 2 answer the writer has not taken yet.
    sync_reply: bool,
    closed: bool,
    reason: Option<CloseReason>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl State {
    fn waker(&mut self, side: Side) -> &mut Option<Waker> {
        match side {
            Side::Reader => &mut self.reader,
            Side::Writer => &mut self.writer,
        }
    }

    fn register(&mut self, side: Side, cx: &Context<'_>) {
        let slot = self.waker(side);
        match slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }
}

impl PeerLink {
    /// A link whose queue holds at most `capacity` frames (at least one) and `max_bytes` bytes
    /// (or one frame of any size).
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

    /// Queues `frame` unless the queue is full or the link closed.
    pub(crate) fn offer(&self, frame: Bytes) -> Delivery {
        self.push(frame, false)
    }

    /// Queues a sync step 2 answer, like [`PeerLink::offer`]; see
    /// [`PeerLink::sync_reply_waiting`].
    pub(crate) fn offer_sync_reply(&self, frame: Bytes) -> Delivery {
        self.push(frame, true)
    }

    /// Whether a sync step 2 answer waits in the queue, not yet taken by the writer: a client
    /// that asks again meanwhile gets everything newer through the updates queued after it.
    pub(crate) fn sync_reply_waiting(&self) -> bool {
        self.lock().sync_reply
    }

    fn push(&self, frame: Bytes, sync_reply: bool) -> Delivery {
        let (depth, wake) = {
            let mut state = self.lock();
            if state.closed {
                return Delivery::Closed;
            }
            // Frames counted against the byte bound: all but the sync step 2 answer.
            let others = state.frames.len() - usize::from(state.sync_reply);
            let over_bytes = !sync_reply
                && others > 0
                && state.bytes.saturating_add(frame.len()) > self.0.max_bytes;
            if state.frames.len() >= self.0.capacity || over_bytes {
                return Delivery::Full;
            }
            if !sync_reply {
                state.bytes += frame.len();
            }
            state.sync_reply |= sync_reply;
            state.frames.push_back(frame);
            (state.frames.len(), state.writer.take())
        };
        if let Some(writer) = wake {
            writer.wake();
        }
        Delivery::Queued(depth)
    }

    /// Frames waiting to be written.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().frames.len()
    }

    /// Closes the link with `reason` (the first reason given wins); queued frames are dropped.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.shut(Some(reason));
    }

    /// Closes the link without a reason of its own (the connection ended): a reason given
    /// before stays, otherwise the close is a normal one.
    pub(crate) fn end(&self) {
        self.shut(None);
    }

    fn shut(&self, reason: Option<CloseReason>) {
        let (reader, writer, dropped) = {
            let mut state = self.lock();
            if state.reason.is_none() {
                state.reason = reason;
            }
            state.closed = true;
            state.bytes = 0;
            state.sync_reply = false;
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

    /// Why the link was closed, if a reason was given.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.lock().reason
    }

    /// Resolves once the link is closed.
    pub(crate) fn closed(&self, side: Side) -> Closed<'_> {
        Closed { link: self, side }
    }

    /// Resolves to every queued frame once there is at least one, or to `None` once the link
    /// is closed. Only the writer calls it.
    pub(crate) fn next_batch(&self) -> NextBatch<'_> {
        NextBatch { link: self }
    }
}

/// See [`PeerLink::closed`].
#[derive(Debug)]
pub(crate) struct Closed<'a> {
    link: &'a PeerLink,
    side: Side,
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.link.lock();
        if state.closed {
            return Poll::Ready(());
        }
        state.register(self.side, cx);
        Poll::Pending
    }
}

/// See [`PeerLink::next_batch`].
#[derive(Debug)]
pub(crate) struct NextBatch<'a> {
    link: &'a PeerLink,
}

impl Future for NextBatch<'_> {
    type Output = Option<VecDeque<Bytes>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.link.lock();
        if state.closed {
            return Poll::Ready(None);
        }
        if !state.frames.is_empty() {
            // Taking the whole queue leaves an idle connection with no queue allocation.
            state.bytes = 0;
            state.sync_reply = false;
            return Poll::Ready(Some(std::mem::take(&mut state.frames)));
        }
        state.register(Side::Writer, cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(0.into()));
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &Count) -> usize {
        count.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    const REASON: CloseReason = CloseReason {
        code: 1013,
        reason: "too slow",
    };

    #[test]
    fn a_batch_takes_every_queued_frame_and_wakes_the_writer_once() {
        let link = PeerLink::new(3, usize::MAX);
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut next = link.next_batch();
        assert!(Pin::new(&mut next).poll(&mut cx).is_pending());
        assert_eq!(link.offer(Bytes::from_static(b"a")), Delivery::Queued(1));
        assert_eq!(link.offer(Bytes::from_static(b"b")), Delivery::Queued(2));
        assert_eq!(link.offer(Bytes::from_static(b"c")), Delivery::Queued(3));
        assert_eq!(wakes(&count), 1, "one wake per batch, not per frame");
        assert_eq!(link.offer(Bytes::from_static(b"d")), Delivery::Full);
        assert_eq!(link.queued(), 3);
        let Poll::Ready(Some(batch)) = Pin::new(&mut next).poll(&mut cx) else {
            panic!("the queued frames are ready");
        };
        assert_eq!(batch, [&b"a"[..], b"b", b"c"]);
        assert_eq!(link.queued(), 0);
        assert_eq!(link.offer(Bytes::from_static(b"e")), Delivery::Queued(1));
    }

    #[test]
    fn the_first_reason_wins_and_closing_wakes_both_sides_and_drops_the_queue() {
        let link = PeerLink::new(8, usize::MAX);
        let (readers, reader) = counter();
        let (writers, writer) = counter();
        assert_eq!(link.offer(Bytes::from_static(b"a")), Delivery::Queued(1));
        let mut closed = link.closed(Side::Reader);
        assert!(
            Pin::new(&mut closed)
                .poll(&mut Context::from_waker(&reader))
                .is_pending()
        );
        let mut during_write = link.closed(Side::Writer);
        assert!(
            Pin::new(&mut during_write)
                .poll(&mut Context::from_waker(&writer))
                .is_pending()
        );
        link.close(REASON);
        link.close(CloseReason {
            code: 1000,
            reason: "",
        });
        link.end();
        assert_eq!((wakes(&readers), wakes(&writers)), (1, 1));
        assert_eq!(link.reason(), Some(REASON));
        assert_eq!(link.queued(), 0);
        assert_eq!(link.offer(Bytes::from_static(b"b")), Delivery::Closed);
        let mut cx = Context::from_waker(&reader);
        assert!(Pin::new(&mut closed).poll(&mut cx).is_ready());
        assert_eq!(
            Pin::new(&mut link.next_batch()).poll(&mut cx),
            Poll::Ready(None)
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_but_takes_any_one_frame() {
        let link = PeerLink::new(100, 10);
        assert_eq!(link.offer(Bytes::from(vec![0; 25])), Delivery::Queued(1));
        assert_eq!(link.offer(Bytes::from_static(b"x")), Delivery::Full);
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut link.next_batch()).poll(&mut cx),
            Poll::Ready(Some(_))
        ));
        assert_eq!(link.offer(Bytes::from(vec![0; 6])), Delivery::Queued(1));
        assert_eq!(link.offer(Bytes::from(vec![0; 4])), Delivery::Queued(2));
        assert_eq!(link.offer(Bytes::from_static(b"x")), Delivery::Full);
    }

    #[test]
    fn a_sync_reply_larger_than_the_byte_bound_is_queued_beside_other_frames() {
        // A 50 MB board's first sync on a link bounded at 32 MiB, scaled down: the board's step
        // 1 waits in the queue, the step 2 comes, then live updates.
        let link = PeerLink::new(100, 10);
        assert_eq!(link.offer(Bytes::from(vec![0; 4])), Delivery::Queued(1));
        assert_eq!(
            link.offer_sync_reply(Bytes::from(vec![0; 50])),
            Delivery::Queued(2)
        );
        assert_eq!(link.offer(Bytes::from(vec![0; 6])), Delivery::Queued(3));
        // The bound still holds for everything else.
        assert_eq!(link.offer(Bytes::from_static(b"x")), Delivery::Full);
        // Alone, it goes out too, and what follows it is bounded as before.
        let link = PeerLink::new(100, 10);
        assert_eq!(
            link.offer_sync_reply(Bytes::from(vec![0; 50])),
            Delivery::Queued(1)
        );
        assert_eq!(link.offer(Bytes::from(vec![0; 25])), Delivery::Queued(2));
        assert_eq!(link.offer(Bytes::from_static(b"x")), Delivery::Full);
    }

    #[test]
    fn a_waiting_sync_reply_is_remembered_until_the_writer_takes_it() {
        let link = PeerLink::new(8, usize::MAX);
        assert!(!link.sync_reply_waiting());
        assert_eq!(link.offer(Bytes::from_static(b"u")), Delivery::Queued(1));
        assert!(!link.sync_reply_waiting());
        assert_eq!(
            link.offer_sync_reply(Bytes::from_static(b"s")),
            Delivery::Queued(2)
        );
        assert!(link.sync_reply_waiting());
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut link.next_batch()).poll(&mut cx),
            Poll::Ready(Some(_))
        ));
        assert!(!link.sync_reply_waiting());
    }

    #[test]
    fn ending_without_a_reason_leaves_none() {
        let link = PeerLink::new(1, usize::MAX);
        link.end();
        assert_eq!(link.reason(), None);
        assert_eq!(link.offer(Bytes::new()), Delivery::Closed);
    }
}
