#![allow(clippy::unwrap_used)]

use crdt_schema::model::Kind;
use crdt_schema::ops::{NewObject, Op, apply};
use yrs::updates::decoder::Decode;
use yrs::{Doc, OffsetKind, Options, ReadTxn, StateVector, Transact, Update};

use super::changes::RunChanges;
use super::undo::undo_update;

const T: f64 = 1_700_000_000_000.0;

/// A board doc as the server keeps one: garbage collection on.
fn live_doc(client: u64) -> Doc {
    let mut options = Options::with_client_id(yrs::ClientID::new(client));
    options.offset_kind = OffsetKind::Utf16;
    let doc = Doc::with_options(options);
    crdt_schema::declare_roots(&doc);
    doc
}

fn note(id: &str, text: &str, x: f64) -> Op {
    Op::Create(
        NewObject::new(id, Kind::Sticky, "tester", T)
            .at([x, 0.0], [100.0, 100.0])
            .with_text(text)
            .with_color("yellow"),
    )
}

fn mv(id: &str, x: f64) -> Op {
    Op::Move {
        id: id.into(),
        pos: [x, 0.0],
    }
}

/// Applies `op` as one transaction; returns its update.
fn edit(doc: &Doc, op: &Op) -> Vec<u8> {
    let mut txn = doc.transact_mut();
    apply(&mut txn, op).unwrap();
    txn.encode_update_v1()
}

/// A run's edits, recorded as the server records them.
fn run(doc: &Doc, ops: &[Op]) -> RunChanges {
    let mut changes = RunChanges::default();
    for op in ops {
        changes.record(&edit(doc, op));
    }
    changes
}

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn undo(doc: &Doc, before: Option<&[u8]>, changes: &RunChanges) {
    if let Some(update) = undo_update(doc, before, changes).unwrap() {
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    }
}

fn ids(doc: &Doc) -> Vec<String> {
    let board = crdt_schema::read_board(&doc.transact());
    let mut ids: Vec<String> = board.objects.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    ids
}

fn x_of(doc: &Doc, id: &str) -> f64 {
    crdt_schema::read_board(&doc.transact())
        .object(id)
        .unwrap()
        .pos
        .unwrap()[0]
}

/// A restart: the board reloaded from its stored state into a fresh doc.
fn reload(doc: &Doc, client: u64) -> Doc {
    let fresh = live_doc(client);
    fresh
        .transact_mut()
        .apply_update(Update::decode_v1(&state(doc)).unwrap())
        .unwrap();
    fresh
}

#[test]
fn removes_what_the_run_created_and_nothing_else() {
    let doc = live_doc(1);
    edit(&doc, &note("human", "mine", 0.0));
    let before = state(&doc);
    let changes = run(&doc, &[note("ai1", "a", 10.0), note("ai2", "b", 20.0)]);
    edit(&doc, &note("later", "after the run", 30.0));
    undo(&doc, Some(&before), &changes);
    assert_eq!(ids(&doc), ["human", "later"]);
}

#[test]
fn restores_deleted_content_even_after_a_restart() {
    let doc = live_doc(1);
    edit(&doc, &note("human", "keep me", 5.0));
    let before = state(&doc);
    let changes = run(&doc, &[Op::Delete { id: "human".into() }]);
    assert_eq!(ids(&doc), Vec::<String>::new());
    // Garbage collection dropped the content; only the version before the run has it.
    let doc = reload(&doc, 2);
    undo(&doc, Some(&before), &changes);
    let board = crdt_schema::read_board(&doc.transact());
    let restored = board.object("human").unwrap();
    assert_eq!(restored.text.as_deref(), Some("keep me"));
    assert_eq!(restored.pos, Some([5.0, 0.0]));
    assert_eq!(restored.color.as_deref(), Some("yellow"));
}

#[test]
fn without_the_version_deleted_content_cannot_come_back() {
    let doc = live_doc(1);
    edit(&doc, &note("human", "gone", 5.0));
    let changes = run(
        &doc,
        &[Op::Delete { id: "human".into() }, note("ai", "x", 0.0)],
    );
    let doc = reload(&doc, 2);
    undo(&doc, None, &changes);
    // What the run created still goes; what it deleted is lost with the version.
    assert_eq!(ids(&doc), Vec::<String>::new());
}

#[test]
fn a_newer_human_value_wins_over_undo() {
    let doc = live_doc(1);
    edit(&doc, &note("a", "a", 0.0));
    edit(&doc, &note("b", "b", 0.0));
    let before = state(&doc);
    let changes = run(&doc, &[mv("a", 100.0), mv("b", 100.0)]);
    // A human moves `a` again after the run.
    let human = live_doc(9);
    human
        .transact_mut()
        .apply_update(Update::decode_v1(&state(&doc)).unwrap())
        .unwrap();
    let update = edit(&human, &mv("a", 555.0));
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    undo(&doc, Some(&before), &changes);
    assert_eq!(x_of(&doc, "a"), 555.0, "the human's move stays");
    assert_eq!(x_of(&doc, "b"), 0.0, "the run's move of b is undone");
}

#[test]
fn an_empty_run_undoes_to_nothing() {
    let doc = live_doc(1);
    assert!(
        undo_update(&doc, None, &RunChanges::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn undo_is_a_forward_change_other_replicas_accept() {
    let doc = live_doc(1);
    let replica = live_doc(5);
    let sync = |from: &Doc, to: &Doc| {
        let sv = to.transact().state_vector();
        let update = from.transact().encode_state_as_update_v1(&sv);
        to.transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
    };
    edit(&doc, &note("human", "h", 0.0));
    let before = state(&doc);
    let changes = run(
        &doc,
        &[note("ai", "x", 0.0), Op::Delete { id: "human".into() }],
    );
    sync(&doc, &replica);
    let update = undo_update(&doc, Some(&before), &changes).unwrap().unwrap();
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    replica
        .transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    assert_eq!(ids(&doc), ["human"]);
    assert_eq!(ids(&replica), ["human"]);
    assert!(!doc.transact().has_missing_updates());
}
