//! Who may do what: signed, expiring tokens naming a board (or every board) and a role.
//!
//! - [`token`]: minting and verifying tokens (JWT, HS256, with the server's secret).
//! - [`Grant`]: what a verified token (or open development mode) allows.
//!
//! Without a secret the server runs in open development mode: every caller is an anonymous
//! admin of every board, and the server refuses to listen beyond loopback unless told
//! `--insecure`. Tokens, the secret and anything derived from them never reach a log line or
//! an error body: errors name what was wrong ("expired", "bad signature"), never the token.

pub mod token;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::BoardId;

pub use token::{Keys, Secret, SecretError, TokenError};

/// What a caller may do with a board. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receive the board and show one's own presence.
    Read,
    /// Also edit the board, save versions and restore.
    Write,
    /// Also delete boards and versions, list every board, and mint tokens.
    Admin,
}

impl Role {
    /// The role's name as tokens and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role `{other}`: expected read, write or admin"
            )),
        }
    }
}

/// Which boards a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every board (a token with `"board": "*"`).
    All,
    /// One board.
    Board(BoardId),
}

impl Scope {
    /// Parses `*` or a board id.
    pub fn parse(raw: &str) -> Result<Self, crate::ids::InvalidBoardId> {
        if raw == "*" {
            Ok(Self::All)
        } else {
            BoardId::parse(raw).map(Self::Board)
        }
    }

    fn covers(&self, board: &BoardId) -> bool {
        match self {
            Self::All => true,
            Self::Board(b) => b == board,
        }
    }

    /// Whether every board `other` covers is covered by this scope too.
    fn includes(&self, other: &Scope) -> bool {
        match other {
            Self::All => *self == Self::All,
            Self::Board(b) => self.covers(b),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Board(b) => write!(f, "{b}"),
        }
    }
}

/// What a caller is allowed: the verified content of a token, or everything in open mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the token was minted for (`sub`), if it names anyone.
    pub user: Option<String>,
    /// The boards it covers.
    pub scope: Scope,
    /// What it allows on them.
    pub role: Role,
    /// When it stops being valid (`None`: never, open mode only).
    pub expires_at: Option<SystemTime>,
}

/// Why a grant does not allow something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The token is for another board.
    #[error("the token does not cover this board")]
    OtherBoard,
    /// The token's role is too low.
    #[error("this needs the `{needed}` role; the token has `{has}`")]
    Role {
        /// The role the operation needs.
        needed: Role,
        /// The role the token carries.
        has: Role,
    },
    /// The token has expired since it was presented.
    #[error("the token has expired")]
    Expired,
}

impl Grant {
    /// The grant of open development mode: an anonymous admin of every board, forever.
    pub fn open() -> Self {
        Self {
            user: None,
            scope: Scope::All,
            role: Role::Admin,
            expires_at: None,
        }
    }

    /// Checks that this grant allows `needed` on `board`.
    pub fn allows(&self, board: &BoardId, needed: Role) -> Result<(), Denied> {
        if !self.scope.covers(board) {
            return Err(Denied::OtherBoard);
        }
        self.allows_everywhere_in_scope(needed)
    }

    /// Checks that this grant covers every board with `needed` (e.g. to list all boards).
    pub fn allows_all_boards(&self, needed: Role) -> Result<(), Denied> {
        if self.scope != Scope::All {
            return Err(Denied::OtherBoard);
        }
        self.allows_everywhere_in_scope(needed)
    }

    fn allows_everywhere_in_scope(&self, needed: Role) -> Result<(), Denied> {
        if self.remaining() == Some(Duration::ZERO) {
            return Err(Denied::Expired);
        }
        if self.role < needed {
            return Err(Denied::Role {
                needed,
                has: self.role,
            });
        }
        Ok(())
    }

    /// Checks that this grant may hand on a grant for `scope` and `role` (a token it mints):
    /// never more boards, a higher role, or a longer life than its own. Returns the latest
    /// expiry the new grant may have (`None`: no limit, open mode only).
    pub fn delegable(&self, scope: &Scope, role: Role) -> Result<Option<SystemTime>, Denied> {
        if !self.scope.includes(scope) {
            return Err(Denied::OtherBoard);
        }
        if self.remaining() == Some(Duration::ZERO) {
            return Err(Denied::Expired);
        }
        if role > self.role {
            return Err(Denied::Role {
                needed: role,
                has: self.role,
            });
        }
        Ok(self.expires_at)
    }

    /// How long until the grant expires (`None`: never; zero: already expired).
    pub fn remaining(&self) -> Option<Duration> {
        let at = self.expires_at?;
        Some(at.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// The name versions and assistant runs record for this caller.
    pub fn author(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// How the server authenticates callers.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No secret configured: everyone is an admin (development only).
    Open,
    /// Tokens signed with the configured secret are required.
    Tokens(Box<Keys>),
}

/// Why a caller could not be authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error(
        "a token is required: pass `Authorization: Bearer <token>` (HTTP) or `?token=` (WebSocket)"
    )]
    Missing,
    /// The token was presented but is not valid.
    #[error(transparent)]
    Invalid(#[from] TokenError),
}

impl Auth {
    /// Whether tokens are required.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open)
    }

    /// The grant a caller presenting `token` (if any) has.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        match self {
            Self::Open => Ok(Grant::open()),
            Self::Tokens(keys) => {
                let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
                Ok(keys.verify(token)?)
            }
        }
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(id: &str) -> BoardId {
        BoardId::parse(id).expect("valid id")
    }

    fn grant(scope: Scope, role: Role) -> Grant {
        Grant {
            user: Some("alice".into()),
            scope,
            role,
            expires_at: Some(SystemTime::now() + Duration::from_secs(60)),
        }
    }

    #[test]
    fn roles_include_lower_roles() {
        let g = grant(Scope::Board(board("b1")), Role::Write);
        assert_eq!(g.allows(&board("b1"), Role::Read), Ok(()));
        assert_eq!(g.allows(&board("b1"), Role::Write), Ok(()));
        assert_eq!(
            g.allows(&board("b1"), Role::Admin),
            Err(Denied::Role {
                needed: Role::Admin,
                has: Role::Write
            })
        );
    }

    #[test]
    fn a_board_token_covers_only_its_board() {
        let g = grant(Scope::Board(board("b1")), Role::Admin);
        assert_eq!(g.allows(&board("b2"), Role::Read), Err(Denied::OtherBoard));
        assert_eq!(g.allows_all_boards(Role::Read), Err(Denied::OtherBoard));
        let all = grant(Scope::All, Role::Read);
        assert_eq!(all.allows(&board("anything"), Role::Read), Ok(()));
        assert_eq!(all.allows_all_boards(Role::Read), Ok(()));
    }

    #[test]
    fn an_expired_grant_allows_nothing() {
        let mut g = grant(Scope::All, Role::Admin);
        g.expires_at = Some(SystemTime::now() - Duration::from_secs(1));
        assert_eq!(g.allows(&board("b"), Role::Read), Err(Denied::Expired));
    }

    #[test]
    fn a_grant_hands_on_no_more_than_it_has() {
        let expiry = SystemTime::now() + Duration::from_secs(60);
        let g = Grant {
            expires_at: Some(expiry),
            ..grant(Scope::Board(board("b1")), Role::Write)
        };
        let b1 = Scope::Board(board("b1"));
        assert_eq!(g.delegable(&b1, Role::Write), Ok(Some(expiry)));
        assert_eq!(g.delegable(&b1, Role::Read), Ok(Some(expiry)));
        assert_eq!(
            g.delegable(&b1, Role::Admin),
            Err(Denied::Role {
                needed: Role::Admin,
                has: Role::Write
            })
        );
        assert_eq!(
            g.delegable(&Scope::Board(board("b2")), Role::Read),
            Err(Denied::OtherBoard)
        );
        assert_eq!(
            g.delegable(&Scope::All, Role::Read),
            Err(Denied::OtherBoard)
        );
        let all = grant(Scope::All, Role::Admin);
        assert!(all.delegable(&Scope::All, Role::Admin).is_ok());
        assert!(all.delegable(&b1, Role::Admin).is_ok());
        let expired = Grant {
            expires_at: Some(SystemTime::now() - Duration::from_secs(1)),
            ..all.clone()
        };
        assert_eq!(expired.delegable(&b1, Role::Read), Err(Denied::Expired));
        assert_eq!(
            Grant::open().delegable(&Scope::All, Role::Admin),
            Ok(None),
            "open mode has no expiry to pass on"
        );
    }

    #[test]
    fn open_mode_needs_no_token() {
        assert_eq!(Auth::Open.authenticate(None), Ok(Grant::open()));
    }
}
