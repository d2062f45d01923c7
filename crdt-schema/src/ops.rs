//! Validated typed mutations, applied inside a transaction the caller owns.
//!
//! [`apply`] validates an [`Op`] completely against the current document (reading only), and
//! writes nothing unless every check passed; on failure it returns every problem at once in a
//! [`ValidationError`]. [`validate`] is the same check without writing (a dry run).
//!
//! Defined behaviour:
//! - **Create** ([`Op::Create`]): only the six known kinds can be created; the id must be new and
//!   well-formed ([`crate::ids::is_valid_id`]). Shapes, stickies, texts and frames need `pos`
//!   and `size`; connectors need `from` and `to` and may omit `pos`/`size`. Without `z`, the
//!   object goes on top (a key after the board's highest valid `z`). `rotation` defaults to 0
//!   (except for connectors). `text` becomes a `Y.Text`.
//! - **Connectors**: `from` and `to` must name existing objects that are not connectors, and
//!   must differ. Connectors have a `label` (plain string), no `text`, and cannot be in a
//!   frame.
//! - **Frames**: `frame` must name an existing object of kind `frame`, not the object itself,
//!   and must not create a cycle (a frame inside one of its own descendants). Frames may nest.
//! - **Delete** ([`Op::Delete`]): deletes the object, every connector whose `from` or `to` is
//!   that object, and, when the object is a frame, *releases* its children (their `frame` field
//!   is removed; they are not deleted). Reported in [`Applied::Deleted`].
//! - **Text** offsets and lengths are UTF-16 code units (see [`crate::text`]); an offset inside
//!   a surrogate pair is rejected. If `text` holds a plain string or nothing, editing it writes a
//!   real `Y.Text` with the edited contents. [`Op::SetText`] with identical text writes nothing.
//! - **Numbers** must be finite and within [`crate::limits`]; sizes must be > 0.
//! - **Colours**: see [`crate::color`].
//!
//! Invariants can still be broken by concurrent edits from other replicas (a connector created
//! while its endpoint is deleted elsewhere); reads report those as
//! [`crate::ReadProblem::BadReference`].

use serde::{Deserialize, Serialize};
use yrs::{
    Any, Array, In, Map, MapPrelim, MapRef, Number, ReadTxn, Text, TextPrelim, TransactionMut,
    WriteTxn,
};

use crate::model::{ChatMessage, Kind};
use crate::names::{chat_fields, fields, meta_fields, roots};
use crate::plan::{Plan, TextEdit, plan};
use crate::validate::ValidationError;

/// A new object. Build one with [`NewObject::new`] and the `with_*`/`at` helpers, or
/// deserialize it (missing optional fields default to `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewObject {
    /// Id (see [`crate::ids`]); must not exist yet.
    pub id: String,
    /// One of the six known kinds.
    pub kind: Kind,
    /// `[x, y]`; required except for connectors.
    #[serde(default)]
    pub pos: Option<[f64; 2]>,
    /// `[width, height]`, both > 0; required except for connectors.
    #[serde(default)]
    pub size: Option<[f64; 2]>,
    /// Degrees; defaults to 0 (connectors: not written unless given).
    #[serde(default)]
    pub rotation: Option<f64>,
    /// Fractional index; defaults to the top of the board.
    #[serde(default)]
    pub z: Option<String>,
    /// Initial text (not for connectors).
    #[serde(default)]
    pub text: Option<String>,
    /// CSS colour.
    #[serde(default)]
    pub color: Option<String>,
    /// Containing frame (not for connectors).
    #[serde(default)]
    pub frame: Option<String>,
    /// Connector start (connectors only, required).
    #[serde(default)]
    pub from: Option<String>,
    /// Connector end (connectors only, required).
    #[serde(default)]
    pub to: Option<String>,
    /// Connector label (connectors only).
    #[serde(default)]
    pub label: Option<String>,
    /// Creator (1-128 characters).
    pub created_by: String,
    /// Creation time, ms since the Unix epoch (supplied by the caller: this crate has no clock).
    pub created_at: f64,
}

impl NewObject {
    /// A new object with nothing but the required identity fields.
    pub fn new(
        id: impl Into<String>,
        kind: Kind,
        created_by: impl Into<String>,
        created_at: f64,
    ) -> Self {
        NewObject {
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
            created_by: created_by.into(),
            created_at,
        }
    }

    /// Sets `pos` and `size`.
    pub fn at(mut self, pos: [f64; 2], size: [f64; 2]) -> Self {
        self.pos = Some(pos);
        self.size = Some(size);
        self
    }

    /// Sets `text`.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets `color`.
    pub fn with_color(mut self, color: impl Into<String>) -> Self {
        self.color = Some(color.into());
        self
    }

    /// Sets `z`.
    pub fn with_z(mut self, z: impl Into<String>) -> Self {
        self.z = Some(z.into());
        self
    }

    /// Sets `rotation`.
    pub fn with_rotation(mut self, degrees: f64) -> Self {
        self.rotation = Some(degrees);
        self
    }

    /// Sets `frame`.
    pub fn in_frame(mut self, frame: impl Into<String>) -> Self {
        self.frame = Some(frame.into());
        self
    }

    /// Sets `from` and `to` (for connectors).
    pub fn connecting(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self.to = Some(to.into());
        self
    }

    /// Sets `label` (for connectors).
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// One validated change. Serialized with an `"op"` tag, e.g.
/// `{"op": "move", "id": "n1", "pos": [10, 20]}` or `{"op": "create", "id": ..., "kind": ...}`.
// `Create` is much larger than the rest; ops are short-lived values, never stored in bulk, so
// boxing it would only cost callers ergonomics.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create an object (any kind, including connectors).
    Create(NewObject),
    /// Set `pos`.
    Move {
        /// Object id.
        id: String,
        /// New `[x, y]`.
        pos: [f64; 2],
    },
    /// Set `size` (both > 0).
    Resize {
        /// Object id.
        id: String,
        /// New `[width, height]`.
        size: [f64; 2],
    },
    /// Set `rotation` (degrees).
    Rotate {
        /// Object id.
        id: String,
        /// New rotation.
        rotation: f64,
    },
    /// Replace the whole text.
    SetText {
        /// Object id.
        id: String,
        /// New text.
        text: String,
    },
    /// Insert into the text at a UTF-16 offset.
    InsertText {
        /// Object id.
        id: String,
        /// UTF-16 offset.
        index: usize,
        /// Text to insert.
        text: String,
    },
    /// Delete `len` UTF-16 units of the text from a UTF-16 offset.
    DeleteText {
        /// Object id.
        id: String,
        /// UTF-16 offset.
        index: usize,
        /// UTF-16 units to delete.
        len: usize,
    },
    /// Set `color`.
    SetColor {
        /// Object id.
        id: String,
        /// CSS colour.
        color: String,
    },
    /// Set `z` (see [`crate::zindex`] to compute one).
    SetZ {
        /// Object id.
        id: String,
        /// Fractional index.
        z: String,
    },
    /// Put the object in a frame (`Some`) or take it out (`None`).
    SetFrame {
        /// Object id.
        id: String,
        /// Frame id, or `None` to remove the `frame` field.
        frame: Option<String>,
    },
    /// Set or remove a connector's label.
    SetLabel {
        /// Connector id.
        id: String,
        /// New label, or `None` to remove it.
        label: Option<String>,
    },
    /// Delete an object (see the module docs for what else is deleted or released).
    Delete {
        /// Object id.
        id: String,
    },
    /// Set the board title.
    SetTitle {
        /// New title (may be empty).
        title: String,
    },
    /// Append a chat message.
    PostChat(ChatMessage),
}

/// What an applied [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Applied {
    /// An object was created, with this `z`.
    Created {
        /// Its id.
        id: String,
        /// Its `z` (given or computed).
        z: String,
    },
    /// One object field (or the title) changed, or nothing needed to change.
    Updated,
    /// Objects were deleted and frame children released.
    Deleted {
        /// The object and the connectors attached to it, in that order.
        deleted: Vec<String>,
        /// Objects whose `frame` field was removed.
        released: Vec<String>,
    },
    /// A chat message was appended.
    Posted,
}

/// Validates `op` against the document and applies it inside `txn`, or changes nothing and
/// returns every problem found.
pub fn apply(txn: &mut TransactionMut, op: &Op) -> Result<Applied, ValidationError> {
    let plan = plan(&*txn, op)?;
    Ok(execute(txn, plan))
}

/// Validates `op` against the document without changing anything.
pub fn validate<T: ReadTxn>(txn: &T, op: &Op) -> Result<(), ValidationError> {
    plan(txn, op).map(|_| ())
}

/// The highest valid `z` on the board, if any (to compute "bring to front" keys).
pub fn top_z<T: ReadTxn>(txn: &T) -> Option<String> {
    crate::plan::z_extreme(txn, true)
}

/// The lowest valid `z` on the board, if any (to compute "send to back" keys).
pub fn bottom_z<T: ReadTxn>(txn: &T) -> Option<String> {
    crate::plan::z_extreme(txn, false)
}

/// A number as Yjs would store it: integral values as integers (compact, and what JS writes for
/// small integers), others as floats.
pub(crate) fn number(v: f64) -> Any {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if v.fract() == 0.0 && v.abs() <= MAX_SAFE && !(v == 0.0 && v.is_sign_negative()) {
        Any::Number(Number::Int(v as i64))
    } else {
        Any::Number(Number::Float(v))
    }
}

/// Performs a validated plan. Infallible: everything that could fail was checked by `plan`.
fn execute(txn: &mut TransactionMut, plan: Plan) -> Applied {
    match plan {
        Plan::Create { obj, z } => {
            let mut entries: Vec<(&str, In)> = vec![
                (fields::KIND, Any::from(obj.kind.as_str()).into()),
                (fields::Z, Any::from(z.as_str()).into()),
                (
                    fields::CREATED_BY,
                    Any::from(obj.created_by.as_str()).into(),
                ),
                (fields::CREATED_AT, number(obj.created_at).into()),
            ];
            let strings = [
                (fields::COLOR, &obj.color),
                (fields::FRAME, &obj.frame),
                (fields::FROM, &obj.from),
                (fields::TO, &obj.to),
                (fields::LABEL, &obj.label),
            ];
            for (key, value) in strings {
                if let Some(v) = value {
                    entries.push((key, Any::from(v.as_str()).into()));
                }
            }
            if let Some(p) = obj.pos {
                entries.push((fields::POS, crate::plan::pair(p).into()));
            }
            if let Some(s) = obj.size {
                entries.push((fields::SIZE, crate::plan::pair(s).into()));
            }
            let rotation = match obj.kind {
                Kind::Connector => obj.rotation,
                _ => Some(obj.rotation.unwrap_or(0.0)),
            };
            if let Some(r) = rotation {
                entries.push((fields::ROTATION, number(r).into()));
            }
            if let Some(t) = &obj.text {
                entries.push((fields::TEXT, TextPrelim::new(t.as_str()).into()));
            }
            let objects = txn.get_or_insert_map(roots::OBJECTS);
            objects.insert(txn, obj.id.as_str(), MapPrelim::from_iter(entries));
            Applied::Created { id: obj.id, z }
        }
        Plan::Set { map, key, value } => {
            map.insert(txn, key, value);
            Applied::Updated
        }
        Plan::Remove { map, key } => {
            map.remove(txn, key);
            Applied::Updated
        }
        Plan::Text { map, edit } => {
            apply_text_edit(txn, &map, edit);
            Applied::Updated
        }
        Plan::Nothing => Applied::Updated,
        Plan::Delete { deleted, released } => {
            let objects = txn.get_or_insert_map(roots::OBJECTS);
            for id in &deleted {
                objects.remove(txn, id);
            }
            for (_, map) in &released {
                map.remove(txn, fields::FRAME);
            }
            Applied::Deleted {
                deleted,
                released: released.into_iter().map(|(id, _)| id).collect(),
            }
        }
        Plan::SetTitle(title) => {
            let meta = txn.get_or_insert_map(roots::META);
            meta.insert(txn, meta_fields::TITLE, title);
            Applied::Updated
        }
        Plan::PostChat(m) => {
            let chat = txn.get_or_insert_array(roots::CHAT);
            let message: Any = Any::from(std::collections::HashMap::from([
                (chat_fields::ID.to_string(), Any::from(m.id)),
                (chat_fields::AUTHOR.to_string(), Any::from(m.author)),
                (chat_fields::TEXT.to_string(), Any::from(m.text)),
                (chat_fields::AT.to_string(), number(m.at)),
            ]));
            chat.push_back(txn, message);
            Applied::Posted
        }
    }
}

fn apply_text_edit(txn: &mut TransactionMut, map: &MapRef, edit: TextEdit) {
    match edit {
        TextEdit::InPlace {
            text,
            index,
            delete,
            insert,
        } => {
            let utf16 = matches!(txn.doc().offset_kind(), yrs::OffsetKind::Utf16);
            let (index, delete) = if utf16 {
                (index.utf16, delete.utf16)
            } else {
                (index.bytes, delete.bytes)
            };
            if delete > 0 {
                text.remove_range(txn, index, delete);
            }
            if !insert.is_empty() {
                text.insert(txn, index, &insert);
            }
        }
        TextEdit::Replace { contents } => {
            map.insert(txn, fields::TEXT, TextPrelim::new(contents));
        }
    }
}

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;
