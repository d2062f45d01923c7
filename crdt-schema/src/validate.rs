//! Validation results: every problem of a rejected change, at once.

use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::color::is_valid_color;
use crate::ids::is_valid_id;
use crate::limits::{MAX_COLOR_LEN, MAX_COORD, MAX_TIMESTAMP};
use crate::text::utf16_len;
use crate::zindex;

/// What is wrong with one value of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueCode {
    /// A required value is missing.
    Required,
    /// The value is not allowed for this kind of object or in this position.
    NotAllowed,
    /// A number is NaN or infinite.
    NotFinite,
    /// A number is outside its allowed range (see [`crate::limits`]).
    OutOfRange,
    /// A string is longer than its limit, or empty where at least one character is required.
    BadLength,
    /// Not an accepted CSS colour (see [`crate::color`]).
    InvalidColor,
    /// Not an acceptable id (see [`crate::ids::is_valid_id`]).
    InvalidId,
    /// Not a valid fractional index (see [`crate::zindex`]).
    InvalidZ,
    /// A text offset past the end or inside a surrogate pair.
    InvalidOffset,
    /// The id is already taken.
    AlreadyExists,
    /// A referenced object does not exist (or is not a map).
    NotFound,
    /// A referenced object has the wrong kind (e.g. `frame` naming a sticky).
    WrongKind,
    /// The change would make an object its own ancestor.
    Cycle,
}

/// One problem: the field it concerns (e.g. `pos`, `size`, `frame`), a code and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// Field (or argument) the problem concerns.
    pub field: String,
    /// Machine-readable kind of problem.
    pub code: IssueCode,
    /// Human-readable explanation.
    pub message: String,
}

/// A change was rejected; nothing was written. Lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize)]
pub struct ValidationError {
    /// All problems, in the order the fields were checked. Never empty.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid change")?;
        for (i, issue) in self.issues.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{}: {}", issue.field, issue.message)?;
        }
        Ok(())
    }
}

/// Collects issues; [`Checker::finish`] turns them into a result.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    pub(crate) fn push(&mut self, field: &str, code: IssueCode, message: impl Into<String>) {
        self.issues.push(Issue {
            field: field.to_string(),
            code,
            message: message.into(),
        });
    }

    pub(crate) fn finish(self) -> Result<(), ValidationError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                issues: self.issues,
            })
        }
    }

    /// A finite number within `[min, max]`.
    pub(crate) fn number(&mut self, field: &str, v: f64, min: f64, max: f64) -> bool {
        if !v.is_finite() {
            self.push(field, IssueCode::NotFinite, "must be a finite number");
            false
        } else if v < min || v > max {
            self.push(
                field,
                IssueCode::OutOfRange,
                format!("must be between {min} and {max}"),
            );
            false
        } else {
            true
        }
    }

    /// `[x, y]` with finite coordinates of magnitude at most [`MAX_COORD`].
    pub(crate) fn pos(&mut self, field: &str, p: [f64; 2]) {
        self.number(&format!("{field}[0]"), p[0], -MAX_COORD, MAX_COORD);
        self.number(&format!("{field}[1]"), p[1], -MAX_COORD, MAX_COORD);
    }

    /// `[w, h]`, both finite, > 0 and at most [`MAX_COORD`].
    pub(crate) fn size(&mut self, field: &str, s: [f64; 2]) {
        for (i, v) in s.into_iter().enumerate() {
            let f = format!("{field}[{i}]");
            if self.number(&f, v, 0.0, MAX_COORD) && v <= 0.0 {
                self.push(&f, IssueCode::OutOfRange, "must be greater than 0");
            }
        }
    }

    pub(crate) fn rotation(&mut self, field: &str, r: f64) {
        self.number(field, r, -MAX_COORD, MAX_COORD);
    }

    pub(crate) fn timestamp(&mut self, field: &str, t: f64) {
        self.number(field, t, 0.0, MAX_TIMESTAMP);
    }

    /// A string of `min..=max` UTF-16 units.
    pub(crate) fn length(&mut self, field: &str, s: &str, min: usize, max: usize) {
        let len = utf16_len(s);
        if len < min || len > max {
            let msg = if min == 0 {
                format!("must be at most {max} characters (UTF-16 units), got {len}")
            } else {
                format!("must be {min} to {max} characters (UTF-16 units), got {len}")
            };
            self.push(field, IssueCode::BadLength, msg);
        }
    }

    pub(crate) fn id(&mut self, field: &str, id: &str) -> bool {
        let ok = is_valid_id(id);
        if !ok {
            self.push(
                field,
                IssueCode::InvalidId,
                "must be 1-64 characters of A-Z a-z 0-9 . _ : -",
            );
        }
        ok
    }

    pub(crate) fn color(&mut self, field: &str, c: &str) {
        if !is_valid_color(c) {
            self.push(
                field,
                IssueCode::InvalidColor,
                format!(
                    "must be a CSS colour (#hex, rgb(), hsl() or a named colour), \
                     at most {MAX_COLOR_LEN} characters"
                ),
            );
        }
    }

    pub(crate) fn z(&mut self, field: &str, z: &str) {
        if let Err(e) = zindex::validate_key(z) {
            self.push(field, IssueCode::InvalidZ, e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_everything() {
        let mut c = Checker::default();
        c.pos("pos", [f64::NAN, 2e9]);
        c.size("size", [0.0, f64::INFINITY]);
        c.color("color", "nope");
        c.length("title", "ab", 0, 1);
        let Err(e) = c.finish() else {
            panic!("expected issues");
        };
        let fields: Vec<_> = e.issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            ["pos[0]", "pos[1]", "size[0]", "size[1]", "color", "title"]
        );
        assert_eq!(e.issues[0].code, IssueCode::NotFinite);
        assert_eq!(e.issues[1].code, IssueCode::OutOfRange);
        assert_eq!(e.issues[2].code, IssueCode::OutOfRange);
        assert!(e.to_string().starts_with("invalid change: pos[0]: "));
        assert!(Checker::default().finish().is_ok());
    }
}
