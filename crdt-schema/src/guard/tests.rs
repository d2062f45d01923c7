#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use proptest::prelude::*;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, ReadTxn, StateVector, Text,
    TextPrelim, Transact, Update,
};

use super::*;

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// lib0 varuint.
fn var(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An update with one item in root map `m` under key `k` holding one `Any` of `depth` nested
/// one-element arrays around a `null`, built by hand (yrs itself could not encode 200,000
/// levels without recursing).
fn nested_any_update(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    var(1, &mut out); // one client
    var(1, &mut out); // one block
    var(7, &mut out); // client 7
    var(0, &mut out); // clock 0
    out.push(0b0010_0000 | 8); // parent sub, content Any
    var(1, &mut out); // parent is a root
    var(1, &mut out);
    out.push(b'm');
    var(1, &mut out);
    out.push(b'k');
    var(1, &mut out); // one value
    for _ in 0..depth {
        out.push(117);
        var(1, &mut out);
    }
    out.push(126);
    var(0, &mut out); // empty delete set
    out
}

/// A chain of `depth` maps nested under root map `objects`, one update per `step` levels;
/// returns the doc and each step's update.
fn map_chain(depth: usize, step: usize) -> (Doc, Vec<Vec<u8>>) {
    let doc = Doc::new();
    let root = doc.get_or_insert_map("objects");
    let mut updates = Vec::new();
    let mut current: Option<MapRef> = None;
    let mut made = 0;
    while made < depth {
        let mut txn = doc.transact_mut();
        for _ in 0..step.min(depth - made) {
            let next = match &current {
                None => root.insert(&mut txn, "chain", MapPrelim::default()),
                Some(m) => m.insert(&mut txn, "c", MapPrelim::default()),
            };
            current = Some(next);
            made += 1;
        }
        updates.push(txn.encode_update_v1());
    }
    (doc, updates)
}

#[test]
fn a_board_made_by_yrs_passes() {
    let doc = Doc::new();
    crate::declare_roots(&doc);
    {
        let mut txn = doc.transact_mut();
        let new = crate::NewObject::new("n1", crate::Kind::Sticky, "u", 1.0)
            .at([1.0, 2.0], [3.0, 4.0])
            .with_text("hello");
        crate::ops::apply(&mut txn, &crate::Op::Create(new)).unwrap();
    }
    assert_eq!(check_update_v1(&state(&doc)), Ok(()));
}

#[test]
fn values_nested_to_the_limit_pass_and_deeper_ones_are_refused() {
    // The item's value is level 0; each array adds one.
    assert_eq!(
        check_update_v1(&nested_any_update(MAX_NESTING as usize)),
        Ok(())
    );
    assert_eq!(
        check_update_v1(&nested_any_update(MAX_NESTING as usize + 1)),
        Err(GuardError::ValueTooDeep { limit: MAX_NESTING })
    );
    // What yrs would overflow its stack on: refused, quickly, on a small stack.
    let deep = nested_any_update(200_000);
    assert!(deep.len() < 500_000);
    let result = std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || check_update_v1(&deep))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(result, Err(GuardError::ValueTooDeep { limit: MAX_NESTING }));
}

#[test]
fn the_hand_made_update_is_what_yrs_reads() {
    let update = nested_any_update(3);
    let doc = Doc::new();
    let m = doc.get_or_insert_map("m");
    doc.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    let txn = doc.transact();
    let value = m.get(&txn, "k").unwrap().to_json(&txn);
    let expected = Any::Array(Arc::from(vec![Any::Array(Arc::from(vec![Any::Array(
        Arc::from(vec![Any::Null]),
    )]))]));
    assert_eq!(value, expected);
}

#[test]
fn json_content_is_held_to_the_same_depth() {
    let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    assert_eq!(scan::json_depth_for_tests(&ok), Ok(()));
    assert_eq!(
        scan::json_depth_for_tests(&deep),
        Err(GuardError::ValueTooDeep { limit: MAX_NESTING })
    );
    // Brackets inside strings do not count.
    let quoted = format!("\"{}\\\"{}\"", "[".repeat(100), "{".repeat(100));
    assert_eq!(scan::json_depth_for_tests(&quoted), Ok(()));
}

#[test]
fn shared_types_nested_to_the_limit_pass_and_deeper_ones_are_refused() {
    let (doc, _) = map_chain(MAX_NESTING as usize, 1000);
    assert_eq!(check_update_v1(&state(&doc)), Ok(()));
    let (doc, _) = map_chain(MAX_NESTING as usize + 1, 1000);
    assert_eq!(
        check_update_v1(&state(&doc)),
        Err(GuardError::TypesTooDeep { limit: MAX_NESTING })
    );
}

#[test]
fn nesting_built_update_by_update_is_refused_when_it_passes_the_limit() {
    let (_, updates) = map_chain(100, 10);
    let mut nesting = Nesting::default();
    let mut accepted = 0;
    for update in &updates {
        match nesting.check(update) {
            Ok(checked) => {
                nesting.record(checked);
                accepted += 1;
            }
            Err(e) => {
                assert_eq!(e, GuardError::TypesTooDeep { limit: MAX_NESTING });
                break;
            }
        }
    }
    // Levels 1-60 pass in six updates; the seventh (61-70) is refused.
    assert_eq!(accepted, 6);
    // Each of those updates alone looks harmless.
    assert!(updates.iter().all(|u| check_update_v1(u).is_ok()));
}

#[test]
fn a_type_placed_after_a_sibling_takes_the_siblings_depth() {
    // Arrays nested in arrays, each new array the second element, so its block names an
    // origin instead of its parent.
    let doc = Doc::new();
    let root = doc.get_or_insert_array("list");
    let mut nesting = Nesting::default();
    let mut current: ArrayRef = root.clone();
    let mut refused = None;
    for level in 1..=80u32 {
        let update = {
            let mut txn = doc.transact_mut();
            current.push_back(&mut txn, "first");
            let next = current.push_back(&mut txn, ArrayPrelim::default());
            current = next;
            txn.encode_update_v1()
        };
        if let Err(e) = nesting.admit(&update) {
            refused = Some((level, e));
            break;
        }
    }
    // Level 64's array holds items at depth 65: refused.
    assert_eq!(
        refused,
        Some((65, GuardError::TypesTooDeep { limit: MAX_NESTING }))
    );
}

#[test]
fn items_waiting_for_a_missing_parent_are_settled_when_it_arrives() {
    let (_, updates) = map_chain(70, 35);
    assert_eq!(updates.len(), 2);
    // The deeper half first: its parent is missing, so it floats (35 levels below it).
    let mut nesting = Nesting::default();
    nesting.admit(&updates[1]).unwrap();
    // The first half brings the parent at depth 35: the floating half would reach 70.
    assert_eq!(
        nesting.check(&updates[0]).unwrap_err(),
        GuardError::TypesTooDeep { limit: MAX_NESTING }
    );
    // Shallower: 20 + 20 levels settle fine, and further levels count from there.
    let (_, updates) = map_chain(60, 20);
    let mut nesting = Nesting::default();
    nesting.admit(&updates[1]).unwrap();
    nesting.admit(&updates[0]).unwrap();
    nesting.admit(&updates[2]).unwrap();
    let (_, updates) = map_chain(66, 22);
    let mut nesting = Nesting::default();
    nesting.admit(&updates[2]).unwrap();
    nesting.admit(&updates[1]).unwrap();
    assert_eq!(
        nesting.check(&updates[0]).unwrap_err(),
        GuardError::TypesTooDeep { limit: MAX_NESTING }
    );
}

#[test]
fn garbage_truncation_and_huge_lengths_are_refused_without_allocating() {
    assert!(matches!(
        check_update_v1(&[]),
        Err(GuardError::Malformed(_))
    ));
    // One client declaring 2^32-1 blocks and no bytes for them.
    let mut huge = Vec::new();
    var(1, &mut huge);
    var(u64::from(u32::MAX), &mut huge);
    var(1, &mut huge);
    var(0, &mut huge);
    assert!(matches!(
        check_update_v1(&huge),
        Err(GuardError::Malformed(_))
    ));
    // A varint that never ends.
    assert!(matches!(
        check_update_v1(&[0xff; 32]),
        Err(GuardError::Malformed(_))
    ));
    // Every prefix of a real update is refused or passes, never panics.
    let (doc, _) = map_chain(5, 5);
    let full = state(&doc);
    for cut in 0..full.len() {
        let _ = check_update_v1(&full[..cut]);
    }
}

#[test]
fn declared_counts_past_the_end_are_refused_before_anything_is_reserved() {
    // The update of `nested_any_update(0)`, its one value replaced by a map declaring 2^27
    // entries: yrs would reserve a hash map for all of them (256 MB of control bytes).
    let mut out = nested_any_update(0);
    out.truncate(out.len() - 2); // the null and the empty delete set
    out.push(118);
    var(1 << 27, &mut out);
    var(0, &mut out);
    assert!(out.len() < 30);
    assert_eq!(
        check_update_v1(&out),
        Err(GuardError::Malformed("a count past the end of the update"))
    );
    // So are clients and blocks declared in the billions.
    let mut clients = Vec::new();
    var(1 << 30, &mut clients);
    var(0, &mut clients);
    assert!(matches!(
        check_update_v1(&clients),
        Err(GuardError::Malformed(_))
    ));
}

#[test]
fn items_that_are_their_own_parents_are_malformed() {
    // Client 1, clock 0: a map whose parent is item (1, 1), and at clock 1 a map whose parent
    // is (1, 0).
    let mut out = Vec::new();
    var(1, &mut out);
    var(2, &mut out);
    var(1, &mut out);
    var(0, &mut out);
    for parent_clock in [1u64, 0] {
        out.push(7); // content: a type, parent named
        var(0, &mut out); // parent is an item
        var(1, &mut out);
        var(parent_clock, &mut out);
        out.push(1); // Y.Map
    }
    var(0, &mut out);
    assert!(matches!(
        check_update_v1(&out),
        Err(GuardError::Malformed(_))
    ));
}

#[test]
fn an_empty_update_and_deletions_pass() {
    assert_eq!(check_update_v1(Update::EMPTY_V1), Ok(()));
    let (doc, _) = map_chain(3, 3);
    let root = doc.get_or_insert_map("objects");
    let delete = {
        let mut txn = doc.transact_mut();
        root.remove(&mut txn, "chain");
        txn.encode_update_v1()
    };
    let mut nesting = Nesting::default();
    nesting.admit(&state(&doc)).unwrap();
    nesting.admit(&delete).unwrap();
}

#[test]
fn consecutive_items_at_one_depth_share_one_range() {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut nesting = Nesting::default();
    for i in 0..100u32 {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, i, "x");
        nesting.admit(&txn.encode_update_v1()).unwrap();
    }
    assert_eq!(nesting.spans(), 1);
}

/// What random edits build: how deep each of a doc's maps is.
#[derive(Debug, Clone)]
enum Step {
    /// Nest a new map (or array, or text) into one of the newest maps.
    Nest { into: usize, kind: u8 },
    /// Nest `len` maps, each in the one before, below the newest map.
    Chain { len: u32 },
    /// Put a plain value into a map.
    Set { into: usize },
    /// Delete a map's plain value.
    Delete { into: usize },
}

fn steps() -> impl Strategy<Value = Vec<Vec<Step>>> {
    let step = prop_oneof![
        4 => (any::<usize>(), 0u8..4).prop_map(|(into, kind)| Step::Nest { into, kind }),
        1 => (1u32..16).prop_map(|len| Step::Chain { len }),
        2 => any::<usize>().prop_map(|into| Step::Set { into }),
        1 => any::<usize>().prop_map(|into| Step::Delete { into }),
    ];
    prop::collection::vec(prop::collection::vec(step, 1..16), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Updates yrs makes are accepted exactly when the doc's deepest map stays within the
    /// limit, whether checked update by update, as a whole state, or in reverse order.
    #[test]
    fn the_check_agrees_with_the_nesting_yrs_builds(transactions in steps()) {
        let doc = Doc::new();
        let root = doc.get_or_insert_map("objects");
        // Every map made, with its level (the root is 0; items inside sit one deeper).
        let mut maps: Vec<(MapRef, u32)> = vec![(root, 0)];
        let mut nesting = Nesting::default();
        let mut updates = Vec::new();
        let mut deepest = 1u32;
        for steps in transactions {
            let update = {
                let mut txn = doc.transact_mut();
                for step in steps {
                    match step {
                        Step::Nest { into, kind } => {
                            // Mostly into one of the newest maps, so chains grow past the
                            // limit in many cases.
                            let pick = maps.len() - 1 - into % maps.len().min(2);
                            let (map, level) = maps[pick].clone();
                            let key = format!("k{}", maps.len());
                            match kind {
                                0 | 3 => {
                                    let m = map.insert(&mut txn, key, MapPrelim::default());
                                    maps.push((m, level + 1));
                                    deepest = deepest.max(level + 1);
                                }
                                1 => {
                                    let a: ArrayRef = map.insert(&mut txn, key, ArrayPrelim::default());
                                    a.push_back(&mut txn, 1);
                                    deepest = deepest.max(level + 2);
                                }
                                _ => {
                                    let t = map.insert(&mut txn, key, TextPrelim::new("ab"));
                                    t.insert(&mut txn, 1, "c");
                                    deepest = deepest.max(level + 2);
                                }
                            }
                        }
                        Step::Chain { len } => {
                            for _ in 0..len {
                                let (map, level) = maps[maps.len() - 1].clone();
                                let m = map.insert(&mut txn, "chain", MapPrelim::default());
                                maps.push((m, level + 1));
                                deepest = deepest.max(level + 1);
                            }
                        }
                        Step::Set { into } => {
                            let (map, level) = maps[into % maps.len()].clone();
                            map.insert(&mut txn, "v", Any::from(1.5));
                            deepest = deepest.max(level + 1);
                        }
                        Step::Delete { into } => {
                            // Only plain values: a handle to a deleted (collected) map must
                            // not be used again.
                            let (map, _) = maps[into % maps.len()].clone();
                            map.remove(&mut txn, "v");
                        }
                    }
                }
                txn.encode_update_v1()
            };
            let expected = deepest <= u32::from(MAX_NESTING);
            let checked = nesting.check(&update);
            prop_assert_eq!(checked.is_ok(), expected, "deepest {}", deepest);
            if let Ok(checked) = checked {
                nesting.record(checked);
            } else {
                return Ok(());
            }
            updates.push(update);
        }
        prop_assert_eq!(check_update_v1(&state(&doc)).is_ok(), true);
        let mut reversed = Nesting::default();
        for update in updates.iter().rev() {
            prop_assert!(reversed.admit(update).is_ok());
        }
    }
}
