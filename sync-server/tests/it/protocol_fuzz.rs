//! Property tests over the wire decoder and the apply path: whatever bytes a client sends,
//! decoding never panics, and an update that decodes either applies or is refused, leaving the
//! document readable. Runs 256 cases per property by default; `PROPTEST_CASES` raises it.

use proptest::prelude::*;
use sync_server::protocol::{self, Incoming};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, StateVector, Text, Transact, Update};

/// Real frames to mutate: step 1, step 2, updates and awareness, as clients send them.
fn seed_frames() -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(7);
    let objects = doc.get_or_insert_map("objects");
    let text = doc.get_or_insert_text("t");
    let mut frames = Vec::new();
    for i in 0..6 {
        let mut txn = doc.transact_mut();
        objects.insert(&mut txn, format!("k{i}"), vec![i as f64, 1.5]);
        text.insert(&mut txn, 0, "héllo 👋");
        frames.push(protocol::update(&txn.encode_update_v1()).to_vec());
    }
    let sv = doc.transact().state_vector();
    frames.push(protocol::sync_step1(&sv).to_vec());
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    frames.push(protocol::sync_step2(state).to_vec());
    frames.push(vec![
        1, 11, 1, 123, 1, 7, b'{', b'"', b'u', b'"', b':', b'1', b'}',
    ]);
    frames.push(vec![3]);
    frames
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seed_frames();
    (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut frame = seeds[i].clone();
            for (at, byte, op) in edits {
                if frame.is_empty() {
                    frame.push(byte);
                    continue;
                }
                let at = at % frame.len();
                match op {
                    0 => frame[at] = byte,
                    1 => frame.insert(at, byte),
                    2 => frame.truncate(at),
                    _ => {
                        frame.remove(at);
                    }
                }
            }
            frame
        })
}

/// What the server does with a frame: decode, then apply any update to a board doc.
fn serve_frame(doc: &Doc, frame: &[u8]) {
    if let Ok(Incoming::Update { update, .. }) = protocol::decode(frame) {
        let mut txn = doc.transact_mut();
        let _ = txn.apply_update(update);
        let _ = txn.encode_update_v1();
    }
    // The doc stays readable and encodable whatever happened.
    let txn = doc.transact();
    let state = txn.encode_state_as_update_v1(&StateVector::default());
    assert!(Update::decode_v1(&state).is_ok());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..512)) {
        let doc = Doc::new();
        serve_frame(&doc, &frame);
    }

    #[test]
    fn mutated_real_frames_never_panic(frames in proptest::collection::vec(mutated(), 1..6)) {
        let doc = Doc::new();
        for frame in &frames {
            serve_frame(&doc, frame);
        }
    }
}

#[test]
fn unmutated_seeds_are_accepted() {
    let doc = Doc::new();
    for frame in seed_frames() {
        assert!(protocol::decode(&frame).is_ok(), "{frame:?}");
        serve_frame(&doc, &frame);
    }
    let objects = doc.get_or_insert_map("objects");
    assert_eq!(objects.len(&doc.transact()), 6);
}

/// Found by `mutated_real_frames_never_panic`: the update decodes, yrs keeps its unintegrated
/// part as pending data, and re-encoding that data fails. The decoder now refuses it.
#[test]
fn update_that_does_not_reencode_is_refused() {
    let frame = [
        0, 2, 46, 1, 2, 7, 9, 66, 0, 40, 1, 7, 111, 98, 106, 101, 99, 116, 115, 2, 107, 49, 1, 2,
        124, 63, 128, 0, 0, 63, 192, 0, 0, 68, 7, 1, 11, 104, 195, 169, 108, 108, 111, 32, 240,
        159, 145, 139, 0,
    ];
    assert!(matches!(
        protocol::decode(&frame),
        Err(protocol::ProtocolError::BadUpdate(_))
    ));
    let doc = Doc::new();
    serve_frame(&doc, &frame);
}
