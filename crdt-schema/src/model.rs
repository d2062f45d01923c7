//! Plain structs for a board as read from a document. They serialize to the JSON view served by
//! `GET /v1/boards/{id}` and hold no yrs types.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::read::ReadIssue;
use crate::value::Value;

/// What an object is. Unknown kinds are kept as [`Kind::Other`] and shown as generic objects.
///
/// Serializes as its string (`"sticky"`, ..., or the unknown kind's own string).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Kind {
    /// `"sticky"`: a sticky note.
    Sticky,
    /// `"rect"`: a rectangle.
    Rect,
    /// `"ellipse"`: an ellipse.
    Ellipse,
    /// `"text"`: a free text box.
    Text,
    /// `"frame"`: a frame that groups the objects whose `frame` field names it.
    Frame,
    /// `"connector"`: a line from one object (`from`) to another (`to`).
    Connector,
    /// Any other kind, kept verbatim (written by a newer or foreign client).
    Other(String),
}

impl Kind {
    /// The kinds this crate can create.
    pub const KNOWN: [Kind; 6] = [
        Kind::Sticky,
        Kind::Rect,
        Kind::Ellipse,
        Kind::Text,
        Kind::Frame,
        Kind::Connector,
    ];

    /// Parses a `kind` string; never fails (unknown strings become [`Kind::Other`]).
    pub fn from_name(name: &str) -> Kind {
        match name {
            "sticky" => Kind::Sticky,
            "rect" => Kind::Rect,
            "ellipse" => Kind::Ellipse,
            "text" => Kind::Text,
            "frame" => Kind::Frame,
            "connector" => Kind::Connector,
            other => Kind::Other(other.to_string()),
        }
    }

    /// The string stored in the document.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Sticky => "sticky",
            Kind::Rect => "rect",
            Kind::Ellipse => "ellipse",
            Kind::Text => "text",
            Kind::Frame => "frame",
            Kind::Connector => "connector",
            Kind::Other(s) => s,
        }
    }
}

impl From<String> for Kind {
    fn from(s: String) -> Self {
        Kind::from_name(&s)
    }
}

impl From<Kind> for String {
    fn from(k: Kind) -> Self {
        k.as_str().to_string()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A whole board, read leniently: every value of the wrong type is listed in `issues` and left
/// out of the typed fields (or, for unknown fields, kept in `extra`).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Board {
    /// Objects in paint order: by `z` (JS string order; objects without a `z` first), then by id.
    pub objects: Vec<Object>,
    /// Board-level settings.
    pub meta: Meta,
    /// Chat messages in array order.
    pub chat: Vec<ChatMessage>,
    /// Every value that was skipped or accepted leniently, in document order.
    pub issues: Vec<ReadIssue>,
}

impl Board {
    /// The object with this id, if it was read.
    pub fn object(&self, id: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.id == id)
    }
}

/// One board object. Every field except `id` and `kind` is optional: a field that is missing
/// or of the wrong type is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    /// Key in the `objects` root map.
    pub id: String,
    /// The object's kind; a missing or non-string `kind` reads as `Other("")` (and is reported).
    pub kind: Kind,
    /// `[x, y]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos: Option<[f64; 2]>,
    /// `[width, height]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<[f64; 2]>,
    /// Degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<f64>,
    /// Fractional index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<String>,
    /// Contents of the `text` `Y.Text` (or of a plain string there, see [`crate::read`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// CSS colour, as stored (not re-validated on read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// Containing frame id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
    /// Connector start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Connector end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Connector label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Creator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Creation time, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
    /// Fields this crate does not know, kept verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

impl Object {
    /// An object with only an id and a kind.
    pub fn new(id: impl Into<String>, kind: Kind) -> Self {
        Object {
            id: id.into(),
            kind,
            pos: None,
            size: None,
            rotation: None,
            z: None,
            text: None,
            color: None,
            frame: None,
            from: None,
            to: None,
            label: None,
            created_by: None,
            created_at: None,
            extra: BTreeMap::new(),
        }
    }
}

/// The `meta` root map.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Meta {
    /// Board title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Every other setting, kept verbatim.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Value>,
}

/// One chat message. Messages missing a field or with a field of the wrong type are skipped
/// (and reported).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Message id.
    pub id: String,
    /// Author.
    pub author: String,
    /// Text.
    pub text: String,
    /// When it was posted, ms since the Unix epoch.
    pub at: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::KNOWN {
            assert_eq!(Kind::from_name(kind.as_str()), kind);
        }
        assert_eq!(Kind::from_name("poll"), Kind::Other("poll".into()));
        assert_eq!(Kind::from_name("Sticky"), Kind::Other("Sticky".into()));
    }
}
