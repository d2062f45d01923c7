//! Refusing hostile nesting before yrs sees it.
//!
//! yrs decodes `Any` values recursively with no depth limit, and deletes and garbage-collects
//! nested shared types recursively too: an update of a few hundred kilobytes holding an array
//! nested 200,000 deep overflows the stack while it decodes, and a chain of 10,000 nested maps
//! (150 KB) overflows it when the chain is deleted. A stack overflow aborts the whole process;
//! no `catch_unwind` can stop it. So every update from outside (a client, an upload, a stored
//! row) is checked here first, without recursion:
//!
//! - values (`Any` arrays and maps, and JSON in embeds, formats and JSON content) nest at most
//!   [`MAX_NESTING`] levels;
//! - shared types nest at most [`MAX_NESTING`] levels below a root. A board nests three
//!   (`objects` → object map → its text).
//!
//! [`check_update_v1`] checks an update on its own (a whole state, for a fresh document).
//! [`Nesting`] keeps a document's item depths so that each update can be checked against the
//! document it will be applied to: an item may sit in a type that an earlier update created.
//! [`scan_update_v1`] reads an update once (values checked, before yrs decodes it) for
//! [`Nesting::check_scanned`] to place later, so that a server reads each update's bytes once.
//!
//! Reading is linear in the update's size and allocates nothing per declared length, so huge
//! lengths and truncated varints are refused as cheaply as anything else.

mod depth;
mod scan;
#[cfg(test)]
mod tests;

pub use depth::{Checked, MAX_FLOATING, Nesting};
pub use scan::Scanned;

/// The deepest nesting accepted, for values and for shared types alike.
pub const MAX_NESTING: u16 = 64;

/// The deepest any recursive walk over a document goes (shared types, then values inside
/// them): what the guard admits, and a bound for documents that did not pass it.
pub const MAX_WALK_DEPTH: u16 = 2 * MAX_NESTING + 2;

/// Why an update was refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The bytes are not a well-formed Yjs update v1.
    #[error("not a well-formed Yjs update: {0}")]
    Malformed(&'static str),
    /// A value nests arrays or maps deeper than the limit.
    #[error("a value nests arrays or maps more than {limit} levels deep")]
    ValueTooDeep {
        /// The limit.
        limit: u16,
    },
    /// Shared types would nest deeper than the limit.
    #[error("shared types would nest more than {limit} levels deep")]
    TypesTooDeep {
        /// The limit.
        limit: u16,
    },
    /// Too many items wait for items the document does not have.
    #[error("more than {limit} item ranges would wait for missing items")]
    TooManyWaiting {
        /// The limit.
        limit: usize,
    },
}

/// Checks a Yjs update v1 on its own, as applied to an empty document, against
/// [`MAX_NESTING`].
pub fn check_update_v1(update: &[u8]) -> Result<(), GuardError> {
    Nesting::default().check(update).map(|_| ())
}

/// Reads a Yjs update v1 without recursion: refuses it if malformed, if it declares more than
/// its bytes hold, or if its values nest past [`MAX_NESTING`] (after which yrs can decode it
/// without overflowing its stack). How its shared types nest is for
/// [`Nesting::check_scanned`], against the document it will join.
pub fn scan_update_v1(update: &[u8]) -> Result<Scanned, GuardError> {
    scan::scan(update, MAX_NESTING)
}

impl Default for Nesting {
    fn default() -> Self {
        Self::new(MAX_NESTING)
    }
}
