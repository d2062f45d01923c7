//! A connection as its board actor sees it: an outbound queue and a way to close it.

pub(crate) use super::link::{Delivery, PeerLink};

/// WebSocket close codes the server uses (documented in `PROTOCOL.md`).
pub mod close {
    /// The server is shutting down or restarting; reconnect.
    pub const SERVER_RESTART: u16 = 1012;
    /// An internal failure (a commit failed); reconnect and resend.
    pub const INTERNAL: u16 = 1011;
    /// The connection could not keep up with the board; reconnect and resync.
    pub const TOO_SLOW: u16 = 1013;
    /// The client sent something that is not a y-protocols message, or a bad board id.
    pub const BAD_MESSAGE: u16 = 4400;
    /// The board was deleted, or a read-only token names a board that does not exist.
    pub const BOARD_DELETED: u16 = 4404;
    /// A message over the size limit, an update that would pass the board's size limit, or
    /// awareness over its limits (client ids or state size per connection).
    pub const TOO_LARGE: u16 = 4413;
    /// An update that does not decode or apply, or nests deeper than the limit.
    pub const BAD_UPDATE: u16 = 4422;
    /// No valid token (missing, malformed, forged or expired, also when it expires while
    /// connected). Fetch a fresh token and reconnect.
    pub const UNAUTHORIZED: u16 = 4401;
    /// The token does not cover this board.
    pub const FORBIDDEN: u16 = 4403;
    /// The connection sent messages faster than its rate for most of a minute, after being
    /// slowed down all along (a faster client is throttled, not closed). Clients reconnect.
    pub const POLICY: u16 = 1008;
    /// Too many connections to this board or from this address; try again later (y-websocket
    /// clients reconnect with backoff on codes outside 4400-4499).
    pub const BUSY: u16 = 4503;
}

/// Why a connection is being closed: a close code and a short reason for the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// A short, client-safe reason.
    pub reason: &'static str,
}

/// Identifies one connection for the life of the process.
pub type ConnId = u64;

/// A connection joined to a board.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) link: PeerLink,
    /// Whether it asked for durable acknowledgements (`?ack=1`).
    pub(crate) wants_acks: bool,
    /// Document messages received from it so far (step 2 and updates).
    pub(crate) doc_messages: u64,
    /// The first of its messages still waiting for clocks it skips: acknowledgements stop
    /// before it.
    pub(crate) held_from: Option<u64>,
    /// The highest count acknowledged to it (acknowledgements only grow).
    pub(crate) acked: u64,
    /// Who it is, for ownership of awareness states.
    pub(crate) identity: super::presence::Identity,
}

impl Peer {
    /// A connection that just joined: nothing received or acknowledged yet.
    pub(crate) fn new(
        link: PeerLink,
        wants_acks: bool,
        identity: super::presence::Identity,
    ) -> Self {
        Self {
            link,
            wants_acks,
            doc_messages: 0,
            held_from: None,
            acked: 0,
            identity,
        }
    }
}
