//! Limits enforced on writes (reads accept anything and report only type problems).
//!
//! Text lengths are in UTF-16 code units, as JS `string.length` counts them.

/// Object and chat message ids: 1-64 characters of `[A-Za-z0-9._:-]`.
pub const MAX_ID_LEN: usize = 64;
/// Object text (`Y.Text` contents).
pub const MAX_TEXT_LEN: usize = 20_000;
/// Connector label.
pub const MAX_LABEL_LEN: usize = 500;
/// Board title.
pub const MAX_TITLE_LEN: usize = 200;
/// Chat message text (at least one character).
pub const MAX_CHAT_LEN: usize = 4_000;
/// Author names (`created_by`, chat `author`), at least one character.
pub const MAX_AUTHOR_LEN: usize = 128;
/// CSS colour strings (bytes; every accepted colour is ASCII).
pub const MAX_COLOR_LEN: usize = 64;
/// Largest magnitude of a coordinate, a size or a rotation (degrees). Sizes must also be > 0.
pub const MAX_COORD: f64 = 1e9;
/// Largest timestamp (ms since the epoch): JS `Number.MAX_SAFE_INTEGER`. Timestamps are >= 0.
pub const MAX_TIMESTAMP: f64 = 9_007_199_254_740_991.0;
