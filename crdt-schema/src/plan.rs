//! Validation of an [`Op`] against the current document, producing a [`Plan`] of writes.
//!
//! Reading only: a plan is computed completely (every problem collected) before
//! [`crate::ops::apply`] performs its first write.

use std::collections::HashSet;

use yrs::{Any, Array, GetString, Map, MapRef, Out, ReadTxn, TextRef};

use crate::limits::{MAX_AUTHOR_LEN, MAX_CHAT_LEN, MAX_LABEL_LEN, MAX_TEXT_LEN, MAX_TITLE_LEN};
use crate::model::{ChatMessage, Kind};
use crate::names::{chat_fields, fields, roots};
use crate::ops::{NewObject, Op, number};
use crate::text::{utf16_len, utf16_to_byte};
use crate::validate::{Checker, IssueCode, ValidationError};
use crate::zindex;

/// An offset in both units; the doc's `OffsetKind` picks one at write time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offset {
    pub(crate) bytes: u32,
    pub(crate) utf16: u32,
}

#[derive(Debug)]
pub(crate) enum TextEdit {
    /// Edit the existing `Y.Text`.
    InPlace {
        text: TextRef,
        index: Offset,
        delete: Offset,
        insert: String,
    },
    /// Write a new `Y.Text` with these contents (the field held no `Y.Text`).
    Replace { contents: String },
}

// Short-lived: one plan per applied op.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Plan {
    Create {
        obj: NewObject,
        z: String,
    },
    Set {
        map: MapRef,
        key: &'static str,
        value: Any,
    },
    Remove {
        map: MapRef,
        key: &'static str,
    },
    Text {
        map: MapRef,
        edit: TextEdit,
    },
    Nothing,
    Delete {
        deleted: Vec<String>,
        released: Vec<(String, MapRef)>,
    },
    SetTitle(String),
    PostChat(ChatMessage),
}

/// An existing object.
struct Found {
    map: MapRef,
    kind: Kind,
}

fn objects_root<T: ReadTxn>(txn: &T) -> Option<MapRef> {
    txn.get_map(roots::OBJECTS)
}

fn string_field<T: ReadTxn>(txn: &T, map: &MapRef, key: &str) -> Option<String> {
    match map.get(txn, key) {
        Some(Out::Any(Any::String(s))) => Some(s.to_string()),
        _ => None,
    }
}

fn find<T: ReadTxn>(txn: &T, id: &str) -> Option<Found> {
    let Some(Out::YMap(map)) = objects_root(txn)?.get(txn, id) else {
        return None;
    };
    let kind = Kind::from_name(&string_field(txn, &map, fields::KIND).unwrap_or_default());
    Some(Found { map, kind })
}

/// The object `id`, or a `NotFound` issue on `field`.
fn require<T: ReadTxn>(c: &mut Checker, txn: &T, field: &str, id: &str) -> Option<Found> {
    let found = find(txn, id);
    if found.is_none() {
        c.push(field, IssueCode::NotFound, format!("no object {id:?}"));
    }
    found
}

fn no_text_on_connector(c: &mut Checker, found: &Found) {
    if found.kind == Kind::Connector {
        c.push(
            "id",
            IssueCode::NotAllowed,
            "connectors have a label, not a text",
        );
    }
}

/// `frame` must be an existing frame; if `moving` is given, putting it there must not make a
/// cycle.
fn check_frame<T: ReadTxn>(c: &mut Checker, txn: &T, frame: &str, moving: Option<&str>) {
    let Some(found) = require(c, txn, "frame", frame) else {
        return;
    };
    if found.kind != Kind::Frame {
        c.push(
            "frame",
            IssueCode::WrongKind,
            format!("{frame:?} is a {}, not a frame", found.kind),
        );
        return;
    }
    let Some(moving) = moving else { return };
    if frame == moving {
        c.push("frame", IssueCode::Cycle, "an object cannot contain itself");
        return;
    }
    // Walk up from the new frame; reaching `moving` means a cycle. Stop on a pre-existing loop.
    let mut seen = HashSet::new();
    let mut current = found.map;
    while let Some(parent) = string_field(txn, &current, fields::FRAME) {
        if parent == moving {
            c.push(
                "frame",
                IssueCode::Cycle,
                format!("{frame:?} is inside {moving:?}"),
            );
            return;
        }
        if !seen.insert(parent.clone()) {
            return;
        }
        match find(txn, &parent) {
            Some(next) => current = next.map,
            None => return,
        }
    }
}

fn check_endpoint<T: ReadTxn>(c: &mut Checker, txn: &T, field: &str, id: &str) {
    if let Some(found) = require(c, txn, field, id)
        && found.kind == Kind::Connector
    {
        c.push(
            field,
            IssueCode::WrongKind,
            "a connector cannot connect to a connector",
        );
    }
}

/// The highest (`top`) or lowest valid `z` of the board.
pub(crate) fn z_extreme<T: ReadTxn>(txn: &T, top: bool) -> Option<String> {
    let objects = objects_root(txn)?;
    objects
        .iter(txn)
        .filter_map(|(_, out)| match out {
            Out::YMap(m) => string_field(txn, &m, fields::Z),
            _ => None,
        })
        .filter(|z| zindex::validate_key(z).is_ok())
        .reduce(|a, b| if (b > a) == top { b } else { a })
}

fn offset(s: &str, index: usize, c: &mut Checker, field: &str) -> Option<Offset> {
    match utf16_to_byte(s, index) {
        Ok(bytes) => Some(Offset {
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
            utf16: u32::try_from(index).unwrap_or(u32::MAX),
        }),
        Err(e) => {
            c.push(field, IssueCode::InvalidOffset, e.to_string());
            None
        }
    }
}

/// The current text of an object: its `Y.Text` if it has one, and its contents (a plain
/// string there counts as contents; anything else as empty).
fn current_text<T: ReadTxn>(txn: &T, map: &MapRef) -> (Option<TextRef>, String) {
    match map.get(txn, fields::TEXT) {
        Some(Out::YText(t)) => {
            let s = t.get_string(txn);
            (Some(t), s)
        }
        Some(Out::Any(Any::String(s))) => (None, s.to_string()),
        _ => (None, String::new()),
    }
}

pub(crate) fn plan<T: ReadTxn>(txn: &T, op: &Op) -> Result<Plan, ValidationError> {
    let mut c = Checker::default();
    let plan = match op {
        Op::Create(new) => plan_create(&mut c, txn, new),
        Op::Move { id, pos } => require(&mut c, txn, "id", id).map(|f| {
            c.pos("pos", *pos);
            set(f, fields::POS, pair(*pos))
        }),
        Op::Resize { id, size } => require(&mut c, txn, "id", id).map(|f| {
            c.size("size", *size);
            set(f, fields::SIZE, pair(*size))
        }),
        Op::Rotate { id, rotation } => require(&mut c, txn, "id", id).map(|f| {
            c.rotation("rotation", *rotation);
            set(f, fields::ROTATION, number(*rotation))
        }),
        Op::SetColor { id, color } => require(&mut c, txn, "id", id).map(|f| {
            c.color("color", color);
            set(f, fields::COLOR, Any::from(color.as_str()))
        }),
        Op::SetZ { id, z } => require(&mut c, txn, "id", id).map(|f| {
            c.z("z", z);
            set(f, fields::Z, Any::from(z.as_str()))
        }),
        Op::SetText { id, text } => plan_set_text(&mut c, txn, id, text),
        Op::InsertText { id, index, text } => plan_insert_text(&mut c, txn, id, *index, text),
        Op::DeleteText { id, index, len } => plan_delete_text(&mut c, txn, id, *index, *len),
        Op::SetFrame { id, frame } => require(&mut c, txn, "id", id).map(|f| {
            if f.kind == Kind::Connector {
                c.push(
                    "id",
                    IssueCode::NotAllowed,
                    "connectors cannot be in a frame",
                );
            }
            match frame {
                Some(frame) => {
                    check_frame(&mut c, txn, frame, Some(id));
                    set(f, fields::FRAME, Any::from(frame.as_str()))
                }
                None => Plan::Remove {
                    map: f.map,
                    key: fields::FRAME,
                },
            }
        }),
        Op::SetLabel { id, label } => require(&mut c, txn, "id", id).map(|f| {
            if f.kind != Kind::Connector {
                c.push("id", IssueCode::WrongKind, "only connectors have a label");
            }
            match label {
                Some(label) => {
                    c.length("label", label, 0, MAX_LABEL_LEN);
                    set(f, fields::LABEL, Any::from(label.as_str()))
                }
                None => Plan::Remove {
                    map: f.map,
                    key: fields::LABEL,
                },
            }
        }),
        Op::Delete { id } => plan_delete(&mut c, txn, id),
        Op::SetTitle { title } => {
            c.length("title", title, 0, MAX_TITLE_LEN);
            Some(Plan::SetTitle(title.clone()))
        }
        Op::PostChat(m) => plan_chat(&mut c, txn, m),
    };
    c.finish()?;
    // `None` always comes with an issue, so this is unreachable; stay total anyway.
    plan.ok_or_else(|| ValidationError { issues: Vec::new() })
}

fn set(found: Found, key: &'static str, value: Any) -> Plan {
    Plan::Set {
        map: found.map,
        key,
        value,
    }
}

pub(crate) fn pair(p: [f64; 2]) -> Any {
    Any::Array(vec![number(p[0]), number(p[1])].into())
}

fn plan_create<T: ReadTxn>(c: &mut Checker, txn: &T, new: &NewObject) -> Option<Plan> {
    let exists = objects_root(txn).is_some_and(|o| o.contains_key(txn, &new.id));
    if c.id("id", &new.id) && exists {
        c.push(
            "id",
            IssueCode::AlreadyExists,
            format!("{:?} already exists", new.id),
        );
    }
    if let Kind::Other(k) = &new.kind {
        c.push(
            "kind",
            IssueCode::NotAllowed,
            format!("cannot create unknown kind {k:?}"),
        );
    }
    let connector = new.kind == Kind::Connector;
    match new.pos {
        Some(p) => c.pos("pos", p),
        None if !connector => c.push("pos", IssueCode::Required, "required"),
        None => {}
    }
    match new.size {
        Some(s) => c.size("size", s),
        None if !connector => c.push("size", IssueCode::Required, "required"),
        None => {}
    }
    if let Some(r) = new.rotation {
        c.rotation("rotation", r);
    }
    if let Some(z) = &new.z {
        c.z("z", z);
    }
    if let Some(t) = &new.text {
        if connector {
            c.push(
                "text",
                IssueCode::NotAllowed,
                "connectors have a label, not a text",
            );
        } else {
            c.length("text", t, 0, MAX_TEXT_LEN);
        }
    }
    if let Some(color) = &new.color {
        c.color("color", color);
    }
    if let Some(frame) = &new.frame {
        if connector {
            c.push(
                "frame",
                IssueCode::NotAllowed,
                "connectors cannot be in a frame",
            );
        } else {
            check_frame(c, txn, frame, None);
        }
    }
    for (field, value) in [("from", &new.from), ("to", &new.to)] {
        match (value, connector) {
            (Some(id), true) => check_endpoint(c, txn, field, id),
            (None, true) => c.push(field, IssueCode::Required, "connectors need both ends"),
            (Some(_), false) => c.push(field, IssueCode::NotAllowed, "only connectors have ends"),
            (None, false) => {}
        }
    }
    if connector && new.from.is_some() && new.from == new.to {
        c.push(
            "to",
            IssueCode::NotAllowed,
            "a connector cannot connect an object to itself",
        );
    }
    if let Some(label) = &new.label {
        if connector {
            c.length("label", label, 0, MAX_LABEL_LEN);
        } else {
            c.push(
                "label",
                IssueCode::NotAllowed,
                "only connectors have a label",
            );
        }
    }
    c.length("created_by", &new.created_by, 1, MAX_AUTHOR_LEN);
    c.timestamp("created_at", new.created_at);
    let z = match (&new.z, z_extreme(txn, true)) {
        (Some(z), _) => z.clone(),
        (None, None) => zindex::first(),
        (None, Some(top)) => match zindex::after(&top) {
            Ok(z) => z,
            Err(e) => {
                c.push("z", IssueCode::InvalidZ, format!("cannot go on top: {e}"));
                return None;
            }
        },
    };
    Some(Plan::Create {
        obj: new.clone(),
        z,
    })
}

fn text_target<T: ReadTxn>(c: &mut Checker, txn: &T, id: &str) -> Option<Found> {
    let found = require(c, txn, "id", id)?;
    no_text_on_connector(c, &found);
    Some(found)
}

fn plan_set_text<T: ReadTxn>(c: &mut Checker, txn: &T, id: &str, text: &str) -> Option<Plan> {
    c.length("text", text, 0, MAX_TEXT_LEN);
    let found = text_target(c, txn, id)?;
    let (existing, current) = current_text(txn, &found.map);
    let edit = match existing {
        Some(_) if current == text => return Some(Plan::Nothing),
        Some(t) => TextEdit::InPlace {
            text: t,
            index: Offset { bytes: 0, utf16: 0 },
            delete: offset(&current, utf16_len(&current), c, "text")?,
            insert: text.to_string(),
        },
        None => TextEdit::Replace {
            contents: text.to_string(),
        },
    };
    Some(Plan::Text {
        map: found.map,
        edit,
    })
}

fn plan_insert_text<T: ReadTxn>(
    c: &mut Checker,
    txn: &T,
    id: &str,
    index: usize,
    text: &str,
) -> Option<Plan> {
    let found = text_target(c, txn, id)?;
    let (existing, current) = current_text(txn, &found.map);
    let at = offset(&current, index, c, "index");
    let new_len = utf16_len(&current).saturating_add(utf16_len(text));
    if new_len > MAX_TEXT_LEN {
        c.push(
            "text",
            IssueCode::BadLength,
            format!("the text would be {new_len} characters (UTF-16 units), over {MAX_TEXT_LEN}"),
        );
    }
    let at = at?;
    let edit = match existing {
        Some(t) => TextEdit::InPlace {
            text: t,
            index: at,
            delete: Offset { bytes: 0, utf16: 0 },
            insert: text.to_string(),
        },
        None => {
            let mut contents = current;
            contents.insert_str(at.bytes as usize, text);
            TextEdit::Replace { contents }
        }
    };
    Some(Plan::Text {
        map: found.map,
        edit,
    })
}

fn plan_delete_text<T: ReadTxn>(
    c: &mut Checker,
    txn: &T,
    id: &str,
    index: usize,
    len: usize,
) -> Option<Plan> {
    let found = text_target(c, txn, id)?;
    let (existing, current) = current_text(txn, &found.map);
    let start = offset(&current, index, c, "index");
    let end = match index.checked_add(len) {
        Some(end) => offset(&current, end, c, "len"),
        None => {
            c.push("len", IssueCode::InvalidOffset, "index + len overflows");
            None
        }
    };
    let (start, end) = (start?, end?);
    if len == 0 {
        return Some(Plan::Nothing);
    }
    let delete = Offset {
        bytes: end.bytes - start.bytes,
        utf16: end.utf16 - start.utf16,
    };
    let edit = match existing {
        Some(t) => TextEdit::InPlace {
            text: t,
            index: start,
            delete,
            insert: String::new(),
        },
        None => {
            let mut contents = current;
            contents.replace_range(start.bytes as usize..end.bytes as usize, "");
            TextEdit::Replace { contents }
        }
    };
    Some(Plan::Text {
        map: found.map,
        edit,
    })
}

fn plan_delete<T: ReadTxn>(c: &mut Checker, txn: &T, id: &str) -> Option<Plan> {
    let Some(objects) = objects_root(txn).filter(|o| o.contains_key(txn, id)) else {
        c.push("id", IssueCode::NotFound, format!("no object {id:?}"));
        return None;
    };
    let mut attached = Vec::new();
    let mut released = Vec::new();
    for (other, out) in objects.iter(txn) {
        let Out::YMap(map) = out else { continue };
        if other == id {
            continue;
        }
        let is_connector = string_field(txn, &map, fields::KIND).as_deref() == Some("connector");
        let ends_here = [fields::FROM, fields::TO]
            .iter()
            .any(|f| string_field(txn, &map, f).as_deref() == Some(id));
        if is_connector && ends_here {
            attached.push(other.to_string());
        } else if string_field(txn, &map, fields::FRAME).as_deref() == Some(id) {
            released.push((other.to_string(), map));
        }
    }
    attached.sort();
    released.sort_by(|a, b| a.0.cmp(&b.0));
    let mut deleted = vec![id.to_string()];
    deleted.extend(attached);
    Some(Plan::Delete { deleted, released })
}

fn plan_chat<T: ReadTxn>(c: &mut Checker, txn: &T, m: &ChatMessage) -> Option<Plan> {
    if c.id("id", &m.id) {
        let taken = txn.get_array(roots::CHAT).is_some_and(|chat| {
            chat.iter(txn).any(|out| match out {
                Out::Any(Any::Map(entries)) => {
                    matches!(entries.get(chat_fields::ID), Some(Any::String(s)) if **s == *m.id)
                }
                _ => false,
            })
        });
        if taken {
            c.push(
                "id",
                IssueCode::AlreadyExists,
                format!("message {:?} already exists", m.id),
            );
        }
    }
    c.length("author", &m.author, 1, MAX_AUTHOR_LEN);
    c.length("text", &m.text, 1, MAX_CHAT_LEN);
    c.timestamp("at", m.at);
    Some(Plan::PostChat(m.clone()))
}
