//! Interop with real Yjs: reads a board written by npm `yjs` 13.6 (see
//! `tests/js/fixtures/make-board-fixture.mjs`), and round-trips a board written by this crate.
#![allow(clippy::unwrap_used)]

use crdt_schema::{
    Board, ChatMessage, Kind, NewObject, Op, ReadProblem, Value, declare_roots, ops, read_board,
};
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

const FIXTURE: &[u8] = include_bytes!("fixtures/yjs-board.bin");
const T0: f64 = 1_700_000_000_000.0;

fn load(update: &[u8], declare: bool) -> Doc {
    let doc = Doc::with_client_id(99);
    if declare {
        declare_roots(&doc);
    }
    {
        let mut txn = doc.transact_mut();
        txn.apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    doc
}

fn issue(board: &Board, key: &str, field: Option<&str>) -> ReadProblem {
    board
        .issues
        .iter()
        .find(|i| i.key == key && i.field.as_deref() == field)
        .map(|i| i.problem.clone())
        .unwrap_or_else(|| panic!("no issue {key}.{field:?}: {:#?}", board.issues))
}

#[test]
fn reads_a_board_written_by_yjs() {
    let doc = load(FIXTURE, true);
    let board = read_board(&doc.transact());

    assert_eq!(board.meta.title.as_deref(), Some("Sprint planning ✏️"));
    let grid = Value::Map(
        [
            ("size".to_string(), Value::Number(20.0)),
            ("snap".to_string(), Value::Bool(true)),
        ]
        .into(),
    );
    assert_eq!(board.meta.extra.get("grid"), Some(&grid));

    let order: Vec<_> = board.objects.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(
        order,
        [
            "frame-1",
            "sticky-1",
            "rect-1",
            "ellipse-1",
            "text-1",
            "conn-1",
            "poll-1",
            "bad-1"
        ]
    );

    let frame = board.object("frame-1").unwrap();
    assert_eq!(frame.kind, Kind::Frame);
    assert_eq!(frame.pos, Some([0.0, 0.0]));
    assert_eq!(frame.size, Some([800.0, 600.0]));
    assert_eq!(frame.text.as_deref(), Some("Sprint 12"));
    assert_eq!(frame.created_at, Some(T0));

    let sticky = board.object("sticky-1").unwrap();
    assert_eq!(sticky.kind, Kind::Sticky);
    assert_eq!(sticky.pos, Some([40.5, 60.0]));
    assert_eq!(sticky.size, Some([200.0, 200.0]));
    assert_eq!(sticky.rotation, Some(0.0));
    assert_eq!(sticky.z.as_deref(), Some("W"));
    assert_eq!(sticky.text.as_deref(), Some("Ship it 🚀 now"));
    assert_eq!(sticky.color.as_deref(), Some("#ffd700"));
    assert_eq!(sticky.frame.as_deref(), Some("frame-1"));
    assert_eq!(sticky.created_by.as_deref(), Some("alice"));
    assert_eq!(sticky.created_at, Some(T0 + 1000.0));

    let rect = board.object("rect-1").unwrap();
    assert_eq!((rect.kind.clone(), rect.rotation), (Kind::Rect, Some(15.5)));
    assert_eq!(rect.color.as_deref(), Some("rgb(255, 0, 0)"));
    assert_eq!(board.object("ellipse-1").unwrap().kind, Kind::Ellipse);
    let text = board.object("text-1").unwrap();
    assert_eq!(text.kind, Kind::Text);
    assert_eq!(text.text.as_deref(), Some("Hello 👋🏽 world"));
    assert_eq!(text.rotation, Some(-90.0));

    let conn = board.object("conn-1").unwrap();
    assert_eq!(conn.kind, Kind::Connector);
    assert_eq!(conn.from.as_deref(), Some("sticky-1"));
    assert_eq!(conn.to.as_deref(), Some("rect-1"));
    assert_eq!(conn.label.as_deref(), Some("depends on"));

    // Unknown kind kept, with its unknown fields.
    let poll = board.object("poll-1").unwrap();
    assert_eq!(poll.kind, Kind::Other("poll".into()));
    assert_eq!(poll.pos, Some([900.0, 100.0]));
    assert_eq!(
        poll.extra.get("question"),
        Some(&Value::String("Lunch?".into()))
    );
    assert_eq!(
        poll.extra.get("options"),
        Some(&Value::Array(vec![
            Value::String("pizza".into()),
            Value::String("sushi".into())
        ]))
    );

    // Wrong-typed fields reported and skipped; plain-string text used.
    let bad = board.object("bad-1").unwrap();
    assert_eq!((bad.pos, bad.size, bad.rotation), (None, None, None));
    assert_eq!(bad.text.as_deref(), Some("plain label"));
    assert_eq!(bad.color.as_deref(), Some("red"));
    let wrong = |expected: &'static str, found: &str| ReadProblem::WrongType {
        expected,
        found: found.into(),
    };
    assert_eq!(
        issue(&board, "bad-1", Some("pos")),
        wrong("array of 2 numbers", "string")
    );
    assert_eq!(
        issue(&board, "bad-1", Some("size")),
        wrong("array of 2 numbers", "array of 3")
    );
    assert_eq!(
        issue(&board, "bad-1", Some("rotation")),
        wrong("number", "string")
    );
    assert_eq!(issue(&board, "bad-1", Some("text")), ReadProblem::PlainText);

    assert_eq!(
        board.chat,
        [
            ChatMessage {
                id: "m1".into(),
                author: "alice".into(),
                text: "Morning! ☀️".into(),
                at: T0 + 10_000.0
            },
            ChatMessage {
                id: "m2".into(),
                author: "bob".into(),
                text: "Let’s go 🚀".into(),
                at: T0 + 20_000.0
            },
        ]
    );
    assert_eq!(issue(&board, "2", Some("at")), wrong("number", "string"));
    assert_eq!(issue(&board, "3", None), wrong("map", "number"));
    // Nothing else is wrong with the fixture.
    assert_eq!(board.issues.len(), 6, "{:#?}", board.issues);
}

#[test]
fn reading_works_without_declaring_roots_first() {
    let declared = read_board(&load(FIXTURE, true).transact());
    let undeclared = read_board(&load(FIXTURE, false).transact());
    assert_eq!(
        serde_json::to_value(&declared).unwrap(),
        serde_json::to_value(&undeclared).unwrap()
    );
}

#[test]
fn edits_yjs_text_at_utf16_offsets() {
    let doc = load(FIXTURE, true);
    {
        let mut txn = doc.transact_mut();
        // After "Hello 👋🏽" (6 + 4 UTF-16 units), as JS would count.
        let op = Op::InsertText {
            id: "text-1".into(),
            index: 10,
            text: ",".into(),
        };
        ops::apply(&mut txn, &op).unwrap();
    }
    let board = read_board(&doc.transact());
    assert_eq!(
        board.object("text-1").unwrap().text.as_deref(),
        Some("Hello 👋🏽, world")
    );
}

#[test]
fn a_board_written_by_crdt_schema_round_trips_through_an_update() {
    let mut options = Options::with_client_id(yrs::ClientID::new(5));
    options.offset_kind = OffsetKind::Utf16;
    let doc = Doc::with_options(options);
    declare_roots(&doc);
    {
        let mut txn = doc.transact_mut_with("test");
        let steps = [
            Op::SetTitle {
                title: "Round trip 🎯".into(),
            },
            Op::Create(
                NewObject::new("f", Kind::Frame, "ann", T0)
                    .at([0.0, 0.0], [1000.0, 800.0])
                    .with_text("Frame"),
            ),
            Op::Create(
                NewObject::new("s", Kind::Sticky, "ann", T0 + 1.0)
                    .at([10.25, -20.0], [200.0, 150.0])
                    .with_text("Note 👋🏽")
                    .with_color("hsl(50 100% 60%)")
                    .in_frame("f")
                    .with_rotation(3.5),
            ),
            Op::Create(
                NewObject::new("e", Kind::Ellipse, "bob", T0 + 2.0)
                    .at([300.0, 300.0], [50.0, 50.0]),
            ),
            Op::Create(
                NewObject::new("c", Kind::Connector, "bob", T0 + 3.0)
                    .connecting("s", "e")
                    .with_label("→"),
            ),
            // "Note 👋🏽" is 9 UTF-16 units (8 would split the skin-tone modifier's pair).
            Op::InsertText {
                id: "s".into(),
                index: 9,
                text: "!".into(),
            },
            Op::PostChat(ChatMessage {
                id: "m1".into(),
                author: "ann".into(),
                text: "done ✅".into(),
                at: T0 + 4.0,
            }),
        ];
        for op in &steps {
            ops::apply(&mut txn, op).unwrap();
        }
    }
    let written = read_board(&doc.transact());
    assert!(written.issues.is_empty(), "{:#?}", written.issues);
    assert_eq!(
        written.object("s").unwrap().text.as_deref(),
        Some("Note 👋🏽!")
    );

    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let copy = load(&update, true);
    let read_back = read_board(&copy.transact());
    assert_eq!(read_back, written);
    assert_eq!(read_back.objects.len(), 4);
    assert_eq!(read_back.meta.title.as_deref(), Some("Round trip 🎯"));
}
