//! Object and message ids.
//!
//! Ids are chosen by the writer. [`new_id`] turns 16 random bytes supplied by the caller (from
//! `getrandom`, `crypto.getRandomValues`, a UUID, ...) into a 22-character base-62 id, so this
//! crate needs no source of randomness and builds for wasm32 as is.

use crate::limits::MAX_ID_LEN;
use crate::zindex::DIGITS;

/// Whether `id` is acceptable for a new object or chat message: 1-[`MAX_ID_LEN`] characters of
/// `[A-Za-z0-9._:-]` (so UUIDs and [`new_id`] output both fit). Reads accept any id.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A 22-character base-62 id from 128 random bits supplied by the caller.
pub fn new_id(random: [u8; 16]) -> String {
    let mut n = u128::from_be_bytes(random);
    let mut out = [b'0'; 22];
    for slot in out.iter_mut().rev() {
        let digit = (n % 62) as usize;
        *slot = DIGITS.get(digit).copied().unwrap_or(b'0');
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(is_valid_id("sticky-1"));
        assert!(is_valid_id("0195f2a4-7c1e-7000-8000-000000000000"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id(&"a".repeat(MAX_ID_LEN + 1)));
        let a = new_id([0; 16]);
        let b = new_id([255; 16]);
        assert_eq!(a, "0".repeat(22));
        assert_eq!(b.len(), 22);
        assert!(is_valid_id(&a) && is_valid_id(&b));
        assert_ne!(new_id([1; 16]), new_id([2; 16]));
    }
}
