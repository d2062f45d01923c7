//! Fractional indexes for the `z` field.
//!
//! A key is a non-empty string of base-62 digits `0-9A-Za-z` (in ASCII, hence byte and JS string
//! order) read as a fraction `0.d1 d2 d3 ...` in base 62. Keys never end in `0`, so there is
//! always room below any key; there is always room above since every key is below `1.0`.
//! Objects paint in lexicographic order of their keys.
//!
//! [`after`] increments the first digit that can be incremented, so repeated appends (bring to
//! front) grow keys by one character per ~61 appends (1,000 appends from [`first`] stay under 20
//! characters); [`before`] is symmetric. [`between`] takes the midpoint digit-wise. Keys are
//! capped at [`MAX_KEY_LEN`]; past that [`ZError::TooLong`] is returned (there is no automatic
//! rebalancing: rewrite the `z` of the board's objects with fresh keys if it ever happens).

use thiserror::Error;

/// The digits, in ascending (byte) order.
pub const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The longest key accepted or produced.
pub const MAX_KEY_LEN: usize = 256;

const BASE: u8 = 62;

/// Why a fractional index could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ZError {
    /// A given key is not a valid fractional index.
    #[error("invalid z key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `between(a, b)` was called with `a >= b`.
    #[error("z keys out of order: {a:?} is not below {b:?}")]
    NotOrdered {
        /// Lower bound.
        a: String,
        /// Upper bound.
        b: String,
    },
    /// The result would be longer than [`MAX_KEY_LEN`].
    #[error("z key would exceed {MAX_KEY_LEN} characters")]
    TooLong,
}

/// The key for the first object on an empty board (`"V"`, the middle digit).
pub fn first() -> String {
    "V".to_string()
}

/// Checks that `key` is a valid fractional index.
pub fn validate_key(key: &str) -> Result<(), ZError> {
    digits_of(key).map(|_| ())
}

/// A key strictly between `a` and `b`; `None` means "no bound" on that side.
pub fn between(a: Option<&str>, b: Option<&str>) -> Result<String, ZError> {
    match (a, b) {
        (None, None) => Ok(first()),
        (Some(a), None) => after(a),
        (None, Some(b)) => before(b),
        (Some(a), Some(b)) => {
            let da = digits_of(a)?;
            let db = digits_of(b)?;
            if da >= db {
                return Err(ZError::NotOrdered {
                    a: a.to_string(),
                    b: b.to_string(),
                });
            }
            finish(&midpoint(&da, Some(&db)))
        }
    }
}

/// A key strictly above `a`.
pub fn after(a: &str) -> Result<String, ZError> {
    let mut digits = digits_of(a)?;
    match digits.iter().position(|&d| d < BASE - 1) {
        Some(i) => {
            digits.truncate(i + 1);
            digits[i] += 1;
        }
        // All digits are the top digit: extend with the smallest non-zero digit.
        None => digits.push(1),
    }
    finish(&digits)
}

/// A key strictly below `b`.
pub fn before(b: &str) -> Result<String, ZError> {
    let mut digits = digits_of(b)?;
    match digits.iter().position(|&d| d >= 2) {
        Some(i) => {
            digits.truncate(i + 1);
            digits[i] -= 1;
            finish(&digits)
        }
        // Only 0s and 1s (some leading 0s, then a 1): no digit can drop without leaving a
        // trailing zero. Keep the leading 0s, put a 0 where the first 1 was and the top digit
        // after it, so the next 60 prepends are cheap decrements again.
        None => {
            let zeros = digits.iter().take_while(|&&d| d == 0).count();
            let mut out = vec![0; zeros + 1];
            out.push(BASE - 1);
            finish(&out)
        }
    }
}

/// `n` keys in ascending order strictly between `a` and `b`, spread evenly (for inserting many
/// objects at once). Returns an empty vector for `n == 0`.
pub fn n_between(a: Option<&str>, b: Option<&str>, n: usize) -> Result<Vec<String>, ZError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if n == 1 {
        return between(a, b).map(|k| vec![k]);
    }
    match b {
        // Open above: appends are cheap and short.
        None => {
            let mut out = Vec::with_capacity(n);
            let mut last = between(a, None)?;
            out.push(last.clone());
            for _ in 1..n {
                last = after(&last)?;
                out.push(last.clone());
            }
            Ok(out)
        }
        Some(_) => {
            let mid = between(a, b)?;
            let half = n / 2;
            let mut out = n_between(a, Some(&mid), half)?;
            out.push(mid.clone());
            out.extend(n_between(Some(&mid), b, n - half - 1)?);
            Ok(out)
        }
    }
}

fn digits_of(key: &str) -> Result<Vec<u8>, ZError> {
    let invalid = |reason| ZError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid("too long"));
    }
    let digits = key
        .bytes()
        .map(digit_value)
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| invalid("not a base-62 digit (0-9A-Za-z)"))?;
    if digits.last() == Some(&0) {
        return Err(invalid("ends in 0"));
    }
    Ok(digits)
}

fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'Z' => Some(b - b'A' + 10),
        b'a'..=b'z' => Some(b - b'a' + 36),
        _ => None,
    }
}

fn finish(digits: &[u8]) -> Result<String, ZError> {
    if digits.len() > MAX_KEY_LEN {
        return Err(ZError::TooLong);
    }
    Ok(digits
        .iter()
        .map(|&d| char::from(DIGITS.get(usize::from(d)).copied().unwrap_or(b'V')))
        .collect())
}

/// Digit-wise midpoint of the fractions `a` and `b` (`None` = 1.0), given `a < b`. The result
/// is strictly between them and does not end in 0.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut a, mut b) = (a, b);
    loop {
        if let Some(bd) = b {
            // Skip the common prefix (a is padded with zeros).
            let n = bd
                .iter()
                .enumerate()
                .take_while(|&(i, &d)| a.get(i).copied().unwrap_or(0) == d)
                .count();
            if n > 0 {
                out.extend_from_slice(&bd[..n]);
                a = a.get(n..).unwrap_or(&[]);
                b = Some(&bd[n..]);
                continue;
            }
        }
        let da = a.first().copied().unwrap_or(0);
        let db = b.and_then(|b| b.first().copied()).unwrap_or(BASE);
        if db > da + 1 {
            out.push((da + db).div_ceil(2));
            return out;
        }
        if let Some(bd) = b.filter(|bd| bd.len() > 1) {
            // b's first digit alone is below b (b has more non-zero digits) and above a.
            out.push(bd[0]);
            return out;
        }
        out.push(da);
        a = a.get(1..).unwrap_or(&[]);
        b = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn assert_between(a: Option<&str>, k: &str, b: Option<&str>) {
        validate_key(k).unwrap();
        if let Some(a) = a {
            assert!(a < k, "{a:?} < {k:?}");
        }
        if let Some(b) = b {
            assert!(k < b, "{k:?} < {b:?}");
        }
    }

    #[test]
    fn basics() {
        assert_eq!(between(None, None).unwrap(), "V");
        assert_eq!(after("V").unwrap(), "W");
        assert_eq!(after("z").unwrap(), "z1");
        assert_eq!(after("Vz").unwrap(), "W");
        assert_eq!(before("V").unwrap(), "U");
        assert_eq!(before("1").unwrap(), "0z");
        assert_eq!(before("11").unwrap(), "0z");
        assert_eq!(before("01").unwrap(), "00z");
        assert_eq!(before("2").unwrap(), "1");
        assert_eq!(between(Some("V"), Some("W")).unwrap(), "VV");
        assert_eq!(between(Some("1"), Some("2")).unwrap(), "1V");
        assert_eq!(between(Some("V"), Some("X")).unwrap(), "W");
        assert_eq!(between(Some("a"), Some("a1")).unwrap(), "a0V");
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in ["", "V0", "a-b", "é", " V", &"V".repeat(MAX_KEY_LEN + 1)] {
            assert!(
                matches!(validate_key(bad), Err(ZError::InvalidKey { .. })),
                "{bad:?}"
            );
            assert!(after(bad).is_err());
            assert!(before(bad).is_err());
        }
        assert!(matches!(
            between(Some("W"), Some("V")),
            Err(ZError::NotOrdered { .. })
        ));
        assert!(matches!(
            between(Some("V"), Some("V")),
            Err(ZError::NotOrdered { .. })
        ));
    }

    #[test]
    fn appends_and_prepends_stay_short() {
        let mut k = first();
        for _ in 0..1000 {
            let next = after(&k).unwrap();
            assert_between(Some(&k), &next, None);
            k = next;
        }
        assert!(k.len() <= 20, "{} chars after 1000 appends", k.len());
        let mut k = first();
        for _ in 0..1000 {
            let next = before(&k).unwrap();
            assert_between(None, &next, Some(&k));
            k = next;
        }
        assert!(k.len() <= 20, "{} chars after 1000 prepends", k.len());
    }

    #[test]
    fn random_inserts_keep_order() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut keys: Vec<String> = vec![first()];
            for _ in 0..500 {
                let i = rng.below(keys.len() + 1);
                let a = i.checked_sub(1).map(|j| keys[j].as_str());
                let b = keys.get(i).map(String::as_str);
                let k = between(a, b).unwrap();
                assert_between(a, &k, b);
                keys.insert(i, k);
            }
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, keys, "seed {seed}");
        }
    }

    #[test]
    fn repeated_bisection_reaches_the_cap_with_an_error() {
        // Always inserting just above the same lower bound halves the gap each time.
        let lo = "V".to_string();
        let mut hi = "W".to_string();
        let mut result = Ok(());
        for _ in 0..10_000 {
            match between(Some(&lo), Some(&hi)) {
                Ok(k) => {
                    assert_between(Some(&lo), &k, Some(&hi));
                    hi = k;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        assert_eq!(result, Err(ZError::TooLong));
    }

    #[test]
    fn n_between_is_sorted_and_bounded() {
        for (a, b) in [
            (None, None),
            (Some("V"), None),
            (Some("V"), Some("W")),
            (None, Some("1")),
        ] {
            let keys = n_between(a, b, 50).unwrap();
            assert_eq!(keys.len(), 50);
            for w in keys.windows(2) {
                assert!(w[0] < w[1]);
            }
            for k in &keys {
                assert_between(a, k, b);
            }
        }
    }
}
