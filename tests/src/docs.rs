//! Documents as the tests build and read them: notes, whole states, realistic edit streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, GetString, Map, Out, ReadTxn, StateVector, Text, Transact, Update};

/// A doc as a client would make it: text offsets as Yjs counts them.
pub fn new_doc() -> Doc {
    Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    })
}

/// Adds a sticky note `{kind: "sticky", text: Y.Text(text)}` under `id` in `objects`; returns
/// the transaction's update.
pub fn put_note(doc: &Doc, id: &str, text: &str) -> Vec<u8> {
    let objects = doc.get_or_insert_map("objects");
    let mut txn = doc.transact_mut();
    let note = objects.insert(&mut txn, id, yrs::MapPrelim::default());
    note.insert(&mut txn, "kind", "sticky");
    note.insert(&mut txn, "text", yrs::TextPrelim::new(text));
    txn.encode_update_v1()
}

/// Every note in `objects`: id -> text (`""` for a value without text).
pub fn notes(doc: &Doc) -> BTreeMap<String, String> {
    let objects = doc.get_or_insert_map("objects");
    let txn = doc.transact();
    objects
        .iter(&txn)
        .map(|(k, v)| {
            let text = match v {
                Out::YMap(m) => match m.get(&txn, "text") {
                    Some(Out::YText(t)) => t.get_string(&txn),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            (k.to_string(), text)
        })
        .collect()
}

/// The doc's whole state, Yjs update v1.
pub fn doc_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A fresh doc holding `update` (Yjs v1).
pub fn doc_from(update: &[u8]) -> Doc {
    let doc = new_doc();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    doc
}

/// Edits a board through yrs and records each transaction's update, as a client would send
/// them: notes created, moved, retitled, text typed and deleted, chat posted.
pub fn board_updates(edits: usize) -> (Doc, Vec<Vec<u8>>) {
    // Text offsets as Yjs counts them (UTF-16); byte offsets may split a character.
    let doc = Doc::with_options(yrs::Options {
        offset_kind: yrs::OffsetKind::Utf16,
        ..yrs::Options::default()
    });
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    doc.observe_update_v1("record", move |_, e| {
        sink.lock().unwrap().push(e.update.clone())
    })
    .unwrap();
    let objects = doc.get_or_insert_map("objects");
    let meta = doc.get_or_insert_map("meta");
    let chat = doc.get_or_insert_array("chat");
    for i in 0..edits {
        let mut txn = doc.transact_mut();
        let id = format!("note-{}", i % 37);
        let edited = match i % 5 {
            0 => {
                let note = objects.insert(&mut txn, id, yrs::MapPrelim::default());
                note.insert(&mut txn, "kind", "sticky");
                note.insert(&mut txn, "pos", vec![i as f64, 2.0 * i as f64]);
                note.insert(
                    &mut txn,
                    "text",
                    yrs::TextPrelim::new(format!("hello {i} 👋")),
                );
                true
            }
            1 => {
                meta.insert(&mut txn, "title", format!("Retro #{i}"));
                true
            }
            2 => {
                chat.push_back(&mut txn, format!("message {i}"));
                true
            }
            3 => match objects.get(&txn, &id) {
                Some(yrs::Out::YMap(note)) => {
                    note.insert(&mut txn, "pos", vec![-(i as f64), 0.5]);
                    if let Some(yrs::Out::YText(text)) = note.get(&txn, "text") {
                        text.insert(&mut txn, 0, "é");
                    }
                    true
                }
                _ => false,
            },
            _ => match objects.get(&txn, &format!("note-{}", (i / 2) % 37)) {
                Some(yrs::Out::YMap(note)) => match note.get(&txn, "text") {
                    Some(yrs::Out::YText(text)) if !text.get_string(&txn).is_empty() => {
                        text.remove_range(&mut txn, 0, 1);
                        true
                    }
                    _ => false,
                },
                _ => false,
            },
        };
        if !edited {
            // Every transaction changes something, so `edits` updates come out.
            meta.insert(&mut txn, "tick", i as f64);
        }
    }
    doc.unobserve_update_v1("record").unwrap();
    let updates = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(updates.len(), edits);
    (doc, updates)
}

/// The document as canonical JSON (sorted keys), with its roots declared so they read as values, not `null`.
pub fn doc_json(doc: &Doc) -> String {
    doc.get_or_insert_map("objects");
    doc.get_or_insert_map("meta");
    doc.get_or_insert_array("chat");
    let txn = doc.transact();
    let mut out = String::new();
    yrs::types::ToJson::to_json(doc, &txn).to_json(&mut out);
    // Canonical form: yrs maps iterate in hash order, serde_json sorts keys.
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .to_string()
}

/// The document's state vector, encoded.
pub fn doc_state_vector(doc: &Doc) -> Vec<u8> {
    doc.transact().state_vector().encode_v1()
}
