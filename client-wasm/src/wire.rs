//! The y-websocket frames this client sends and receives, with the server's durable
//! acknowledgement (`PROTOCOL.md`, "Messages").
//!
//! Pure functions. Frames from the server are peer input: counts are checked against the bytes
//! that hold them before yrs reserves memory for them, and updates are checked for nesting
//! depth ([`crdt_schema::guard`]) before yrs decodes them recursively.

use crdt_schema::guard::{self, GuardError};
use yrs::StateVector;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;
use yrs::sync::AwarenessUpdate;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;
const MSG_DURABLE_ACK: u8 = 100;
const SYNC_STEP1: u8 = 0;
const SYNC_STEP2: u8 = 1;
const SYNC_UPDATE: u8 = 2;

/// A frame the server sent.
#[derive(Debug)]
pub enum ServerFrame {
    /// The server's state vector: answer with what it lacks.
    SyncStep1(StateVector),
    /// Updates this client lacked (the answer to its step 1), Yjs update v1.
    SyncStep2(Vec<u8>),
    /// A live update, Yjs update v1.
    Update(Vec<u8>),
    /// Awareness states.
    Awareness(AwarenessUpdate),
    /// The server asks for every awareness state this client knows.
    QueryAwareness,
    /// Permission denied: a `read` connection's document content was refused.
    Denied(String),
    /// The first `count` document messages this connection sent are durable.
    Ack(u64),
}

/// Why a server frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Empty, truncated, of an unknown type, or with a count its bytes cannot hold.
    #[error("not a y-protocols message: {0}")]
    Undecodable(&'static str),
    /// The update inside does not decode or nests too deeply.
    #[error("update refused: {0}")]
    BadUpdate(GuardError),
}

/// Decodes one frame from the server.
pub fn decode(frame: &[u8]) -> Result<ServerFrame, WireError> {
    let mut cur = Cursor::new(frame);
    let tag = read_u8(&mut cur)?;
    match tag {
        MSG_SYNC => {
            let sub = read_u8(&mut cur)?;
            let body = cur
                .read_buf()
                .map_err(|_| WireError::Undecodable("truncated sync message"))?;
            match sub {
                SYNC_STEP1 => {
                    check_count(body, 2)?;
                    let sv = StateVector::decode_v1(body)
                        .map_err(|_| WireError::Undecodable("bad state vector"))?;
                    Ok(ServerFrame::SyncStep1(sv))
                }
                SYNC_STEP2 | SYNC_UPDATE => {
                    guard::check_update_v1(body).map_err(WireError::BadUpdate)?;
                    let update = body.to_vec();
                    Ok(if sub == SYNC_STEP2 {
                        ServerFrame::SyncStep2(update)
                    } else {
                        ServerFrame::Update(update)
                    })
                }
                _ => Err(WireError::Undecodable("unknown sync message")),
            }
        }
        MSG_AWARENESS => {
            let body = cur
                .read_buf()
                .map_err(|_| WireError::Undecodable("truncated awareness message"))?;
            check_count(body, 3)?;
            let update = AwarenessUpdate::decode_v1(body)
                .map_err(|_| WireError::Undecodable("bad awareness update"))?;
            Ok(ServerFrame::Awareness(update))
        }
        MSG_AUTH => {
            // y-protocols: 0 = permission denied, followed by a reason.
            let sub = read_u8(&mut cur)?;
            if sub != 0 {
                return Err(WireError::Undecodable("unknown auth message"));
            }
            let reason = cur
                .read_string()
                .map_err(|_| WireError::Undecodable("bad auth reason"))?;
            Ok(ServerFrame::Denied(reason.to_owned()))
        }
        MSG_QUERY_AWARENESS => Ok(ServerFrame::QueryAwareness),
        MSG_DURABLE_ACK => {
            let count: u64 = cur
                .read_var()
                .map_err(|_| WireError::Undecodable("bad acknowledgement"))?;
            Ok(ServerFrame::Ack(count))
        }
        _ => Err(WireError::Undecodable("unknown message type")),
    }
}

fn read_u8(cur: &mut Cursor<'_>) -> Result<u8, WireError> {
    let v: u64 = cur
        .read_var()
        .map_err(|_| WireError::Undecodable("truncated message"))?;
    u8::try_from(v).map_err(|_| WireError::Undecodable("unknown message type"))
}

/// Refuses a body whose leading count declares more entries (of at least `least` bytes each)
/// than the body holds: yrs reserves a map slot per declared entry before reading one.
fn check_count(body: &[u8], least: u64) -> Result<(), WireError> {
    let mut cur = Cursor::new(body);
    let count: u64 = cur
        .read_var()
        .map_err(|_| WireError::Undecodable("truncated count"))?;
    let left = (body.len() - cur.next) as u64;
    if count.saturating_mul(least) > left {
        return Err(WireError::Undecodable(
            "a count past the end of the message",
        ));
    }
    Ok(())
}

/// Sync step 1 with this replica's state vector.
pub fn sync_step1(sv: &StateVector) -> Vec<u8> {
    sync(SYNC_STEP1, &sv.encode_v1())
}

/// Sync step 2: what the server lacks.
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    sync(SYNC_STEP2, update)
}

/// A live update.
pub fn update(update: &[u8]) -> Vec<u8> {
    sync(SYNC_UPDATE, update)
}

/// An awareness update.
pub fn awareness(update: &AwarenessUpdate) -> Vec<u8> {
    let body = update.encode_v1();
    let mut out = Vec::with_capacity(body.len() + 6);
    out.write_var(u64::from(MSG_AWARENESS));
    out.write_buf(&body);
    out
}

fn sync(sub: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.write_var(u64::from(MSG_SYNC));
    out.write_var(u64::from(sub));
    out.write_buf(body);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use yrs::{Doc, GetString, Map, ReadTxn, Text, Transact};

    fn some_update() -> Vec<u8> {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "hi");
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn round_trips_the_sync_frames() {
        let u = some_update();
        let ServerFrame::Update(got) = decode(&update(&u)).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(got, u);
        let ServerFrame::SyncStep2(got) = decode(&sync_step2(&u)).unwrap() else {
            panic!("not a step 2")
        };
        assert_eq!(got, u);
        let doc = Doc::new();
        yrs::Update::decode_v1(&got)
            .map(|up| doc.transact_mut().apply_update(up))
            .unwrap()
            .unwrap();
        let text = doc.get_or_insert_text("t");
        assert_eq!(text.get_string(&doc.transact()), "hi");
        let sv = doc.transact().state_vector();
        let ServerFrame::SyncStep1(got) = decode(&sync_step1(&sv)).unwrap() else {
            panic!("not a step 1")
        };
        assert_eq!(got, sv);
    }

    #[test]
    fn decodes_acknowledgements_and_denials() {
        assert!(matches!(
            decode(&[100, 0xac, 0x02]),
            Ok(ServerFrame::Ack(300))
        ));
        let mut denied = vec![2, 0];
        denied.write_string("read-only");
        assert!(matches!(decode(&denied), Ok(ServerFrame::Denied(r)) if r == "read-only"));
        assert!(matches!(decode(&[3]), Ok(ServerFrame::QueryAwareness)));
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        for frame in [
            &[][..],
            &[0],
            &[0, 9, 0],
            &[0, 0, 5, 1],
            &[7],
            &[2, 1],
            &[100],
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            assert!(decode(frame).is_err(), "{frame:?} decoded");
        }
    }

    #[test]
    fn refuses_counts_the_bytes_cannot_hold() {
        // A state vector declaring 2^28 entries in four bytes.
        let frame = [0, 0, 5, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert_eq!(
            decode(&frame).unwrap_err(),
            WireError::Undecodable("a count past the end of the message")
        );
        let frame = [1, 5, 0x80, 0x80, 0x80, 0x80, 0x01];
        assert!(decode(&frame).is_err());
    }

    #[test]
    fn refuses_updates_nested_too_deeply() {
        let doc = Doc::new();
        let root = doc.get_or_insert_map("m");
        {
            let mut txn = doc.transact_mut();
            let mut map = root.insert(&mut txn, "k", yrs::MapPrelim::default());
            for _ in 0..100 {
                map = map.insert(&mut txn, "k", yrs::MapPrelim::default());
            }
        }
        let u = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert!(matches!(decode(&update(&u)), Err(WireError::BadUpdate(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode(&bytes);
        }
    }
}
