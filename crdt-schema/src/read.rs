//! Lenient, typed read of a whole board.
//!
//! Reading never fails and never panics, whatever the document holds. Each value of the wrong
//! type is skipped and reported as a [`ReadIssue`]; unknown kinds and unknown fields are kept.
//! Reads check types and finiteness only, not write-time limits (a too-long title or an odd
//! colour written by another client is shown as stored).
//!
//! Decisions:
//! - `pos` and `size` must be an array of exactly two finite numbers; anything else (a string, three
//!   numbers, a `Y.Array`, NaN) is skipped.
//! - `text` should be a `Y.Text`; a plain string there (written by a careless client) is **used**
//!   as the text and reported as [`ReadProblem::PlainText`]. Editing that text through
//!   [`crate::ops`] replaces it with a real `Y.Text`.
//! - `label` may be a plain string or a `Y.Text`, silently.
//! - An object entry that is not a `Y.Map` is skipped entirely; a missing or non-string `kind`
//!   reads as `Kind::Other("")`.
//! - `frame`, `from` and `to` naming a missing object (or `frame` naming a non-frame) are kept
//!   and reported as [`ReadProblem::BadReference`]; concurrent edits can produce them.
//! - Chat entries may be plain maps or `Y.Map`s; an entry missing `id`, `author`, `text` or
//!   `at`, or with one of the wrong type, is skipped. Extra chat fields are ignored.
//! - Issues come out in a deterministic order: objects by id, then meta, then chat.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;
use yrs::types::ToJson;
use yrs::{Any, Array, GetString, Map, MapRef, Number, Out, ReadTxn};

use crate::model::{Board, ChatMessage, Kind, Meta, Object};
use crate::names::{chat_fields, fields, meta_fields, roots};
use crate::value::{Value, describe, describe_any};

/// One value that was skipped or accepted leniently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadIssue {
    /// Root the value lives under: `"objects"`, `"meta"` or `"chat"`.
    pub root: &'static str,
    /// Object id, meta key, or chat index (as a string).
    pub key: String,
    /// Field inside the object or message, if the issue is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub problem: ReadProblem,
}

/// What was wrong with a value, and what the reader did about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReadProblem {
    /// The value has the wrong type; it was skipped.
    WrongType {
        /// What the contract expects, e.g. `array of 2 numbers`.
        expected: &'static str,
        /// What was found, e.g. `string`, `array of 3`, `Y.Text`.
        found: String,
    },
    /// A number is NaN or infinite; it was skipped.
    NotFinite,
    /// A required value is missing (object `kind`, connector `from`/`to`, chat fields).
    Missing,
    /// `text` is a plain string rather than a `Y.Text`; it was used as the text.
    PlainText,
    /// A reference to another object that does not hold; the value was kept.
    BadReference {
        /// The referenced id.
        target: String,
        /// `"no such object"` or `"not a frame"`.
        reason: &'static str,
    },
}

/// Reads the whole board. Roots that do not exist read as empty.
pub fn read_board<T: ReadTxn>(txn: &T) -> Board {
    let mut issues = Vec::new();
    let mut objects = Vec::new();
    if let Some(map) = txn.get_map(roots::OBJECTS) {
        let mut entries: Vec<(String, Out)> =
            map.iter(txn).map(|(k, v)| (k.to_string(), v)).collect();
        entries.sort_by(|a, b| js_cmp(&a.0, &b.0));
        for (id, out) in entries {
            match out {
                Out::YMap(m) => objects.push(read_object_map(txn, &id, &m, &mut issues)),
                other => issues.push(ReadIssue {
                    root: roots::OBJECTS,
                    key: id,
                    field: None,
                    problem: wrong("Y.Map", describe(&other)),
                }),
            }
        }
    }
    check_references(&objects, &mut issues);
    objects.sort_by(paint_order);
    let meta = read_meta(txn, &mut issues);
    let chat = read_chat(txn, &mut issues);
    Board {
        objects,
        meta,
        chat,
        issues,
    }
}

/// Reads one object, or `None` if there is no `Y.Map` under `id`. References to other objects
/// are not checked (see [`read_board`]).
pub fn read_object<T: ReadTxn>(txn: &T, id: &str) -> Option<(Object, Vec<ReadIssue>)> {
    let map = txn.get_map(roots::OBJECTS)?;
    let Some(Out::YMap(m)) = map.get(txn, id) else {
        return None;
    };
    let mut issues = Vec::new();
    let object = read_object_map(txn, id, &m, &mut issues);
    Some((object, issues))
}

/// Compares strings as JS does (UTF-16 code units); identical to byte order for ASCII.
pub(crate) fn js_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Paint order: by `z` (objects without one first), then by id.
fn paint_order(a: &Object, b: &Object) -> Ordering {
    let z = match (&a.z, &b.z) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => js_cmp(x, y),
    };
    z.then_with(|| js_cmp(&a.id, &b.id))
}

fn wrong(expected: &'static str, found: String) -> ReadProblem {
    ReadProblem::WrongType { expected, found }
}

fn number(n: &Number) -> f64 {
    match *n {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    }
}

fn read_number(out: &Out) -> Result<f64, ReadProblem> {
    match out {
        Out::Any(Any::Number(n)) => {
            let v = number(n);
            if v.is_finite() {
                Ok(v)
            } else {
                Err(ReadProblem::NotFinite)
            }
        }
        other => Err(wrong("number", describe(other))),
    }
}

fn read_pair(out: &Out) -> Result<[f64; 2], ReadProblem> {
    const EXPECTED: &str = "array of 2 numbers";
    let Out::Any(Any::Array(items)) = out else {
        return Err(wrong(EXPECTED, describe(out)));
    };
    let [Any::Number(x), Any::Number(y)] = items.as_ref() else {
        return Err(wrong(EXPECTED, describe(out)));
    };
    let (x, y) = (number(x), number(y));
    if x.is_finite() && y.is_finite() {
        Ok([x, y])
    } else {
        Err(ReadProblem::NotFinite)
    }
}

fn read_string(out: &Out) -> Result<String, ReadProblem> {
    match out {
        Out::Any(Any::String(s)) => Ok(s.to_string()),
        other => Err(wrong("string", describe(other))),
    }
}

fn read_object_map<T: ReadTxn>(
    txn: &T,
    id: &str,
    map: &MapRef,
    issues: &mut Vec<ReadIssue>,
) -> Object {
    let mut entries: Vec<(String, Out)> = map.iter(txn).map(|(k, v)| (k.to_string(), v)).collect();
    entries.sort_by(|a, b| js_cmp(&a.0, &b.0));
    let mut obj = Object::new(id, Kind::Other(String::new()));
    let mut saw_kind = false;
    let mut report = |field: &str, problem: ReadProblem| {
        issues.push(ReadIssue {
            root: roots::OBJECTS,
            key: id.to_string(),
            field: Some(field.to_string()),
            problem,
        });
    };
    for (key, out) in entries {
        let k = key.as_str();
        // Each arm stores the value or reports why it was skipped.
        let result: Result<(), ReadProblem> = match k {
            fields::KIND => {
                saw_kind = true;
                read_string(&out).map(|s| obj.kind = Kind::from_name(&s))
            }
            fields::POS => read_pair(&out).map(|p| obj.pos = Some(p)),
            fields::SIZE => read_pair(&out).map(|s| obj.size = Some(s)),
            fields::ROTATION => read_number(&out).map(|r| obj.rotation = Some(r)),
            fields::CREATED_AT => read_number(&out).map(|t| obj.created_at = Some(t)),
            fields::Z => read_string(&out).map(|s| obj.z = Some(s)),
            fields::COLOR => read_string(&out).map(|s| obj.color = Some(s)),
            fields::FRAME => read_string(&out).map(|s| obj.frame = Some(s)),
            fields::FROM => read_string(&out).map(|s| obj.from = Some(s)),
            fields::TO => read_string(&out).map(|s| obj.to = Some(s)),
            fields::CREATED_BY => read_string(&out).map(|s| obj.created_by = Some(s)),
            fields::LABEL => match &out {
                Out::YText(t) => {
                    obj.label = Some(t.get_string(txn));
                    Ok(())
                }
                other => read_string(other).map(|s| obj.label = Some(s)),
            },
            fields::TEXT => match &out {
                Out::YText(t) => {
                    obj.text = Some(t.get_string(txn));
                    Ok(())
                }
                Out::Any(Any::String(s)) => {
                    obj.text = Some(s.to_string());
                    Err(ReadProblem::PlainText)
                }
                other => Err(wrong("Y.Text", describe(other))),
            },
            _ => {
                obj.extra.insert(key.clone(), Value::from_out(txn, &out));
                Ok(())
            }
        };
        if let Err(problem) = result {
            report(k, problem);
        }
    }
    if !saw_kind {
        report(fields::KIND, ReadProblem::Missing);
    }
    if obj.kind == Kind::Connector {
        for (field, value) in [(fields::FROM, &obj.from), (fields::TO, &obj.to)] {
            if value.is_none() && !issues_has(issues, id, field) {
                issues.push(ReadIssue {
                    root: roots::OBJECTS,
                    key: id.to_string(),
                    field: Some(field.to_string()),
                    problem: ReadProblem::Missing,
                });
            }
        }
    }
    obj
}

fn issues_has(issues: &[ReadIssue], id: &str, field: &str) -> bool {
    issues
        .iter()
        .any(|i| i.root == roots::OBJECTS && i.key == id && i.field.as_deref() == Some(field))
}

fn check_references(objects: &[Object], issues: &mut Vec<ReadIssue>) {
    let kinds: HashMap<&str, &Kind> = objects.iter().map(|o| (o.id.as_str(), &o.kind)).collect();
    for o in objects {
        let refs = [
            (fields::FRAME, &o.frame, true),
            (fields::FROM, &o.from, false),
            (fields::TO, &o.to, false),
        ];
        for (field, target, must_be_frame) in refs {
            let Some(target) = target else { continue };
            let reason = match kinds.get(target.as_str()) {
                None => "no such object",
                Some(k) if must_be_frame && **k != Kind::Frame => "not a frame",
                Some(_) => continue,
            };
            issues.push(ReadIssue {
                root: roots::OBJECTS,
                key: o.id.clone(),
                field: Some(field.to_string()),
                problem: ReadProblem::BadReference {
                    target: target.clone(),
                    reason,
                },
            });
        }
    }
}

fn read_meta<T: ReadTxn>(txn: &T, issues: &mut Vec<ReadIssue>) -> Meta {
    let mut meta = Meta::default();
    let Some(map) = txn.get_map(roots::META) else {
        return meta;
    };
    let mut entries: Vec<(String, Out)> = map.iter(txn).map(|(k, v)| (k.to_string(), v)).collect();
    entries.sort_by(|a, b| js_cmp(&a.0, &b.0));
    for (key, out) in entries {
        if key == meta_fields::TITLE {
            match read_string(&out) {
                Ok(t) => meta.title = Some(t),
                Err(problem) => issues.push(ReadIssue {
                    root: roots::META,
                    key,
                    field: None,
                    problem,
                }),
            }
        } else {
            meta.extra.insert(key, Value::from_out(txn, &out));
        }
    }
    meta
}

fn read_chat<T: ReadTxn>(txn: &T, issues: &mut Vec<ReadIssue>) -> Vec<ChatMessage> {
    let Some(array) = txn.get_array(roots::CHAT) else {
        return Vec::new();
    };
    let mut chat = Vec::new();
    for (index, out) in array.iter(txn).enumerate() {
        let any = match &out {
            Out::Any(any) => Some(any.clone()),
            Out::YMap(m) => Some(m.to_json(txn)),
            _ => None,
        };
        let mut problems = Vec::new();
        let message = match &any {
            Some(Any::Map(m)) => read_chat_message(m, &mut problems),
            Some(other) => {
                problems.push((None, wrong("map", describe_any(other))));
                None
            }
            None => {
                problems.push((None, wrong("map", describe(&out))));
                None
            }
        };
        for (field, problem) in problems {
            issues.push(ReadIssue {
                root: roots::CHAT,
                key: index.to_string(),
                field: field.map(str::to_string),
                problem,
            });
        }
        chat.extend(message);
    }
    chat
}

type ChatProblems = Vec<(Option<&'static str>, ReadProblem)>;

fn read_chat_message(m: &HashMap<String, Any>, problems: &mut ChatProblems) -> Option<ChatMessage> {
    let mut string = |field: &'static str| match m.get(field) {
        Some(Any::String(s)) => Some(s.to_string()),
        Some(other) => {
            problems.push((Some(field), wrong("string", describe_any(other))));
            None
        }
        None => {
            problems.push((Some(field), ReadProblem::Missing));
            None
        }
    };
    let id = string(chat_fields::ID);
    let author = string(chat_fields::AUTHOR);
    let text = string(chat_fields::TEXT);
    let at = match m.get(chat_fields::AT) {
        Some(Any::Number(n)) if number(n).is_finite() => Some(number(n)),
        Some(Any::Number(_)) => {
            problems.push((Some(chat_fields::AT), ReadProblem::NotFinite));
            None
        }
        Some(other) => {
            problems.push((Some(chat_fields::AT), wrong("number", describe_any(other))));
            None
        }
        None => {
            problems.push((Some(chat_fields::AT), ReadProblem::Missing));
            None
        }
    };
    Some(ChatMessage {
        id: id?,
        author: author?,
        text: text?,
        at: at?,
    })
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
