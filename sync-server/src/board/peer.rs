//! A connection as its board actor sees it: an outbound queue and a way to close it (with a
//! [`Refusal`]'s code and reason).

pub(crate) use super::link::{Delivery, PeerLink};

/// Close codes and reasons live in [`crate::refusal`]; the board's code names them from here.
pub use crate::refusal::{CloseReason, Refusal, close};

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
