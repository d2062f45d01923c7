//! Admission: whether a connection may open a session on a board, decided before it joins.

use std::net::IpAddr;

use tracing::info;

use crate::auth::{Auth, AuthError, Denied, Grant, Role, TokenError};
use crate::ids::BoardId;
use crate::limits::{AddressSlot, ConnectionCounts};
use crate::refusal::Refusal;

/// What admission decided: a connection let in, or why it is refused.
pub(crate) type Admission = Result<Admitted, Refusal>;

/// A connection let in: its board, what its token allows, and its slot in its address's count
/// of connections (given back when the session ends).
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(super) board: BoardId,
    pub(super) grant: Grant,
    _slot: AddressSlot,
}

/// Checks the board id, the token and the per-address limit, in that order.
pub(super) fn admit(
    auth: &Auth,
    addresses: &ConnectionCounts,
    board: &str,
    token: Option<&str>,
    peer: IpAddr,
) -> Admission {
    let board = BoardId::parse(board).map_err(|e| {
        info!(error = %e, "refused: invalid board id");
        Refusal::InvalidBoardId
    })?;
    let grant = auth.authenticate(token).map_err(|e| {
        info!(error = %e, "refused: not authenticated");
        match e {
            AuthError::Missing => Refusal::TokenRequired,
            AuthError::Invalid(TokenError::Expired) => Refusal::TokenExpired,
            AuthError::Invalid(_) => Refusal::InvalidToken,
        }
    })?;
    grant.allows(&board, Role::Read).map_err(|e| {
        info!(error = %e, "refused: not allowed");
        match e {
            Denied::Expired => Refusal::TokenExpired,
            Denied::OtherBoard | Denied::Role { .. } => Refusal::OtherBoard,
        }
    })?;
    let slot = addresses.acquire(peer).ok_or_else(|| {
        info!(addr = %peer, "refused: too many connections from this address");
        Refusal::AddressFull
    })?;
    Ok(Admitted {
        board,
        grant,
        _slot: slot,
    })
}
