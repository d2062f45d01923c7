//! Identifiers shared by every layer: board ids, version ids and log sequence numbers.

use std::fmt;

use serde::Serialize;

/// Position of an update in one board's log. Starts at 1 for a board's first update, grows by
/// one per update and is never reused, not even after compaction deletes the rows it covers.
pub type Seq = i64;

/// Longest board id accepted, in bytes (ids are ASCII).
pub const MAX_BOARD_ID_LEN: usize = 128;

/// A validated board id: 1 to 128 characters of `[A-Za-z0-9._-]` (PROTOCOL.md, "Connecting").
///
/// The only way to make one is [`BoardId::parse`], so every `BoardId` in the program is valid
/// and safe to put in a path, a log line or a SQL parameter.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BoardId(String);

/// Why a string is not a board id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBoardId {
    /// The id is the empty string.
    #[error("board id is empty")]
    Empty,
    /// The id is longer than [`MAX_BOARD_ID_LEN`].
    #[error("board id is {len} characters long; at most {MAX_BOARD_ID_LEN} are allowed")]
    TooLong {
        /// Length of the refused id, in bytes.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "board id may contain only A-Z, a-z, 0-9, '.', '_' and '-' (found {found:?} at byte {at})"
    )]
    BadCharacter {
        /// The first offending character.
        found: char,
        /// Its byte offset in the refused id.
        at: usize,
    },
}

impl BoardId {
    /// Checks `raw` against the board id rules.
    pub fn parse(raw: &str) -> Result<Self, InvalidBoardId> {
        if raw.is_empty() {
            return Err(InvalidBoardId::Empty);
        }
        if raw.len() > MAX_BOARD_ID_LEN {
            return Err(InvalidBoardId::TooLong { len: raw.len() });
        }
        if let Some((at, found)) = raw
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidBoardId::BadCharacter { found, at });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BoardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BoardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoardId({:?})", self.0)
    }
}

impl std::str::FromStr for BoardId {
    type Err = InvalidBoardId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for BoardId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Id of a saved version. Unique across all boards of one database; grows with time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct VersionId(pub i64);

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "Board-1", "team.retro_2026", &"x".repeat(128)] {
            assert_eq!(
                BoardId::parse(ok).map(|b| b.to_string()),
                Ok(ok.to_string())
            );
        }
    }

    #[test]
    fn refuses_everything_else_with_a_reason() {
        assert_eq!(BoardId::parse(""), Err(InvalidBoardId::Empty));
        assert_eq!(
            BoardId::parse(&"x".repeat(129)),
            Err(InvalidBoardId::TooLong { len: 129 })
        );
        assert_eq!(
            BoardId::parse("a/b"),
            Err(InvalidBoardId::BadCharacter { found: '/', at: 1 })
        );
        assert_eq!(
            BoardId::parse("é"),
            Err(InvalidBoardId::BadCharacter { found: 'é', at: 0 })
        );
        for bad in ["a b", "..%2f", "a?b", "a\0", "white space", "ünï"] {
            assert!(BoardId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
