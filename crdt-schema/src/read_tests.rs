#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use yrs::{Any, Array, ArrayPrelim, Doc, Map, MapPrelim, Text, TextPrelim, Transact, WriteTxn};

use super::*;
use crate::declare_roots;

fn problem(board: &Board, key: &str, field: Option<&str>) -> ReadProblem {
    board
        .issues
        .iter()
        .find(|i| i.key == key && i.field.as_deref() == field)
        .map(|i| i.problem.clone())
        .unwrap_or_else(|| panic!("no issue for {key}.{field:?} in {:#?}", board.issues))
}

fn wrong_type(expected: &'static str, found: &str) -> ReadProblem {
    ReadProblem::WrongType {
        expected,
        found: found.to_string(),
    }
}

#[test]
fn wrong_types_everywhere_are_reported_and_skipped() {
    let doc = Doc::with_client_id(1);
    let roots = declare_roots(&doc);
    let mut txn = doc.transact_mut();
    let objects = &roots.objects;
    objects.insert(&mut txn, "not-a-map", 42);
    let a = objects.insert(&mut txn, "a", MapPrelim::default());
    a.insert(&mut txn, "kind", 5);
    a.insert(&mut txn, "pos", "12,34");
    a.insert(&mut txn, "size", Any::from(vec![1.0, 2.0, 3.0]));
    a.insert(&mut txn, "rotation", f64::NAN);
    a.insert(&mut txn, "z", 7);
    a.insert(&mut txn, "text", "plain");
    a.insert(&mut txn, "color", Any::Null);
    a.insert(&mut txn, "frame", "nowhere");
    a.insert(&mut txn, "created_at", "yesterday");
    a.insert(&mut txn, "created_by", Any::from(vec![1.0]));
    a.insert(
        &mut txn,
        "custom",
        Any::from(HashMap::from([("k".to_string(), Any::from(f64::NAN))])),
    );
    let b = objects.insert(&mut txn, "b", MapPrelim::default());
    b.insert(&mut txn, "pos", Any::from(vec![f64::NAN, 1.0]));
    b.insert(&mut txn, "size", ArrayPrelim::from([1.0, 2.0]));
    b.insert(&mut txn, "text", MapPrelim::default());
    b.insert(&mut txn, "label", TextPrelim::new("a label"));
    b.insert(&mut txn, "frame", "a");
    let c = objects.insert(&mut txn, "c", MapPrelim::default());
    c.insert(&mut txn, "kind", "connector");
    c.insert(&mut txn, "to", 3);
    c.insert(
        &mut txn,
        "pos",
        Any::from(vec![Any::from("1"), Any::from(2)]),
    );
    roots.meta.insert(&mut txn, "title", 5);
    roots.meta.insert(&mut txn, "theme", "dark");
    roots.chat.push_back(&mut txn, 42);
    roots.chat.push_back(
        &mut txn,
        Any::from(HashMap::from([("id".to_string(), Any::from("m"))])),
    );
    roots
        .chat
        .push_back(&mut txn, TextPrelim::new("chat as text"));
    roots.chat.push_back(
        &mut txn,
        MapPrelim::from([
            ("id", Any::from("ok")),
            ("author", Any::from("ann")),
            ("text", Any::from("hi")),
            ("at", Any::from(5)),
        ]),
    );

    let board = read_board(&txn);
    // Serializes even with NaN kept in an extra.
    let json = serde_json::to_value(&board).unwrap();
    assert_eq!(
        json["objects"][0]["extra"]["custom"]["k"],
        serde_json::Value::Null
    );

    assert_eq!(
        problem(&board, "not-a-map", None),
        wrong_type("Y.Map", "number")
    );
    let oa = board.object("a").unwrap();
    assert_eq!(oa.kind, Kind::Other(String::new()));
    assert_eq!(
        problem(&board, "a", Some("kind")),
        wrong_type("string", "number")
    );
    assert_eq!(
        problem(&board, "a", Some("pos")),
        wrong_type("array of 2 numbers", "string")
    );
    assert_eq!(
        problem(&board, "a", Some("size")),
        wrong_type("array of 2 numbers", "array of 3")
    );
    assert_eq!(
        problem(&board, "a", Some("rotation")),
        ReadProblem::NotFinite
    );
    assert_eq!(
        problem(&board, "a", Some("z")),
        wrong_type("string", "number")
    );
    assert_eq!(problem(&board, "a", Some("text")), ReadProblem::PlainText);
    assert_eq!(
        oa.text.as_deref(),
        Some("plain"),
        "plain string text is used"
    );
    assert_eq!(
        problem(&board, "a", Some("color")),
        wrong_type("string", "null")
    );
    assert_eq!(
        problem(&board, "a", Some("frame")),
        ReadProblem::BadReference {
            target: "nowhere".into(),
            reason: "no such object"
        }
    );
    assert_eq!(
        problem(&board, "a", Some("created_at")),
        wrong_type("number", "string")
    );
    assert_eq!(
        problem(&board, "a", Some("created_by")),
        wrong_type("string", "array of 1")
    );
    assert_eq!(
        (oa.pos, oa.size, oa.rotation, oa.z.as_ref()),
        (None, None, None, None)
    );
    assert!(oa.extra.contains_key("custom"));
    assert_eq!(
        oa.frame.as_deref(),
        Some("nowhere"),
        "dangling references are kept"
    );

    let ob = board.object("b").unwrap();
    assert_eq!(problem(&board, "b", Some("kind")), ReadProblem::Missing);
    assert_eq!(problem(&board, "b", Some("pos")), ReadProblem::NotFinite);
    assert_eq!(
        problem(&board, "b", Some("size")),
        wrong_type("array of 2 numbers", "Y.Array")
    );
    assert_eq!(
        problem(&board, "b", Some("text")),
        wrong_type("Y.Text", "Y.Map")
    );
    assert_eq!(ob.label.as_deref(), Some("a label"));
    assert_eq!(
        problem(&board, "b", Some("frame")),
        ReadProblem::BadReference {
            target: "a".into(),
            reason: "not a frame"
        }
    );

    assert_eq!(problem(&board, "c", Some("from")), ReadProblem::Missing);
    assert_eq!(
        problem(&board, "c", Some("to")),
        wrong_type("string", "number")
    );
    assert_eq!(
        problem(&board, "c", Some("pos")),
        wrong_type("array of 2 numbers", "array of 2")
    );

    assert_eq!(board.meta.title, None);
    assert_eq!(
        problem(&board, "title", None),
        wrong_type("string", "number")
    );
    assert_eq!(board.meta.extra["theme"], Value::String("dark".into()));

    assert_eq!(problem(&board, "0", None), wrong_type("map", "number"));
    assert_eq!(problem(&board, "1", Some("author")), ReadProblem::Missing);
    assert_eq!(problem(&board, "1", Some("at")), ReadProblem::Missing);
    assert_eq!(problem(&board, "2", None), wrong_type("map", "Y.Text"));
    assert_eq!(
        board.chat,
        [ChatMessage {
            id: "ok".into(),
            author: "ann".into(),
            text: "hi".into(),
            at: 5.0
        }]
    );
    // Deterministic: the same document reads the same twice (compared as JSON: NaN != NaN).
    assert_eq!(serde_json::to_value(read_board(&txn)).unwrap(), json);
}

#[test]
fn empty_and_odd_documents_read_without_panicking() {
    let doc = Doc::with_client_id(1);
    assert_eq!(read_board(&doc.transact()), Board::default());
    // Roots of the wrong shared type.
    let doc = Doc::with_client_id(2);
    let objects = doc.get_or_insert_array("objects");
    let meta = doc.get_or_insert_text("meta");
    let chat = doc.get_or_insert_map("chat");
    let mut txn = doc.transact_mut();
    objects.push_back(&mut txn, 1);
    meta.insert(&mut txn, 0, "hello");
    chat.insert(&mut txn, "x", 1);
    let board = read_board(&txn);
    assert!(board.objects.is_empty());
    assert!(board.chat.is_empty());
    assert_eq!(read_object(&txn, "anything"), None);
}

#[test]
fn objects_sort_by_z_then_id_in_js_order() {
    let doc = Doc::with_client_id(1);
    let mut txn = doc.transact_mut();
    let objects = txn.get_or_insert_map("objects");
    for (id, z) in [
        ("b", Some("V")),
        ("a", Some("V")),
        ("c", None),
        ("d", Some("U")),
        ("e", Some("a")),
    ] {
        let m = objects.insert(&mut txn, id, MapPrelim::default());
        m.insert(&mut txn, "kind", "rect");
        if let Some(z) = z {
            m.insert(&mut txn, "z", z);
        }
    }
    let order: Vec<_> = read_board(&txn).objects.into_iter().map(|o| o.id).collect();
    assert_eq!(order, ["c", "d", "a", "b", "e"]);
    // JS compares UTF-16 code units: U+FF5E sorts *after* U+1F600 in UTF-8 but before it in JS.
    assert_eq!(js_cmp("\u{FF5E}", "\u{1F600}"), Ordering::Greater);
    assert!("\u{FF5E}" < "\u{1F600}");
}

#[test]
fn read_object_reads_one() {
    let doc = Doc::with_client_id(1);
    let mut txn = doc.transact_mut();
    let objects = txn.get_or_insert_map("objects");
    let m = objects.insert(&mut txn, "x", MapPrelim::default());
    m.insert(&mut txn, "kind", "ellipse");
    let t = m.insert(&mut txn, "text", TextPrelim::new(""));
    t.push(&mut txn, "👋🏽");
    let (o, issues) = read_object(&txn, "x").unwrap();
    assert_eq!(o.kind, Kind::Ellipse);
    assert_eq!(o.text.as_deref(), Some("👋🏽"));
    assert!(issues.is_empty());
}
