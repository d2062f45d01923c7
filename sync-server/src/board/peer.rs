//! A connection as its board actor sees it: an outbound queue and a way to close it (with a
//! [`Refusal`]'s code and reason).

pub(crate) use super::link::{Delivery, Outbound, PeerLink};

/// Close codes and reasons live in [`crate::refusal`]; the board's code names them from here.
pub use crate::refusal::{CloseReason, Refusal, close};

/// Identifies one connection for the life of the process.
pub type ConnId = u64;

/// What a connection takes beyond y-protocols' messages, said when it joins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wants {
    /// Durable acknowledgements ([`crate::protocol::durable_ack`]): `?ack=1`, and every
    /// Hocuspocus document (whose writer turns them into SyncStatus messages).
    pub(crate) acks: bool,
    /// Stateless messages ([`crate::protocol::stateless`]): Hocuspocus documents.
    pub(crate) stateless: bool,
    /// The board's sync step 1 as soon as it joins (y-websocket: clients push what they hold
    /// in answer). Without it, the board's step 1 goes out only after each step 2 it answers
    /// ([`crate::board::Step1Answer::Step2AndStep1`]): a Hocuspocus provider counts one step 2
    /// of its own, and so one SyncStatus, per step 1 it sends, and an extra one would make it
    /// report unsynced changes as committed too early.
    pub(crate) step1_on_join: bool,
}

/// A connection joined to a board.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) link: Outbound,
    /// What it takes beyond y-protocols.
    pub(crate) wants: Wants,
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
    pub(crate) fn new(link: Outbound, wants: Wants, identity: super::presence::Identity) -> Self {
        Self {
            link,
            wants,
            doc_messages: 0,
            held_from: None,
            acked: 0,
            identity,
        }
    }
}
