//! Why the server refuses or closes a WebSocket connection: one [`Refusal`] for each close code
//! and reason a client can see, with the metric kind it is counted under. `PROTOCOL.md`'s
//! close-code table documents every one of them, and only them (the tests below read it).
//!
//! A refusal is counted once, in `sync_errors_total{kind}`, by whoever decides it: the
//! WebSocket session for what it decides (admission, reading), the board actor for what it
//! decides (a full board, awareness over its limits, the board's size, nesting, an update that
//! does not apply, a connection too slow, a board too busy), each under
//! [`Refusal::kind`]. Closes that are not the client's doing ([`Refusal::kind`] is `None`: the
//! server shutting down, failing, or deleting the board) are not counted per connection.

use crate::metrics::{Metrics, kind};

/// WebSocket close codes the server uses (documented in `PROTOCOL.md`). Several
/// [`Refusal`]s share one code; each has a reason of its own.
pub mod close {
    /// The server is shutting down or restarting; reconnect.
    pub const SERVER_RESTART: u16 = 1012;
    /// An internal failure (a commit failed, the board is unavailable), or a connection silent
    /// for too long; reconnect and resend.
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

/// Why a connection is being closed: a close code and a short reason for the close frame, as
/// a connection's outbound link carries it to its writer. Made from a [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// A short, client-safe reason.
    pub reason: &'static str,
}

/// Every reason the server refuses or closes a connection. Each variant is one close code and
/// reason pair a client can see (two variants share one pair when only who caused the close
/// differs, [`Refusal::BoardDeleted`] and [`Refusal::Deleted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Over its message rate for most of its abuse window, after being slowed down all along.
    MessageRate,
    /// Sent nothing, not even a pong, for the read timeout.
    Silent,
    /// The board could not be looked up or loaded, its actor stopped, or a stored row could not
    /// be read. The server's doing, not the client's.
    BoardUnavailable,
    /// A commit failed: nothing the connection sent since its last acknowledgement was shown
    /// to anyone. The server's doing.
    CommitFailed,
    /// The server is shutting down or restarting.
    ServerRestart,
    /// Its outbound queue is full: it cannot keep up with the board.
    TooSlow,
    /// It sent an update while its board held back as many bytes as it may.
    BoardBusy,
    /// The board id in the path is not a valid id.
    InvalidBoardId,
    /// A text frame: the protocol is binary.
    TextFrame,
    /// A frame that is not a y-protocols message (undecodable, unknown type).
    NotAMessage,
    /// An awareness update that does not apply (yrs 0.28 never fails to apply awareness, so
    /// no client sees it today).
    BadAwareness,
    /// No token, or an empty one.
    TokenRequired,
    /// A malformed, forged or tampered token.
    InvalidToken,
    /// The token expired, before connecting or while connected.
    TokenExpired,
    /// The token is for another board.
    OtherBoard,
    /// Connecting to a board that was deleted: connecting never brings it back.
    BoardDeleted,
    /// The board was deleted while the connection was open. An admin's doing, not the
    /// client's.
    Deleted,
    /// A read-only token names a board that does not exist (only a writer creates boards by
    /// connecting).
    BoardNotFound,
    /// A message over the size limit.
    MessageTooLarge,
    /// An update that would make the board larger than its limit.
    BoardTooLarge,
    /// Awareness over its limits (client ids or state size per connection).
    AwarenessLimit,
    /// An update that does not decode.
    UpdateUndecodable,
    /// An update that does not apply.
    UpdateRejected,
    /// An update that nests values or shared types deeper than the limit.
    TooDeep,
    /// Too many connections from the client's address.
    AddressFull,
    /// Too many connections to the board.
    BoardFull,
    /// Hocuspocus: more frames, bytes or document names held before their Auth message than a
    /// socket may hold.
    UnauthenticatedBacklog,
    /// Hocuspocus: more documents on one socket than it may carry (a document past the limit
    /// is refused with this reason; a socket naming more documents still is closed).
    TooManyDocuments,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: &'static [Refusal] = &[
        Refusal::MessageRate,
        Refusal::Silent,
        Refusal::BoardUnavailable,
        Refusal::CommitFailed,
        Refusal::ServerRestart,
        Refusal::TooSlow,
        Refusal::BoardBusy,
        Refusal::InvalidBoardId,
        Refusal::TextFrame,
        Refusal::NotAMessage,
        Refusal::BadAwareness,
        Refusal::TokenRequired,
        Refusal::InvalidToken,
        Refusal::TokenExpired,
        Refusal::OtherBoard,
        Refusal::BoardDeleted,
        Refusal::Deleted,
        Refusal::BoardNotFound,
        Refusal::MessageTooLarge,
        Refusal::BoardTooLarge,
        Refusal::AwarenessLimit,
        Refusal::UpdateUndecodable,
        Refusal::UpdateRejected,
        Refusal::TooDeep,
        Refusal::AddressFull,
        Refusal::BoardFull,
        Refusal::UnauthenticatedBacklog,
        Refusal::TooManyDocuments,
    ];

    /// The WebSocket close code.
    pub const fn close_code(&self) -> u16 {
        match self {
            Refusal::MessageRate => close::POLICY,
            Refusal::Silent | Refusal::BoardUnavailable | Refusal::CommitFailed => close::INTERNAL,
            Refusal::ServerRestart => close::SERVER_RESTART,
            Refusal::TooSlow | Refusal::BoardBusy => close::TOO_SLOW,
            Refusal::InvalidBoardId
            | Refusal::TextFrame
            | Refusal::NotAMessage
            | Refusal::BadAwareness => close::BAD_MESSAGE,
            Refusal::TokenRequired | Refusal::InvalidToken | Refusal::TokenExpired => {
                close::UNAUTHORIZED
            }
            Refusal::OtherBoard => close::FORBIDDEN,
            Refusal::BoardDeleted | Refusal::Deleted | Refusal::BoardNotFound => {
                close::BOARD_DELETED
            }
            Refusal::MessageTooLarge
            | Refusal::BoardTooLarge
            | Refusal::AwarenessLimit
            | Refusal::UnauthenticatedBacklog => close::TOO_LARGE,
            Refusal::UpdateUndecodable | Refusal::UpdateRejected | Refusal::TooDeep => {
                close::BAD_UPDATE
            }
            Refusal::AddressFull | Refusal::BoardFull | Refusal::TooManyDocuments => close::BUSY,
        }
    }

    /// The reason sent in the close frame: short, and safe to show to the client.
    pub const fn reason(&self) -> &'static str {
        match self {
            Refusal::MessageRate => "message rate exceeded for too long; slow down",
            Refusal::Silent => "no traffic; reconnect",
            Refusal::BoardUnavailable => "board unavailable; reconnect",
            Refusal::CommitFailed => "commit failed; reconnect",
            Refusal::ServerRestart => "server restarting",
            Refusal::TooSlow => "too slow; reconnect",
            Refusal::BoardBusy => "board busy; reconnect",
            Refusal::InvalidBoardId => "invalid board id",
            Refusal::TextFrame => "text frames are not part of the protocol",
            Refusal::NotAMessage => "not a y-protocols message",
            Refusal::BadAwareness => "bad awareness update",
            Refusal::TokenRequired => "token required",
            Refusal::InvalidToken => "invalid token",
            Refusal::TokenExpired => "token expired",
            Refusal::OtherBoard => "the token does not cover this board",
            Refusal::BoardDeleted | Refusal::Deleted => "board was deleted",
            Refusal::BoardNotFound => "board not found",
            Refusal::MessageTooLarge => "message too large",
            Refusal::BoardTooLarge => "board size limit reached",
            Refusal::AwarenessLimit => "awareness over its limits",
            Refusal::UpdateUndecodable => "update does not decode",
            Refusal::UpdateRejected => "update does not apply",
            Refusal::TooDeep => "update nests too deeply",
            Refusal::AddressFull => "too many connections from this address",
            Refusal::BoardFull => "the board has too many connections",
            Refusal::UnauthenticatedBacklog => "too much sent before authentication",
            Refusal::TooManyDocuments => "too many documents on this connection",
        }
    }

    /// The kind it is counted under in `sync_errors_total{kind}`; `None` for a close that is
    /// not the client's doing (the server shutting down or failing, an admin deleting the
    /// board), which is not counted per connection.
    pub const fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::ServerRestart
            | Refusal::BoardUnavailable
            | Refusal::CommitFailed
            | Refusal::Deleted => return None,
            Refusal::MessageRate => kind::MESSAGE_RATE,
            Refusal::Silent => kind::READ_TIMEOUT,
            Refusal::TooSlow => kind::TOO_SLOW,
            Refusal::BoardBusy => kind::BOARD_BUSY,
            Refusal::InvalidBoardId
            | Refusal::TextFrame
            | Refusal::NotAMessage
            | Refusal::BadAwareness => kind::BAD_MESSAGE,
            Refusal::TokenRequired | Refusal::InvalidToken | Refusal::TokenExpired => {
                kind::UNAUTHORIZED
            }
            Refusal::OtherBoard => kind::FORBIDDEN,
            Refusal::BoardDeleted | Refusal::BoardNotFound => kind::BOARD_NOT_FOUND,
            Refusal::MessageTooLarge | Refusal::UnauthenticatedBacklog => kind::TOO_LARGE,
            Refusal::BoardTooLarge => kind::BOARD_TOO_LARGE,
            Refusal::AwarenessLimit => kind::AWARENESS_LIMIT,
            Refusal::UpdateUndecodable | Refusal::UpdateRejected => kind::BAD_UPDATE,
            Refusal::TooDeep => kind::TOO_DEEP,
            Refusal::AddressFull | Refusal::BoardFull | Refusal::TooManyDocuments => {
                kind::CONNECTION_LIMIT
            }
        })
    }

    /// The code and reason of its close frame.
    pub const fn close_reason(&self) -> CloseReason {
        CloseReason {
            code: self.close_code(),
            reason: self.reason(),
        }
    }

    /// Counts it (if it is counted at all: see [`Refusal::kind`]) and returns its close frame's
    /// code and reason. For whoever decides the refusal.
    pub fn count(&self, metrics: &Metrics) -> CloseReason {
        if let Some(kind) = self.kind() {
            metrics.error(kind);
        }
        self.close_reason()
    }
}

impl From<Refusal> for CloseReason {
    fn from(refusal: Refusal) -> Self {
        refusal.close_reason()
    }
}

#[cfg(test)]
mod tests;
