#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use yrs::types::Delta;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, ClientID, Doc, Map, MapPrelim, MapRef, Observable,
    OffsetKind, Options, Out, StateVector, TextPrelim, TextRef, Transact, Update, WriteTxn,
};

use super::*;
use crate::model::{Board, ChatMessage, Kind};
use crate::ops::{self, NewObject, Op};
use crate::value::Value;
use crate::{declare_roots, read_board};

const T: f64 = 1_700_000_000_000.0;

fn doc(client: u64, kind: OffsetKind) -> Doc {
    let mut options = Options::with_client_id(ClientID::new(client));
    options.offset_kind = kind;
    let doc = Doc::with_options(options);
    declare_roots(&doc);
    doc
}

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn apply_update(doc: &Doc, update: &[u8]) {
    let mut txn = doc.transact_mut();
    txn.apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
}

/// A separate doc holding a version, as the server loads one from its bytes.
fn load(bytes: &[u8]) -> Doc {
    let doc = doc(999, OffsetKind::Bytes);
    apply_update(&doc, bytes);
    doc
}

/// Brings `a` and `b` up to date with each other.
fn exchange(a: &Doc, b: &Doc) {
    let for_b = {
        let sv = b.transact().state_vector();
        a.transact().encode_state_as_update_v1(&sv)
    };
    let for_a = {
        let sv = a.transact().state_vector();
        b.transact().encode_state_as_update_v1(&sv)
    };
    apply_update(b, &for_b);
    apply_update(a, &for_a);
}

fn board(doc: &Doc) -> Board {
    read_board(&doc.transact())
}

fn run(doc: &Doc, ops: Vec<Op>) {
    let mut txn = doc.transact_mut_with("user");
    for op in ops {
        ops::apply(&mut txn, &op).unwrap();
    }
}

/// Restores `doc` to `target`, returning the report and the restore transaction's update.
fn restore(doc: &Doc, target: &Doc) -> (RestoreReport, Vec<u8>) {
    let version = target.transact();
    let mut txn = doc.transact_mut_with("restore:v1");
    let report = restore_to(&mut txn, &version);
    let update = txn.encode_update_v1();
    (report, update)
}

fn json(doc: &Doc) -> Value {
    Value::from_any(&doc.to_json(&doc.transact()))
}

fn object_map(txn: &impl ReadTxn, id: &str) -> MapRef {
    match txn.get_map(roots::OBJECTS).unwrap().get(txn, id) {
        Some(Out::YMap(m)) => m,
        other => panic!("{id} is not a Y.Map: {other:?}"),
    }
}

fn text_ref(doc: &Doc, id: &str) -> TextRef {
    let txn = doc.transact();
    match object_map(&txn, id).get(&txn, "text") {
        Some(Out::YText(t)) => t,
        other => panic!("{id}.text is not a Y.Text: {other:?}"),
    }
}

fn chat(id: &str, text: &str) -> Op {
    Op::PostChat(ChatMessage {
        id: id.into(),
        author: "ann".into(),
        text: text.into(),
        at: T,
    })
}

/// Board `a` with a few objects; returns the version's bytes taken after setup, then edits `a`
/// in every way a restore must undo.
fn edited_board(a: &Doc) -> Vec<u8> {
    run(
        a,
        vec![
            Op::Create(NewObject::new("f1", Kind::Frame, "ann", T).at([0.0, 0.0], [900.0, 600.0])),
            Op::Create(
                NewObject::new("s1", Kind::Sticky, "ann", T)
                    .at([10.0, 20.0], [200.0, 200.0])
                    .with_text("Hello world")
                    .with_color("#ffeb3b")
                    .in_frame("f1"),
            ),
            Op::Create(
                NewObject::new("s2", Kind::Rect, "ann", T)
                    .at([300.0, 20.0], [100.0, 50.5])
                    .with_color("red"),
            ),
            Op::Create(
                NewObject::new("c1", Kind::Connector, "ann", T)
                    .connecting("s1", "s2")
                    .with_label("next"),
            ),
            Op::SetTitle {
                title: "Plan".into(),
            },
            chat("m1", "first"),
        ],
    );
    let version = state(a);
    run(
        a,
        vec![
            Op::Move {
                id: "s1".into(),
                pos: [15.5, 25.0],
            },
            Op::SetColor {
                id: "s2".into(),
                color: "blue".into(),
            },
            Op::Delete { id: "c1".into() },
            Op::Create(
                NewObject::new("s3", Kind::Ellipse, "bob", T + 1.0).at([1.0, 1.0], [5.0, 5.0]),
            ),
            Op::InsertText {
                id: "s1".into(),
                index: 11,
                text: " again".into(),
            },
            Op::DeleteText {
                id: "s1".into(),
                index: 0,
                len: 6,
            },
            Op::SetFrame {
                id: "s1".into(),
                frame: None,
            },
            Op::SetTitle {
                title: "Plan v2".into(),
            },
            chat("m2", "second"),
        ],
    );
    version
}

#[test]
fn restores_an_earlier_version() {
    let a = doc(1, OffsetKind::Bytes);
    let version = load(&edited_board(&a));
    assert_eq!(
        board(&a).object("s1").unwrap().text.as_deref(),
        Some("world again")
    );

    let (report, _) = restore(&a, &version);

    let (now, then) = (board(&a), board(&version));
    assert_eq!(now.objects, then.objects);
    assert_eq!(now.meta, then.meta);
    assert_eq!(now.issues, then.issues);
    assert_eq!(
        now.object("s1").unwrap().text.as_deref(),
        Some("Hello world")
    );
    let chat_ids: Vec<_> = now.chat.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(chat_ids, ["m1", "m2"], "chat keeps every message");
    assert_eq!(
        report,
        RestoreReport {
            objects_created: 1, // c1
            objects_removed: 1, // s3
            objects_updated: 2, // s1 (pos, text, frame), s2 (color)
            fields_set: 4,      // s1.pos, s1.frame, s2.color, meta.title
            fields_removed: 0,
            texts_edited: 1,
            arrays_edited: 0,
            meta_keys_changed: 1,
            skipped: vec![],
        }
    );
    assert!(!report.is_noop());

    // Restoring again changes nothing.
    let (again, update) = restore(&a, &version);
    assert!(again.is_noop(), "{again:?}");
    assert_eq!(update, Update::EMPTY_V1);
}

#[test]
fn restore_is_a_forward_change_that_replicas_converge_on() {
    let a = doc(1, OffsetKind::Bytes);
    let b = doc(2, OffsetKind::Utf16);
    let version = load(&edited_board(&a));
    exchange(&a, &b);
    assert_eq!(json(&a), json(&b));

    let (_, update) = restore(&a, &version);
    apply_update(&b, &update);

    assert_eq!(a.transact().state_vector(), b.transact().state_vector());
    assert_eq!(json(&a), json(&b));
    assert_eq!(
        serde_json::to_value(board(&a)).unwrap(),
        serde_json::to_value(board(&b)).unwrap()
    );
    assert_eq!(board(&b).objects, board(&version).objects);
    // History kept: the restore is a new change by A after everything B had seen.
    let sv = b.transact().state_vector();
    assert!(sv.get(&ClientID::new(1)) > 0);
    assert_eq!(
        sv.get(&ClientID::new(999)),
        0,
        "nothing from the version doc"
    );
}

#[test]
fn restoring_the_current_state_writes_nothing() {
    let a = doc(1, OffsetKind::Utf16);
    edited_board(&a);
    {
        // Values of every sort, including the number edge cases equality must get right.
        let mut txn = a.transact_mut();
        let p = object_map(&txn, "s2");
        p.insert(&mut txn, "nan", f64::NAN);
        p.insert(&mut txn, "neg_zero", -0.0);
        p.insert(&mut txn, "big", Any::from(1_i64 << 40));
        p.insert(&mut txn, "blob", Any::Buffer(vec![1u8, 2].into()));
        p.insert(&mut txn, "nothing", Any::Undefined);
        p.insert(
            &mut txn,
            "nested",
            MapPrelim::from([
                ("list", In::from(ArrayPrelim::from([1, 2, 3]))),
                ("label", In::from(TextPrelim::new("é🚀"))),
            ]),
        );
        let meta = txn.get_or_insert_map(roots::META);
        meta.insert(&mut txn, "grid", Any::from(vec![Any::from(8), Any::Null]));
    }
    let version = load(&state(&a));
    let (report, update) = restore(&a, &version);
    assert!(report.is_noop(), "{report:?}");
    assert_eq!(report, RestoreReport::default());
    assert_eq!(update, Update::EMPTY_V1);
    assert_eq!(update, [0, 0]);
}

#[test]
fn concurrent_typing_in_the_same_text_survives() {
    let a = doc(1, OffsetKind::Bytes);
    let b = doc(2, OffsetKind::Utf16);
    run(
        &a,
        vec![Op::Create(
            NewObject::new("s1", Kind::Sticky, "ann", T)
                .at([0.0, 0.0], [1.0, 1.0])
                .with_text("A quick brown fox"),
        )],
    );
    let version = load(&state(&a));
    run(
        &a,
        vec![Op::SetText {
            id: "s1".into(),
            text: "The quick brown fox".into(),
        }],
    );
    exchange(&a, &b);
    // B types in the middle (not yet synced) while A restores the version.
    run(
        &b,
        vec![Op::InsertText {
            id: "s1".into(),
            index: 10,
            text: "very ".into(),
        }],
    );
    assert_eq!(
        board(&b).object("s1").unwrap().text.as_deref(),
        Some("The quick very brown fox")
    );
    let (report, _) = restore(&a, &version);
    assert_eq!(report.texts_edited, 1);
    assert_eq!(report.fields_set, 0, "the text is edited, not replaced");
    exchange(&a, &b);

    let expected = Some("A quick very brown fox");
    assert_eq!(board(&a).object("s1").unwrap().text.as_deref(), expected);
    assert_eq!(board(&b).object("s1").unwrap().text.as_deref(), expected);
    assert_eq!(json(&a), json(&b));
}

/// The text deltas each committed transaction produced on `text`.
fn record(text: &TextRef) -> Arc<Mutex<Vec<Vec<String>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    text.observe("test", move |txn, event| {
        let delta = event
            .delta(txn)
            .iter()
            .map(|d| match d {
                Delta::Inserted(Out::Any(Any::String(s)), _) => format!("insert {s}"),
                Delta::Inserted(other, _) => format!("insert {other:?}"),
                Delta::Deleted(n) => format!("delete {n}"),
                Delta::Retain(n, _) => format!("retain {n}"),
            })
            .collect();
        sink.lock().unwrap().push(delta);
    });
    seen
}

#[test]
fn emoji_texts_are_edited_minimally_in_either_offset_kind() {
    for (kind, retain) in [(OffsetKind::Utf16, 9), (OffsetKind::Bytes, 11)] {
        let a = doc(1, kind);
        run(
            &a,
            vec![Op::Create(
                NewObject::new("s1", Kind::Sticky, "ann", T)
                    .at([0.0, 0.0], [1.0, 1.0])
                    .with_text("Rocket 🚀b!"),
            )],
        );
        let version = load(&state(&a));
        run(
            &a,
            vec![Op::SetText {
                id: "s1".into(),
                text: "Rocket 🚀a!".into(),
            }],
        );
        let seen = record(&text_ref(&a, "s1"));
        let (report, update) = restore(&a, &version);
        assert_eq!(report.texts_edited, 1);
        assert_eq!(
            board(&a).object("s1").unwrap().text.as_deref(),
            Some("Rocket 🚀b!")
        );
        let mut delta = seen.lock().unwrap().concat();
        delta.sort();
        assert_eq!(
            delta,
            ["delete 1", "insert b", &format!("retain {retain}")],
            "{kind:?}"
        );
        assert!(update.len() < 40, "{} bytes", update.len());
    }
}

#[test]
fn an_emoji_swapped_for_one_sharing_its_high_surrogate_is_replaced_whole() {
    // U+1F600 and U+1F601 are D83D DE00 and D83D DE01: a unit-level diff would split them.
    for kind in [OffsetKind::Utf16, OffsetKind::Bytes] {
        let a = doc(1, kind);
        run(
            &a,
            vec![Op::Create(
                NewObject::new("s1", Kind::Sticky, "ann", T)
                    .at([0.0, 0.0], [1.0, 1.0])
                    .with_text("x😀y"),
            )],
        );
        let version = load(&state(&a));
        run(
            &a,
            vec![Op::SetText {
                id: "s1".into(),
                text: "x😁y".into(),
            }],
        );
        let seen = record(&text_ref(&a, "s1"));
        restore(&a, &version);
        assert_eq!(
            board(&a).object("s1").unwrap().text.as_deref(),
            Some("x😀y")
        );
        let mut delta = seen.lock().unwrap().concat();
        delta.sort();
        let width = if matches!(kind, OffsetKind::Utf16) {
            2
        } else {
            4
        };
        assert_eq!(
            delta,
            [&format!("delete {width}"), "insert 😀", "retain 1"],
            "{kind:?}"
        );
    }
}

#[test]
fn middle_keeps_whole_characters() {
    assert_eq!(middle("abc", "abc"), (3, 3, 3));
    assert_eq!(middle("", "ab"), (0, 0, 2));
    assert_eq!(middle("ab", ""), (0, 2, 0));
    assert_eq!(middle("aa", "aaa"), (2, 2, 3));
    assert_eq!(middle("x😀y", "x😁y"), (1, 5, 5));
    assert_eq!(middle("🚀a", "🚀b"), (4, 5, 5));
    assert_eq!(middle("The fox", "A fox"), (0, 3, 1));
}

fn poll(txn: &mut yrs::TransactionMut, objects: &MapRef, id: &str, votes: i64, label: &str) {
    // options[0] and options[2] never differ; options[1] carries `label`.
    let options = ArrayPrelim::from([
        In::from(MapPrelim::from([
            ("label", In::from(TextPrelim::new("yes"))),
            ("votes", In::from(Any::from(0))),
        ])),
        In::from(MapPrelim::from([(
            "label",
            In::from(TextPrelim::new(label)),
        )])),
        In::from(Any::from("tail")),
    ]);
    objects.insert(
        txn,
        id,
        MapPrelim::from([
            ("kind", In::from("poll")),
            ("z", In::from("a0")),
            ("options", In::from(options)),
            (
                "settings",
                In::from(Any::from(std::collections::HashMap::from([(
                    "multi".to_string(),
                    Any::from(votes > 1),
                )]))),
            ),
            (
                "flags",
                In::from(MapPrelim::from([
                    ("pinned", In::from(votes > 1)),
                    ("by", In::from("ann")),
                ])),
            ),
        ]),
    );
}

#[test]
fn unknown_kinds_and_fields_are_restored() {
    let version = doc(5, OffsetKind::Bytes);
    {
        let mut txn = version.transact_mut();
        let objects = txn.get_or_insert_map(roots::OBJECTS);
        poll(&mut txn, &objects, "p1", 3, "no");
        poll(&mut txn, &objects, "p2", 2, "maybe");
        let p2 = object_map(&txn, "p2");
        p2.insert(&mut txn, "text", TextPrelim::new("real text"));
        p2.insert(&mut txn, "note", TextPrelim::new("kept"));
    }
    let a = doc(1, OffsetKind::Utf16);
    {
        let mut txn = a.transact_mut();
        let objects = txn.get_or_insert_map(roots::OBJECTS);
        poll(&mut txn, &objects, "p2", 1, "never");
        let p2 = object_map(&txn, "p2");
        p2.insert(&mut txn, "text", "plain string");
        p2.insert(&mut txn, "stale", 1);
    }
    let (first_option, tail) = {
        let txn = a.transact();
        let Some(Out::YArray(options)) = object_map(&txn, "p2").get(&txn, "options") else {
            panic!("options")
        };
        (options.get(&txn, 0).unwrap(), options.get(&txn, 2).unwrap())
    };

    let (report, _) = restore(&a, &version);

    assert_eq!(objects_json(&a), objects_json(&version));
    assert_eq!(board(&a).objects, board(&version).objects);
    let p2 = board(&a).object("p2").unwrap().clone();
    assert_eq!(p2.kind, Kind::Other("poll".into()));
    assert_eq!(p2.text.as_deref(), Some("real text"));
    assert_eq!(report.objects_created, 1);
    assert_eq!(report.objects_updated, 1);
    // p2: options[1] replaced (arrays_edited); settings, flags.pinned, text (plain string ->
    // Y.Text) and note set; stale removed.
    assert_eq!(report.arrays_edited, 1);
    assert_eq!(report.fields_set, 4, "{report:?}");
    assert_eq!(report.fields_removed, 1);
    assert_eq!(report.texts_edited, 0);

    // The array kept its equal trailing element and edited its first in place.
    let txn = a.transact();
    let Some(Out::YArray(options)) = object_map(&txn, "p2").get(&txn, "options") else {
        panic!("options")
    };
    assert_eq!(options.len(&txn), 3);
    let (Out::YMap(before), Some(Out::YMap(after))) = (first_option, options.get(&txn, 0)) else {
        panic!("maps")
    };
    assert_eq!(before, after, "equal leading element kept, not replaced");
    assert_eq!(tail, options.get(&txn, 2).unwrap());
    let Some(Out::YText(note)) = object_map(&txn, "p2").get(&txn, "note") else {
        panic!("note is a Y.Text")
    };
    assert_eq!(note.get_string(&txn), "kept");
}

fn objects_json(doc: &Doc) -> Value {
    let txn = doc.transact();
    Value::from_any(&txn.get_map(roots::OBJECTS).unwrap().to_json(&txn))
}

#[test]
fn chat_and_other_roots_are_untouched() {
    let version = doc(5, OffsetKind::Bytes);
    run(&version, vec![chat("old", "from the version")]);
    {
        let mut txn = version.transact_mut();
        txn.get_or_insert_map("custom")
            .insert(&mut txn, "k", "then");
    }
    let a = doc(1, OffsetKind::Bytes);
    run(&a, vec![chat("new", "after")]);
    {
        let mut txn = a.transact_mut();
        txn.get_or_insert_map("custom").insert(&mut txn, "k", "now");
    }
    let (report, update) = restore(&a, &version);
    assert!(report.is_noop());
    assert_eq!(update, Update::EMPTY_V1);
    let ids: Vec<_> = board(&a).chat.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["new"]);
    let txn = a.transact();
    assert_eq!(
        txn.get_map("custom").unwrap().get(&txn, "k"),
        Some(Out::Any(Any::from("now")))
    );
}

#[test]
fn restore_from_bytes_refuses_bad_or_incomplete_versions() {
    let a = doc(1, OffsetKind::Bytes);
    let full = edited_board(&a);
    let b = doc(2, OffsetKind::Bytes);
    {
        let mut txn = b.transact_mut();
        let report = restore_from_update_v1(&mut txn, &full).unwrap();
        assert_eq!(report.objects_created, 4);
        assert_eq!(report.meta_keys_changed, 1);
    }
    assert_eq!(board(&b).objects, board(&load(&full)).objects);
    assert_eq!(board(&b).chat, vec![], "chat is not restored");

    // An incremental update (the end of a history) depends on changes it does not contain.
    let sv = a.transact().state_vector();
    run(
        &a,
        vec![Op::SetTitle {
            title: "later".into(),
        }],
    );
    let increment = a.transact().encode_state_as_update_v1(&sv);
    let mut txn = b.transact_mut();
    assert!(matches!(
        restore_from_update_v1(&mut txn, &increment),
        Err(RestoreError::Incomplete)
    ));
    assert!(matches!(
        restore_from_update_v1(&mut txn, &[0xff, 0xff, 0xff]),
        Err(RestoreError::Guard(_))
    ));
    assert_eq!(txn.encode_update_v1(), Update::EMPTY_V1, "nothing written");
}

/// An object holding maps nested `depth` deep, the innermost with `leaf` under key `v`.
fn deep_object(doc: &Doc, depth: usize, leaf: &str) {
    let objects = doc.get_or_insert_map(roots::OBJECTS);
    let mut txn = doc.transact_mut();
    let mut map = objects.insert(&mut txn, "deep", MapPrelim::default());
    for _ in 0..depth {
        map = map.insert(&mut txn, "c", MapPrelim::default());
    }
    map.insert(&mut txn, "v", leaf);
}

#[test]
fn a_version_nested_past_the_limit_is_refused_before_it_is_decoded() {
    let target = doc(1, OffsetKind::Utf16);
    deep_object(&target, usize::from(crate::guard::MAX_NESTING) + 10, "x");
    let bytes = target
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let board = doc(2, OffsetKind::Utf16);
    let mut txn = board.transact_mut();
    assert!(matches!(
        restore_from_update_v1(&mut txn, &bytes),
        Err(RestoreError::Guard(
            crate::guard::GuardError::TypesTooDeep { .. }
        ))
    ));
    assert_eq!(txn.encode_update_v1(), Update::EMPTY_V1, "nothing written");
}

#[test]
fn comparing_and_copying_stop_at_the_walk_limit() {
    // Documents built locally are not checked by the guard: a restore between two of them,
    // 5,000 levels deep, must not recurse 5,000 levels (it would overflow this thread's
    // stack). It stops at the walk limit and reports what it could not copy.
    let restored = std::thread::Builder::new()
        .stack_size(4 << 20)
        .spawn(|| {
            let current = doc(1, OffsetKind::Utf16);
            deep_object(&current, 5_000, "old");
            let target = doc(2, OffsetKind::Utf16);
            deep_object(&target, 5_000, "new");
            let target_txn = target.transact();
            restore_to(&mut current.transact_mut(), &target_txn)
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(!restored.skipped.is_empty(), "{restored:?}");
}

#[test]
fn restore_into_an_empty_doc_and_to_an_empty_version() {
    let a = doc(1, OffsetKind::Bytes);
    edited_board(&a);
    let empty = Doc::with_client_id(9);
    let (report, _) = restore(&a, &empty);
    assert_eq!(report.objects_removed, 4);
    assert_eq!(report.meta_keys_changed, 1);
    let now = board(&a);
    assert!(now.objects.is_empty());
    assert_eq!(now.meta.title, None);
    assert_eq!(now.chat.len(), 2);

    // An array-valued root or object entry of the wrong type is replaced like any value.
    let odd = doc(4, OffsetKind::Bytes);
    {
        let mut txn = odd.transact_mut();
        let objects = txn.get_or_insert_map(roots::OBJECTS);
        objects.insert(&mut txn, "weird", ArrayPrelim::from([1, 2]));
    }
    let (report, _) = restore(&a, &odd);
    assert_eq!(report.objects_created, 1);
    let txn = a.transact();
    let Some(Out::YArray(weird)) = txn.get_map(roots::OBJECTS).unwrap().get(&txn, "weird") else {
        panic!("weird")
    };
    let _: &ArrayRef = &weird;
    assert_eq!(weird.len(&txn), 2);
}

#[test]
fn a_text_with_embeds_is_replaced_rather_than_edited_by_wrong_offsets() {
    let version = doc(5, OffsetKind::Bytes);
    run(
        &version,
        vec![Op::Create(
            NewObject::new("s1", Kind::Sticky, "ann", T)
                .at([0.0, 0.0], [1.0, 1.0])
                .with_text("abcdef"),
        )],
    );
    let a = load(&state(&version));
    {
        let text = text_ref(&a, "s1");
        let mut txn = a.transact_mut();
        text.insert_embed(&mut txn, 1, Any::from("image"));
        text.insert(&mut txn, 7, "g");
    }
    assert_eq!(text_ref(&a, "s1").get_string(&a.transact()), "abcdefg");
    let (report, _) = restore(&a, &version);
    assert_eq!((report.texts_edited, report.fields_set), (0, 1));
    assert_eq!(objects_json(&a), objects_json(&version));
}
