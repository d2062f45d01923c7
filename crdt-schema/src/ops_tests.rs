#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

use yrs::{ClientID, Doc, Map, OffsetKind, Options, Text, Transact, TransactionMut, WriteTxn};

use super::*;
use crate::validate::IssueCode;
use crate::zindex;
use crate::{declare_roots, read_board};

const T: f64 = 1_700_000_000_000.0;

fn doc(kind: OffsetKind) -> Doc {
    let mut options = Options::with_client_id(ClientID::new(7));
    options.offset_kind = kind;
    let doc = Doc::with_options(options);
    declare_roots(&doc);
    doc
}

fn sticky(id: &str) -> NewObject {
    NewObject::new(id, Kind::Sticky, "tester", T).at([0.0, 0.0], [100.0, 100.0])
}

fn frame(id: &str) -> NewObject {
    NewObject::new(id, Kind::Frame, "tester", T).at([0.0, 0.0], [500.0, 500.0])
}

fn connector(id: &str, from: &str, to: &str) -> NewObject {
    NewObject::new(id, Kind::Connector, "tester", T).connecting(from, to)
}

fn ok(txn: &mut TransactionMut, op: Op) -> Applied {
    apply(txn, &op).unwrap()
}

fn codes(txn: &mut TransactionMut, op: Op) -> Vec<(String, IssueCode)> {
    let before = txn.encode_update_v1();
    let err = apply(txn, &op).unwrap_err();
    assert_eq!(
        txn.encode_update_v1(),
        before,
        "a rejected op wrote something"
    );
    err.issues.into_iter().map(|i| (i.field, i.code)).collect()
}

fn text_of(txn: &TransactionMut, id: &str) -> Option<String> {
    read_board(txn).object(id).and_then(|o| o.text.clone())
}

#[test]
fn create_every_kind_and_read_back() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(
        &mut txn,
        Op::Create(frame("f").with_color("#eee").with_text("Frame")),
    );
    ok(
        &mut txn,
        Op::Create(
            sticky("s")
                .in_frame("f")
                .with_text("Hi 🚀")
                .with_rotation(12.5),
        ),
    );
    for (id, kind) in [("r", Kind::Rect), ("e", Kind::Ellipse), ("t", Kind::Text)] {
        ok(
            &mut txn,
            Op::Create(NewObject::new(id, kind, "tester", T).at([1.5, -2.0], [3.0, 4.0])),
        );
    }
    let created = ok(
        &mut txn,
        Op::Create(connector("c", "s", "r").with_label("next")),
    );
    assert_eq!(
        created,
        Applied::Created {
            id: "c".into(),
            z: "a".into()
        }
    );
    let board = read_board(&txn);
    assert!(board.issues.is_empty(), "{:?}", board.issues);
    let ids: Vec<_> = board.objects.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        ids,
        ["f", "s", "r", "e", "t", "c"],
        "paint order follows creation"
    );
    let s = board.object("s").unwrap();
    assert_eq!(s.kind, Kind::Sticky);
    assert_eq!(s.pos, Some([0.0, 0.0]));
    assert_eq!(s.size, Some([100.0, 100.0]));
    assert_eq!(s.rotation, Some(12.5));
    assert_eq!(s.text.as_deref(), Some("Hi 🚀"));
    assert_eq!(s.frame.as_deref(), Some("f"));
    assert_eq!(s.created_by.as_deref(), Some("tester"));
    assert_eq!(s.created_at, Some(T));
    assert_eq!(board.object("r").unwrap().pos, Some([1.5, -2.0]));
    let c = board.object("c").unwrap();
    assert_eq!((c.from.as_deref(), c.to.as_deref()), (Some("s"), Some("r")));
    assert_eq!(c.label.as_deref(), Some("next"));
    assert_eq!(c.rotation, None);
    assert_eq!(c.pos, None);
}

#[test]
fn create_reports_every_problem_at_once() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(sticky("s")));
    let mut bad = NewObject::new("s", Kind::Other("poll".into()), "", f64::NAN);
    bad.pos = Some([f64::NAN, 2e9]);
    bad.size = Some([0.0, -1.0]);
    bad.rotation = Some(f64::INFINITY);
    bad.z = Some("V0".into());
    bad.color = Some("blurple".into());
    bad.frame = Some("s".into());
    bad.from = Some("s".into());
    bad.label = Some("x".into());
    bad.text = Some("x".repeat(crate::limits::MAX_TEXT_LEN + 1));
    let got = codes(&mut txn, Op::Create(bad));
    let expected = [
        ("id", IssueCode::AlreadyExists),
        ("kind", IssueCode::NotAllowed),
        ("pos[0]", IssueCode::NotFinite),
        ("pos[1]", IssueCode::OutOfRange),
        ("size[0]", IssueCode::OutOfRange),
        ("size[1]", IssueCode::OutOfRange),
        ("rotation", IssueCode::NotFinite),
        ("z", IssueCode::InvalidZ),
        ("text", IssueCode::BadLength),
        ("color", IssueCode::InvalidColor),
        ("frame", IssueCode::WrongKind),
        ("from", IssueCode::NotAllowed),
        ("label", IssueCode::NotAllowed),
        ("created_by", IssueCode::BadLength),
        ("created_at", IssueCode::NotFinite),
    ];
    let expected: Vec<_> = expected.iter().map(|(f, c)| (f.to_string(), *c)).collect();
    assert_eq!(got, expected);
    // Missing geometry, bad id.
    let mut bad = NewObject::new("no spaces", Kind::Rect, "me", T);
    bad.frame = Some("nope".into());
    assert_eq!(
        codes(&mut txn, Op::Create(bad)),
        [
            ("id".to_string(), IssueCode::InvalidId),
            ("pos".to_string(), IssueCode::Required),
            ("size".to_string(), IssueCode::Required),
            ("frame".to_string(), IssueCode::NotFound),
        ]
    );
}

#[test]
fn connector_rules() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(sticky("a")));
    ok(&mut txn, Op::Create(sticky("b")));
    ok(&mut txn, Op::Create(connector("c", "a", "b")));
    let got = codes(&mut txn, Op::Create(connector("c2", "c", "missing")));
    assert_eq!(
        got,
        [
            ("from".to_string(), IssueCode::WrongKind),
            ("to".to_string(), IssueCode::NotFound)
        ]
    );
    let got = codes(
        &mut txn,
        Op::Create(connector("c3", "a", "a").in_frame("a")),
    );
    assert_eq!(
        got,
        [
            ("frame".to_string(), IssueCode::NotAllowed),
            ("to".to_string(), IssueCode::NotAllowed)
        ]
    );
    let mut no_ends = NewObject::new("c4", Kind::Connector, "me", T);
    no_ends.text = Some("x".into());
    let got = codes(&mut txn, Op::Create(no_ends));
    assert_eq!(
        got,
        [
            ("text".to_string(), IssueCode::NotAllowed),
            ("from".to_string(), IssueCode::Required),
            ("to".to_string(), IssueCode::Required)
        ]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetLabel {
                id: "a".into(),
                label: Some("x".into())
            }
        ),
        [("id".to_string(), IssueCode::WrongKind)]
    );
    ok(
        &mut txn,
        Op::SetLabel {
            id: "c".into(),
            label: Some("why".into()),
        },
    );
    assert_eq!(
        read_board(&txn).object("c").unwrap().label.as_deref(),
        Some("why")
    );
    ok(
        &mut txn,
        Op::SetLabel {
            id: "c".into(),
            label: None,
        },
    );
    assert_eq!(read_board(&txn).object("c").unwrap().label, None);
    assert_eq!(
        codes(
            &mut txn,
            Op::SetText {
                id: "c".into(),
                text: "x".into()
            }
        ),
        [("id".to_string(), IssueCode::NotAllowed)]
    );
}

#[test]
fn move_resize_rotate_color_z() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(sticky("s")));
    ok(
        &mut txn,
        Op::Move {
            id: "s".into(),
            pos: [5.0, -6.25],
        },
    );
    ok(
        &mut txn,
        Op::Resize {
            id: "s".into(),
            size: [7.0, 8.5],
        },
    );
    ok(
        &mut txn,
        Op::Rotate {
            id: "s".into(),
            rotation: -45.0,
        },
    );
    ok(
        &mut txn,
        Op::SetColor {
            id: "s".into(),
            color: "rgb(1 2 3 / 50%)".into(),
        },
    );
    ok(
        &mut txn,
        Op::SetZ {
            id: "s".into(),
            z: "A1".into(),
        },
    );
    let board = read_board(&txn);
    let s = board.object("s").unwrap();
    assert_eq!(s.pos, Some([5.0, -6.25]));
    assert_eq!(s.size, Some([7.0, 8.5]));
    assert_eq!(s.rotation, Some(-45.0));
    assert_eq!(s.color.as_deref(), Some("rgb(1 2 3 / 50%)"));
    assert_eq!(s.z.as_deref(), Some("A1"));
    assert_eq!(
        codes(
            &mut txn,
            Op::Move {
                id: "s".into(),
                pos: [f64::NAN, f64::NEG_INFINITY]
            }
        ),
        [
            ("pos[0]".to_string(), IssueCode::NotFinite),
            ("pos[1]".to_string(), IssueCode::NotFinite)
        ]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::Resize {
                id: "nope".into(),
                size: [0.0, 1.0]
            }
        ),
        [("id".to_string(), IssueCode::NotFound)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetZ {
                id: "s".into(),
                z: "".into()
            }
        ),
        [("z".to_string(), IssueCode::InvalidZ)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetColor {
                id: "s".into(),
                color: "#12".into()
            }
        ),
        [("color".to_string(), IssueCode::InvalidColor)]
    );
    // Bring to front with the helpers.
    ok(&mut txn, Op::Create(sticky("t")));
    let top = top_z(&txn).unwrap();
    ok(
        &mut txn,
        Op::SetZ {
            id: "s".into(),
            z: zindex::after(&top).unwrap(),
        },
    );
    let order: Vec<_> = read_board(&txn).objects.into_iter().map(|o| o.id).collect();
    assert_eq!(order, ["t", "s"]);
    assert_eq!(bottom_z(&txn).as_deref(), Some(top.as_str()));
}

fn text_edits(kind: OffsetKind) {
    let d = doc(kind);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(sticky("s").with_text("Ship it now")));
    // UTF-16 offsets, as a JS editor counts them.
    ok(
        &mut txn,
        Op::InsertText {
            id: "s".into(),
            index: 8,
            text: "🚀 ".into(),
        },
    );
    assert_eq!(text_of(&txn, "s").as_deref(), Some("Ship it 🚀 now"));
    ok(
        &mut txn,
        Op::InsertText {
            id: "s".into(),
            index: 14,
            text: "!👋🏽".into(),
        },
    );
    assert_eq!(text_of(&txn, "s").as_deref(), Some("Ship it 🚀 now!👋🏽"));
    // Delete "🚀 " (3 UTF-16 units at 8).
    ok(
        &mut txn,
        Op::DeleteText {
            id: "s".into(),
            index: 8,
            len: 3,
        },
    );
    assert_eq!(text_of(&txn, "s").as_deref(), Some("Ship it now!👋🏽"));
    // Inside the surrogate pair of 👋 (at 12..14): rejected.
    assert_eq!(
        codes(
            &mut txn,
            Op::InsertText {
                id: "s".into(),
                index: 13,
                text: "x".into()
            }
        ),
        [("index".to_string(), IssueCode::InvalidOffset)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::DeleteText {
                id: "s".into(),
                index: 12,
                len: 1
            }
        ),
        [("len".to_string(), IssueCode::InvalidOffset)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::DeleteText {
                id: "s".into(),
                index: 100,
                len: usize::MAX
            }
        ),
        [
            ("index".to_string(), IssueCode::InvalidOffset),
            ("len".to_string(), IssueCode::InvalidOffset)
        ]
    );
    ok(
        &mut txn,
        Op::SetText {
            id: "s".into(),
            text: "new 🎉".into(),
        },
    );
    assert_eq!(text_of(&txn, "s").as_deref(), Some("new 🎉"));
    assert_eq!(
        ok(
            &mut txn,
            Op::SetText {
                id: "s".into(),
                text: "new 🎉".into()
            }
        ),
        Applied::Updated
    );
    ok(
        &mut txn,
        Op::DeleteText {
            id: "s".into(),
            index: 0,
            len: 6,
        },
    );
    assert_eq!(text_of(&txn, "s").as_deref(), Some(""));
}

#[test]
fn text_edits_in_utf16_docs() {
    text_edits(OffsetKind::Utf16);
}

#[test]
fn text_edits_in_byte_offset_docs() {
    text_edits(OffsetKind::Bytes);
}

#[test]
fn editing_a_plain_string_text_upgrades_it_to_y_text() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(sticky("s")));
    let objects = txn.get_or_insert_map(crate::names::roots::OBJECTS);
    let Some(yrs::Out::YMap(s)) = objects.get(&txn, "s") else {
        panic!()
    };
    s.insert(&mut txn, "text", "plain 🚀");
    ok(
        &mut txn,
        Op::InsertText {
            id: "s".into(),
            index: 8,
            text: "!".into(),
        },
    );
    assert!(matches!(s.get(&txn, "text"), Some(yrs::Out::YText(_))));
    let board = read_board(&txn);
    assert!(board.issues.is_empty());
    assert_eq!(
        board.object("s").unwrap().text.as_deref(),
        Some("plain 🚀!")
    );
    // A sticky with no text at all gets one.
    ok(&mut txn, Op::Create(sticky("n")));
    ok(
        &mut txn,
        Op::InsertText {
            id: "n".into(),
            index: 0,
            text: "a".into(),
        },
    );
    assert_eq!(text_of(&txn, "n").as_deref(), Some("a"));
    let Some(yrs::Out::YMap(n)) = objects.get(&txn, "n") else {
        panic!()
    };
    let Some(yrs::Out::YText(t)) = n.get(&txn, "text") else {
        panic!()
    };
    assert_eq!(t.len(&txn), 1);
}

#[test]
fn frames_nest_without_cycles() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(frame("outer")));
    ok(&mut txn, Op::Create(frame("inner").in_frame("outer")));
    ok(&mut txn, Op::Create(sticky("s")));
    ok(
        &mut txn,
        Op::SetFrame {
            id: "s".into(),
            frame: Some("inner".into()),
        },
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetFrame {
                id: "outer".into(),
                frame: Some("inner".into())
            }
        ),
        [("frame".to_string(), IssueCode::Cycle)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetFrame {
                id: "outer".into(),
                frame: Some("outer".into())
            }
        ),
        [("frame".to_string(), IssueCode::Cycle)]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetFrame {
                id: "outer".into(),
                frame: Some("s".into())
            }
        ),
        [("frame".to_string(), IssueCode::WrongKind)]
    );
    ok(
        &mut txn,
        Op::SetFrame {
            id: "s".into(),
            frame: None,
        },
    );
    assert_eq!(read_board(&txn).object("s").unwrap().frame, None);
}

#[test]
fn delete_releases_children_and_removes_attached_connectors() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(&mut txn, Op::Create(frame("f")));
    ok(&mut txn, Op::Create(frame("g").in_frame("f")));
    ok(&mut txn, Op::Create(sticky("a").in_frame("f")));
    ok(&mut txn, Op::Create(sticky("b").in_frame("g")));
    ok(&mut txn, Op::Create(connector("c1", "f", "b")));
    ok(&mut txn, Op::Create(connector("c2", "a", "b")));
    let applied = ok(&mut txn, Op::Delete { id: "f".into() });
    assert_eq!(
        applied,
        Applied::Deleted {
            deleted: vec!["f".into(), "c1".into()],
            released: vec!["a".into(), "g".into()],
        }
    );
    let board = read_board(&txn);
    assert!(board.issues.is_empty(), "{:?}", board.issues);
    let ids: Vec<_> = board.objects.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["g", "a", "b", "c2"]);
    assert_eq!(board.object("a").unwrap().frame, None);
    assert_eq!(board.object("b").unwrap().frame.as_deref(), Some("g"));
    // Deleting a connector deletes only it.
    assert_eq!(
        ok(&mut txn, Op::Delete { id: "c2".into() }),
        Applied::Deleted {
            deleted: vec!["c2".into()],
            released: vec![]
        }
    );
    assert_eq!(
        codes(&mut txn, Op::Delete { id: "c2".into() }),
        [("id".to_string(), IssueCode::NotFound)]
    );
    // A garbage (non-map) entry can still be deleted.
    let objects = txn.get_or_insert_map(crate::names::roots::OBJECTS);
    objects.insert(&mut txn, "junk", 42);
    ok(&mut txn, Op::Delete { id: "junk".into() });
    assert!(!objects.contains_key(&txn, "junk"));
}

#[test]
fn title_and_chat() {
    let d = doc(OffsetKind::Bytes);
    let mut txn = d.transact_mut();
    ok(
        &mut txn,
        Op::SetTitle {
            title: "Plan ✏️".into(),
        },
    );
    let m = ChatMessage {
        id: "m1".into(),
        author: "ann".into(),
        text: "hi 👋".into(),
        at: T,
    };
    assert_eq!(ok(&mut txn, Op::PostChat(m.clone())), Applied::Posted);
    let board = read_board(&txn);
    assert_eq!(board.meta.title.as_deref(), Some("Plan ✏️"));
    assert_eq!(board.chat, std::slice::from_ref(&m));
    assert_eq!(
        codes(&mut txn, Op::PostChat(m)),
        [("id".to_string(), IssueCode::AlreadyExists)]
    );
    let bad = ChatMessage {
        id: "".into(),
        author: "".into(),
        text: "".into(),
        at: -1.0,
    };
    assert_eq!(
        codes(&mut txn, Op::PostChat(bad)),
        [
            ("id".to_string(), IssueCode::InvalidId),
            ("author".to_string(), IssueCode::BadLength),
            ("text".to_string(), IssueCode::BadLength),
            ("at".to_string(), IssueCode::OutOfRange),
        ]
    );
    assert_eq!(
        codes(
            &mut txn,
            Op::SetTitle {
                title: "x".repeat(201)
            }
        ),
        [("title".to_string(), IssueCode::BadLength)]
    );
}

#[test]
fn ops_work_on_a_doc_without_declared_roots() {
    let d = Doc::with_client_id(9);
    let mut txn = d.transact_mut();
    assert!(
        validate(
            &txn,
            &Op::Move {
                id: "x".into(),
                pos: [0.0, 0.0]
            }
        )
        .is_err()
    );
    ok(&mut txn, Op::Create(sticky("s")));
    ok(&mut txn, Op::SetTitle { title: "t".into() });
    let board = read_board(&txn);
    assert_eq!(board.objects.len(), 1);
    assert_eq!(board.meta.title.as_deref(), Some("t"));
}

#[test]
fn ops_deserialize_from_tagged_json() {
    let op: Op = serde_json::from_str(
        r#"{"op":"create","id":"n1","kind":"sticky","pos":[1,2],"size":[3,4],
            "created_by":"ai:run-1","created_at":1700000000000}"#,
    )
    .unwrap();
    assert_eq!(
        op,
        Op::Create(NewObject::new("n1", Kind::Sticky, "ai:run-1", T).at([1.0, 2.0], [3.0, 4.0]))
    );
    let op: Op = serde_json::from_str(r#"{"op":"set_frame","id":"a","frame":null}"#).unwrap();
    assert_eq!(
        op,
        Op::SetFrame {
            id: "a".into(),
            frame: None
        }
    );
    let json = serde_json::to_value(Op::Move {
        id: "a".into(),
        pos: [1.0, 2.0],
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"op": "move", "id": "a", "pos": [1.0, 2.0]})
    );
}
