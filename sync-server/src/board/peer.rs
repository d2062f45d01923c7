//! A connection as its board actor sees it: an outbound queue and a way to close it.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use yrs::block::ClientID;

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
    /// The board was deleted.
    pub const BOARD_DELETED: u16 = 4404;
    /// A message over the size limit.
    pub const TOO_LARGE: u16 = 4413;
    /// An update that does not decode or apply.
    pub const BAD_UPDATE: u16 = 4422;
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

/// The shared half of a connection: the actor pushes frames, either side can close it.
#[derive(Debug, Clone)]
pub(crate) struct PeerLink {
    pub(crate) outbox: mpsc::Sender<Bytes>,
    pub(crate) kill: CancellationToken,
    pub(crate) reason: Arc<OnceLock<CloseReason>>,
}

impl PeerLink {
    /// Asks the connection to close with `reason` (the first reason given wins).
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.kill.cancel();
    }
}

/// A connection joined to a board.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) link: PeerLink,
    /// Whether it asked for durable acknowledgements (`?ack=1`).
    pub(crate) wants_acks: bool,
    /// Document messages received from it so far (step 2 and updates).
    pub(crate) doc_messages: u64,
    /// Awareness client ids this connection announced; cleared when it leaves.
    pub(crate) controlled: HashSet<ClientID>,
}

/// What happened when a frame was offered to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Queued,
    /// Its queue is full: it is too slow and must be closed.
    Full,
    /// It is gone.
    Closed,
}

impl Peer {
    pub(crate) fn offer(&self, frame: Bytes) -> Delivery {
        match self.link.outbox.try_send(frame) {
            Ok(()) => Delivery::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        }
    }
}
