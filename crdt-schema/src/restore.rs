//! Restore a board to an earlier version **as a forward change**, as
//! `POST /v1/boards/{id}/restore` does (PROTOCOL.md, "Restore").
//!
//! [`restore_to`] compares the current board (in the caller's [`TransactionMut`]) with a target
//! version (any [`ReadTxn`] on a *separate* [`Doc`], e.g. one loaded from the version's bytes)
//! and writes, in the caller's transaction, the ordinary CRDT operations that turn the current
//! content into the target's. Nothing is reset or reloaded: history is kept, the change is one
//! update like any other (the caller picks its origin, e.g. `restore:{version}`), connected
//! clients converge by receiving it, and edits made concurrently elsewhere merge with it.
//! [`restore_from_update_v1`] does the same from a version's bytes (a Yjs v1 update).
//!
//! # Rules (a public contract)
//!
//! - **`objects`** (root `Y.Map`, by id):
//!   - an id only in the current board is removed;
//!   - an id only in the target is created as a deep copy: plain values as they are, `Y.Text`
//!     as a new `Y.Text` with the same contents (formatting and embeds included), nested
//!     `Y.Map`/`Y.Array` copied recursively, unknown kinds and unknown fields included;
//!   - an id in both is updated field by field, with the value rules below.
//! - **Value rules** (an object's fields, `meta` keys, and keys of nested `Y.Map`s, at any
//!   depth):
//!   - equal values are left alone: **no write at all** (rewriting an equal value would still
//!     leave a tombstone and disturb concurrent editors);
//!   - a key only in the current map is removed; a key only in the target is set to a copy;
//!   - a `Y.Text` on both sides is edited **minimally**: the common prefix and suffix (whole
//!     characters, measured in UTF-16 code units as JS counts them, whatever the doc's
//!     `OffsetKind`; a surrogate pair is never split) are kept and only the middle is deleted
//!     and inserted, so concurrent typing elsewhere in the text survives. A text holding embeds
//!     is replaced instead (its offsets are not those of its string);
//!   - a `Y.Map` on both sides is updated key by key with these same rules;
//!   - a `Y.Array` on both sides keeps its common leading and trailing elements (deep equality)
//!     and replaces only the elements in between;
//!   - anything else that differs (a plain value, or a value whose type differs, e.g. a plain
//!     string where the target has a `Y.Text`) is replaced by a copy of the target's value.
//! - **`meta`** (root `Y.Map`): the same per-key value rules.
//! - **`chat`** is conversation history, not board content, and is **untouched**: restore never
//!   deletes chat messages, and messages present in the target but missing now are not re-added.
//! - **Any other root**, in either document, is untouched.
//! - **Equality is deep**: plain values structurally (numbers by value, exactly: `1` stored as an
//!   integer equals `1.0` stored as a float, `0` and `-0` differ, NaN equals NaN; `null` and
//!   `undefined` differ), `Y.Text` by its string (formatting is not compared), `Y.Map` and
//!   `Y.Array` recursively, XML types by their XML string, a value and a shared type never.
//! - **Sub-documents** cannot be copied between documents: a target value that is (or contains)
//!   a sub-document is left as it is now and listed in [`RestoreReport::skipped`].
//! - Writes happen in a deterministic order (keys sorted as JS sorts strings), so the same
//!   restore of the same states produces the same operations.
//!
//! Restore writes raw values and does not validate them against [`crate::ops`]'s rules: the
//! target is a state the board really had. The result is as lenient to read as any board.
//!
//! Never pass a transaction on the document being restored as `target`: the target must be a
//! separate [`Doc`] (yrs transactions on one doc exclude each other, so this would deadlock).

use std::collections::BTreeSet;

use serde::Serialize;
use thiserror::Error;

use crate::guard::MAX_WALK_DEPTH;
use yrs::types::{AsPrelim, ToJson};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, ClientID, Doc, GetString, In, Map, MapPrelim, MapRef,
    Number, OffsetKind, Options, Out, ReadTxn, Text, TextRef, Transact, TransactionMut, Update,
    WriteTxn,
};

use crate::names::roots;
use crate::read::js_cmp;
use crate::text::utf16_len;

/// What a restore wrote. Every count is of writes actually made; [`RestoreReport::is_noop`]
/// is true when nothing was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Objects created (ids only in the target).
    pub objects_created: usize,
    /// Objects removed (ids only in the current board).
    pub objects_removed: usize,
    /// Objects in both whose content was changed.
    pub objects_updated: usize,
    /// Values set or replaced inside existing objects and in `meta`, at any depth (a key of a
    /// nested map counts).
    pub fields_set: usize,
    /// Keys removed inside existing objects and in `meta`, at any depth.
    pub fields_removed: usize,
    /// `Y.Text` values edited in place (minimal delete + insert), at any depth.
    pub texts_edited: usize,
    /// `Y.Array` values edited in place (only the differing middle replaced), at any depth.
    pub arrays_edited: usize,
    /// `meta` keys that changed (set, removed or edited in place).
    pub meta_keys_changed: usize,
    /// Paths (`objects/<id>/<field>/...`, `meta/<key>`) left as they are because the target's
    /// value holds a sub-document, which cannot be copied. Not a write.
    pub skipped: Vec<String>,
}

impl RestoreReport {
    /// True when the restore wrote nothing (the board already matched the target, apart from
    /// anything listed in [`RestoreReport::skipped`]).
    pub fn is_noop(&self) -> bool {
        self.objects_created == 0
            && self.objects_removed == 0
            && self.objects_updated == 0
            && self.fields_set == 0
            && self.fields_removed == 0
            && self.texts_edited == 0
            && self.arrays_edited == 0
            && self.meta_keys_changed == 0
    }
}

/// Why [`restore_from_update_v1`] could not load the target version.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// The bytes are not a Yjs v1 update.
    #[error("the version is not a valid Yjs v1 update: {0}")]
    Decode(#[from] yrs::encoding::read::Error),
    /// The update could not be applied to an empty document.
    #[error("the version could not be applied: {0}")]
    Apply(#[from] yrs::error::UpdateError),
    /// The update is malformed or nests deeper than [`crate::guard::MAX_NESTING`].
    #[error("the version is refused: {0}")]
    Guard(#[from] crate::guard::GuardError),
    /// The update depends on changes it does not contain (an incremental update rather than a
    /// full state): restoring to it would delete everything it lacks.
    #[error("the version is incomplete: it depends on updates it does not contain")]
    Incomplete,
}

/// Turns the board in `txn` into the content of `target` (see the module docs for the rules),
/// writing ordinary forward operations in `txn`.
///
/// `target` must be a transaction on a different [`Doc`] than `txn`'s.
pub fn restore_to<T: ReadTxn>(txn: &mut TransactionMut, target: &T) -> RestoreReport {
    let mut w = Writer {
        txn,
        report: RestoreReport::default(),
    };
    restore_objects(&mut w, target);
    restore_meta(&mut w, target);
    w.report
}

/// Like [`restore_to`], with the target given as a full-state Yjs v1 update (for example an
/// upload, or `GET /boards/{id}/state`). The update is loaded into a private [`Doc`]; one that
/// depends on changes it does not contain is refused ([`RestoreError::Incomplete`]).
pub fn restore_from_update_v1(
    txn: &mut TransactionMut,
    update: &[u8],
) -> Result<RestoreReport, RestoreError> {
    restore_from(txn, update, false)
}

/// Like [`restore_from_update_v1`], for a state the board itself had (a saved version): parts of
/// it that were still waiting for missing dependencies when it was saved (a board keeps such
/// updates, and its state includes them) are left out instead of refusing the whole version.
pub fn restore_from_version_v1(
    txn: &mut TransactionMut,
    update: &[u8],
) -> Result<RestoreReport, RestoreError> {
    restore_from(txn, update, true)
}

fn restore_from(
    txn: &mut TransactionMut,
    update: &[u8],
    allow_waiting: bool,
) -> Result<RestoreReport, RestoreError> {
    crate::guard::check_update_v1(update)?;
    let update = Update::decode_v1(update)?;
    // Only read, never written: the client id is irrelevant (and fixed, so no randomness).
    let doc = Doc::with_options(Options::with_client_id(ClientID::new(1)));
    {
        let mut load = doc.transact_mut();
        load.apply_update(update)?;
    }
    let target = doc.transact();
    if target.has_missing_updates() && !allow_waiting {
        return Err(RestoreError::Incomplete);
    }
    Ok(restore_to(txn, &target))
}

/// The writing side: the caller's transaction and the tally of writes.
struct Writer<'a, 'doc> {
    txn: &'a mut TransactionMut<'doc>,
    report: RestoreReport,
}

/// Entries of a map, sorted by key as JS sorts strings.
fn sorted_keys<T: ReadTxn>(txn: &T, map: Option<&MapRef>, into: &mut BTreeSet<JsKey>) {
    if let Some(map) = map {
        into.extend(map.keys(txn).map(|k| JsKey(k.to_string())));
    }
}

/// A key ordered by UTF-16 code units (JS order).
#[derive(PartialEq, Eq)]
struct JsKey(String);

impl Ord for JsKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        js_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for JsKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

fn restore_objects<T: ReadTxn>(w: &mut Writer<'_, '_>, target: &T) {
    let current = w.txn.get_map(roots::OBJECTS);
    let wanted = target.get_map(roots::OBJECTS);
    let mut ids = BTreeSet::new();
    sorted_keys(&*w.txn, current.as_ref(), &mut ids);
    sorted_keys(target, wanted.as_ref(), &mut ids);
    if ids.is_empty() {
        return;
    }
    for JsKey(id) in ids {
        let path = format!("{}/{id}", roots::OBJECTS);
        let have = current.as_ref().and_then(|m| m.get(&*w.txn, &id));
        let want = wanted.as_ref().and_then(|m| m.get(target, &id));
        match (have, want) {
            (None, None) => {}
            (Some(_), None) => {
                if let Some(objects) = &current {
                    objects.remove(w.txn, &id);
                    w.report.objects_removed += 1;
                }
            }
            (None, Some(want)) => match copy(target, &want, 1) {
                Some(value) => {
                    let objects = w.txn.get_or_insert_map(roots::OBJECTS);
                    objects.insert(w.txn, id.as_str(), value);
                    w.report.objects_created += 1;
                }
                None => w.report.skipped.push(path),
            },
            (Some(_), Some(want)) => {
                if let Some(objects) = &current
                    && sync_key(w, objects, &id, Some(&want), target, &path, 1)
                {
                    w.report.objects_updated += 1;
                }
            }
        }
    }
}

fn restore_meta<T: ReadTxn>(w: &mut Writer<'_, '_>, target: &T) {
    let current = w.txn.get_map(roots::META);
    let wanted = target.get_map(roots::META);
    let mut keys = BTreeSet::new();
    sorted_keys(&*w.txn, current.as_ref(), &mut keys);
    sorted_keys(target, wanted.as_ref(), &mut keys);
    if keys.is_empty() {
        return;
    }
    let meta = match current {
        Some(meta) => meta,
        None => w.txn.get_or_insert_map(roots::META),
    };
    for JsKey(key) in keys {
        let want = wanted.as_ref().and_then(|m| m.get(target, &key));
        let path = format!("{}/{key}", roots::META);
        if sync_key(w, &meta, &key, want.as_ref(), target, &path, 1) {
            w.report.meta_keys_changed += 1;
        }
    }
}

/// Makes `map[key]` equal to `want` (`None`: absent). Returns whether anything was written.
fn sync_key<T: ReadTxn>(
    w: &mut Writer<'_, '_>,
    map: &MapRef,
    key: &str,
    want: Option<&Out>,
    target: &T,
    path: &str,
    depth: u16,
) -> bool {
    let have = map.get(&*w.txn, key);
    let Some(want) = want else {
        if have.is_some() {
            map.remove(w.txn, key);
            w.report.fields_removed += 1;
            return true;
        }
        return false;
    };
    if let Some(have) = &have {
        if deep_eq(&*w.txn, have, target, want, depth) {
            return false;
        }
        // Same shared type on both sides: edit in place (as deep as walks may go).
        let edited = match (have, want) {
            (Out::YText(have), Out::YText(want)) => edit_text(w, have, &want.get_string(target)),
            (Out::YMap(have), Out::YMap(want)) if depth < MAX_WALK_DEPTH => {
                return sync_map(w, have, want, target, path, depth + 1);
            }
            (Out::YArray(have), Out::YArray(want)) if depth < MAX_WALK_DEPTH => {
                return sync_array(w, have, want, target, path, depth + 1);
            }
            _ => false,
        };
        if edited {
            return true;
        }
    }
    match copy(target, want, depth) {
        Some(value) => {
            map.insert(w.txn, key, value);
            w.report.fields_set += 1;
            true
        }
        None => {
            w.report.skipped.push(path.to_string());
            false
        }
    }
}

/// Makes the nested map `have` equal to `want`, key by key. Returns whether anything was
/// written.
fn sync_map<T: ReadTxn>(
    w: &mut Writer<'_, '_>,
    have: &MapRef,
    want: &MapRef,
    target: &T,
    path: &str,
    depth: u16,
) -> bool {
    let mut keys = BTreeSet::new();
    sorted_keys(&*w.txn, Some(have), &mut keys);
    sorted_keys(target, Some(want), &mut keys);
    let mut wrote = false;
    for JsKey(key) in keys {
        let value = want.get(target, &key);
        let path = format!("{path}/{key}");
        wrote |= sync_key(w, have, &key, value.as_ref(), target, &path, depth);
    }
    wrote
}

/// Makes the nested array `have` equal to `want`: keeps the common leading and trailing
/// elements, replaces the ones in between. Returns whether anything was written.
fn sync_array<T: ReadTxn>(
    w: &mut Writer<'_, '_>,
    have: &ArrayRef,
    want: &ArrayRef,
    target: &T,
    path: &str,
    depth: u16,
) -> bool {
    let current: Vec<Out> = have.iter(&*w.txn).collect();
    let wanted: Vec<Out> = want.iter(target).collect();
    let same = |a: &Out, b: &Out| deep_eq(&*w.txn, a, target, b, depth);
    let prefix = current
        .iter()
        .zip(&wanted)
        .take_while(|(a, b)| same(a, b))
        .count();
    let room = current.len().min(wanted.len()) - prefix;
    let suffix = current[prefix..]
        .iter()
        .rev()
        .zip(wanted[prefix..].iter().rev())
        .take(room)
        .take_while(|(a, b)| same(a, b))
        .count();
    let remove = current.len() - prefix - suffix;
    let insert = &wanted[prefix..wanted.len() - suffix];
    let Ok(mut index) = u32::try_from(prefix) else {
        return false;
    };
    let Ok(remove) = u32::try_from(remove) else {
        return false;
    };
    let mut wrote = false;
    if remove > 0 {
        have.remove_range(w.txn, index, remove);
        wrote = true;
    }
    for (offset, value) in insert.iter().enumerate() {
        match copy(target, value, depth) {
            Some(value) => {
                have.insert(w.txn, index, value);
                index += 1;
                wrote = true;
            }
            None => w.report.skipped.push(format!("{path}/{}", prefix + offset)),
        }
    }
    if wrote {
        w.report.arrays_edited += 1;
    }
    wrote
}

/// Edits `text` in place into `want`, deleting and inserting only the middle that differs.
/// Returns `false` (nothing written) when the text cannot be edited by its string's offsets
/// (it holds embeds), so the caller replaces it.
fn edit_text(w: &mut Writer<'_, '_>, text: &TextRef, want: &str) -> bool {
    let have = text.get_string(&*w.txn);
    let utf16 = matches!(w.txn.doc().offset_kind(), OffsetKind::Utf16);
    // Units the doc counts in; embeds count 1 each but are absent from the string.
    let units = |s: &str| if utf16 { utf16_len(s) } else { s.len() };
    if usize::try_from(text.len(&*w.txn)).ok() != Some(units(&have)) {
        return false;
    }
    let (start, have_end, want_end) = middle(&have, want);
    let Ok(index) = u32::try_from(units(&have[..start])) else {
        return false;
    };
    let Ok(delete) = u32::try_from(units(&have[start..have_end])) else {
        return false;
    };
    if delete > 0 {
        text.remove_range(w.txn, index, delete);
    }
    let insert = &want[start..want_end];
    if !insert.is_empty() {
        text.insert(w.txn, index, insert);
    }
    w.report.texts_edited += 1;
    true
}

/// The differing middle of two strings, by whole characters: `(start, a_end, b_end)` byte
/// offsets such that `a[..start] == b[..start]`, `a[a_end..] == b[b_end..]`, and the middles
/// `a[start..a_end]`, `b[start..b_end]` are as short as a common prefix and suffix allow.
fn middle(a: &str, b: &str) -> (usize, usize, usize) {
    let start = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    let (a_rest, b_rest) = (&a[start..], &b[start..]);
    let suffix: usize = a_rest
        .chars()
        .rev()
        .zip(b_rest.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum();
    (start, a.len() - suffix, b.len() - suffix)
}

/// A copy of a target value, ready to insert into the current document; `None` if it is or
/// contains a sub-document, or nests past [`MAX_WALK_DEPTH`] (below `depth` levels already).
fn copy<T: ReadTxn>(txn: &T, value: &Out, depth: u16) -> Option<In> {
    if depth > MAX_WALK_DEPTH {
        return None;
    }
    Some(match value {
        Out::Any(any) => In::Any(any.clone()),
        Out::YMap(map) => {
            let mut prelim = MapPrelim::default();
            for (key, value) in map.iter(txn) {
                prelim.insert(key.into(), copy(txn, &value, depth + 1)?);
            }
            In::Map(prelim)
        }
        Out::YArray(array) => {
            let mut prelim = ArrayPrelim::default();
            for value in array.iter(txn) {
                prelim.push(copy(txn, &value, depth + 1)?);
            }
            In::Array(prelim)
        }
        Out::YDoc(_) => return None,
        // Texts (with formatting and embeds), XML types and untyped refs: yrs's own deep copy.
        other => other.as_prelim(txn),
    })
}

/// Deep equality of a value in the current document and one in the target (module docs).
/// Values nested past [`MAX_WALK_DEPTH`] (below `depth` levels already) count as different.
fn deep_eq<A: ReadTxn, B: ReadTxn>(a_txn: &A, a: &Out, b_txn: &B, b: &Out, depth: u16) -> bool {
    if depth > MAX_WALK_DEPTH {
        return false;
    }
    let depth = depth + 1;
    match (a, b) {
        (Out::Any(x), Out::Any(y)) => any_eq(x, y, depth),
        (Out::YText(x), Out::YText(y)) => x.get_string(a_txn) == y.get_string(b_txn),
        (Out::YMap(x), Out::YMap(y)) => {
            x.len(a_txn) == y.len(b_txn)
                && x.iter(a_txn).all(|(key, xv)| {
                    y.get(b_txn, key)
                        .is_some_and(|yv| deep_eq(a_txn, &xv, b_txn, &yv, depth))
                })
        }
        (Out::YArray(x), Out::YArray(y)) => {
            x.len(a_txn) == y.len(b_txn)
                && x.iter(a_txn)
                    .zip(y.iter(b_txn))
                    .all(|(xv, yv)| deep_eq(a_txn, &xv, b_txn, &yv, depth))
        }
        (Out::YXmlElement(x), Out::YXmlElement(y)) => x.get_string(a_txn) == y.get_string(b_txn),
        (Out::YXmlFragment(x), Out::YXmlFragment(y)) => x.get_string(a_txn) == y.get_string(b_txn),
        (Out::YXmlText(x), Out::YXmlText(y)) => x.get_string(a_txn) == y.get_string(b_txn),
        (Out::YDoc(x), Out::YDoc(y)) => x.guid() == y.guid(),
        (Out::UndefinedRef(_), Out::UndefinedRef(_)) => {
            any_eq(&a.to_json(a_txn), &b.to_json(b_txn), depth)
        }
        _ => false,
    }
}

/// Structural equality of plain values; numbers by exact value (module docs). Values nested
/// past [`MAX_WALK_DEPTH`] (below `depth` levels already) count as different.
fn any_eq(a: &Any, b: &Any, depth: u16) -> bool {
    if depth > MAX_WALK_DEPTH {
        return false;
    }
    let depth = depth + 1;
    match (a, b) {
        (Any::Null, Any::Null) | (Any::Undefined, Any::Undefined) => true,
        (Any::Bool(x), Any::Bool(y)) => x == y,
        (Any::Number(x), Any::Number(y)) => number_eq(x, y),
        (Any::String(x), Any::String(y)) => x == y,
        (Any::Buffer(x), Any::Buffer(y)) => x == y,
        (Any::Array(x), Any::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(x, y)| any_eq(x, y, depth))
        }
        (Any::Map(x), Any::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, xv)| y.get(key).is_some_and(|yv| any_eq(xv, yv, depth)))
        }
        _ => false,
    }
}

fn number_eq(a: &Number, b: &Number) -> bool {
    match (*a, *b) {
        (Number::Int(x), Number::Int(y)) => x == y,
        (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
            // Integers are never -0 or NaN; `i as f64 == f` alone would equal 0 and -0.
            f.to_bits() == (i as f64).to_bits() && (i as f64) as i64 == i
        }
        (Number::Float(x), Number::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
