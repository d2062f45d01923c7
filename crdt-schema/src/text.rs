//! UTF-16 offsets, as JS and Yjs clients count them.
//!
//! Every text offset and length in this crate's API is in UTF-16 code units (JS `string.length`).
//! The document may have been opened with either `yrs::OffsetKind`: mutations compute both the
//! UTF-8 and the UTF-16 offset and pass yrs the one matching the document's own kind (read from
//! the transaction's `Doc`), so callers never need to care. Offsets that would split a surrogate pair (the middle of an
//! emoji such as `🚀`) are rejected rather than producing lone surrogates.

use thiserror::Error;

/// A UTF-16 offset that does not denote a character boundary of the text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OffsetError {
    /// The offset is beyond the end of the text.
    #[error("offset {index} is past the end of the text (length {len} UTF-16 units)")]
    PastEnd {
        /// Requested offset (UTF-16 units).
        index: usize,
        /// Text length (UTF-16 units).
        len: usize,
    },
    /// The offset falls between the two halves of a surrogate pair.
    #[error("offset {index} splits a surrogate pair")]
    SplitsSurrogatePair {
        /// Requested offset (UTF-16 units).
        index: usize,
    },
}

/// Length in UTF-16 code units, as JS `s.length`.
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The UTF-8 byte offset of the UTF-16 offset `index` in `s`.
pub fn utf16_to_byte(s: &str, index: usize) -> Result<usize, OffsetError> {
    let mut units = 0usize;
    for (byte, ch) in s.char_indices() {
        if units == index {
            return Ok(byte);
        }
        units += ch.len_utf16();
        if units > index {
            return Err(OffsetError::SplitsSurrogatePair { index });
        }
    }
    if units == index {
        Ok(s.len())
    } else {
        Err(OffsetError::PastEnd { index, len: units })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_js() {
        assert_eq!(utf16_len(""), 0);
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("é"), 1);
        assert_eq!(utf16_len("🚀"), 2);
        // "👋🏽" is two astral code points: 4 UTF-16 units (JS "👋🏽".length === 4).
        assert_eq!(utf16_len("👋🏽"), 4);
        assert_eq!(utf16_len("Ship it 🚀 now"), 14);
    }

    #[test]
    fn offsets_convert_and_reject_pair_splits() {
        let s = "a🚀b";
        assert_eq!(utf16_to_byte(s, 0), Ok(0));
        assert_eq!(utf16_to_byte(s, 1), Ok(1));
        assert_eq!(
            utf16_to_byte(s, 2),
            Err(OffsetError::SplitsSurrogatePair { index: 2 })
        );
        assert_eq!(utf16_to_byte(s, 3), Ok(5));
        assert_eq!(utf16_to_byte(s, 4), Ok(6));
        assert_eq!(
            utf16_to_byte(s, 5),
            Err(OffsetError::PastEnd { index: 5, len: 4 })
        );
    }
}
