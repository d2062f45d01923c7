//! The y-websocket wire protocol: decoding client frames and encoding server frames.
//!
//! Pure functions, no I/O. One WebSocket binary frame carries one message (y-websocket):
//! `0` sync (`0` step 1, `1` step 2, `2` update), `1` awareness, `2` auth, `3` query awareness.
//! The server adds one message of its own, [`MSG_DURABLE_ACK`], sent only to connections that
//! asked for it (`?ack=1`); see `PROTOCOL.md`. [`MSG_STATELESS`] never reaches a y-websocket
//! client: board actors queue it only for connections that take stateless messages (Hocuspocus
//! documents), whose writer frames it in that dialect (`ws::hocuspocus`).

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use crdt_schema::guard::{GuardError, Scanned};
use yrs::encoding::write::Write;
use yrs::sync::{Awareness, AwarenessUpdate, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{ReadTxn, StateVector, Update};

/// Message type of the server's durable acknowledgement.
pub const MSG_DURABLE_ACK: u64 = 100;

/// Message type of a stateless message as board actors queue it: `varUint(101) •
/// varString(payload)`. Internal: only the Hocuspocus writer reads it, and sends the dialect's
/// own Stateless message.
pub const MSG_STATELESS: u8 = 101;

/// A decoded client message.
#[derive(Debug)]
pub enum Incoming {
    /// The client's state vector: answer with the updates it lacks.
    SyncStep1(StateVector),
    /// Document content (a step 2 answer or a live update), decoded, with its raw bytes.
    Update {
        /// The decoded update.
        update: Update,
        /// The update exactly as received, Yjs v1.
        raw: Vec<u8>,
        /// What the guard read of it, for the board to check how it nests there.
        scanned: Scanned,
    },
    /// An awareness update, decoded, with the frame it came in (to forward as is).
    Awareness {
        /// The decoded update.
        update: AwarenessUpdate,
    },
    /// A request for every awareness state.
    QueryAwareness,
    /// An auth message; y-websocket clients never send one, and it carries nothing we use.
    Auth,
}

/// Why a client frame was refused. Each maps to a close code (see `PROTOCOL.md`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame is not a y-protocols message.
    #[error("undecodable message: {0}")]
    Undecodable(String),
    /// The frame is a message type this server does not accept from clients.
    #[error("unsupported message type {0}")]
    UnsupportedType(u64),
    /// The message is well-formed but its Yjs update does not decode.
    #[error("update does not decode: {0}")]
    BadUpdate(String),
    /// The update nests values or shared types deeper than
    /// [`crdt_schema::guard::MAX_NESTING`] levels.
    #[error("{0}")]
    TooDeep(GuardError),
}

impl From<GuardError> for ProtocolError {
    fn from(e: GuardError) -> Self {
        match e {
            GuardError::Malformed(why) => ProtocolError::BadUpdate(why.to_owned()),
            deep => ProtocolError::TooDeep(deep),
        }
    }
}

/// Decodes one client frame. Never panics: yrs decoders are run under `catch_unwind`, since
/// debug builds of yrs assert on client ids past 2^53.
pub fn decode(frame: &[u8]) -> Result<Incoming, ProtocolError> {
    let Some(&tag) = frame.first() else {
        return Err(ProtocolError::Undecodable("empty frame".into()));
    };
    // Only the four y-protocols types are decoded by yrs; anything else (including yrs'
    // `Custom` messages) is refused here rather than misread.
    if tag > 3 {
        return Err(ProtocolError::UnsupportedType(u64::from(tag)));
    }
    check_declared_counts(frame)?;
    let message = catch_unwind(|| Message::decode_v1(frame))
        .map_err(|_| ProtocolError::Undecodable("decoder panicked".into()))?
        .map_err(|e| ProtocolError::Undecodable(e.to_string()))?;
    match message {
        Message::Sync(SyncMessage::SyncStep1(sv)) => Ok(Incoming::SyncStep1(sv)),
        Message::Sync(SyncMessage::SyncStep2(raw) | SyncMessage::Update(raw)) => {
            let (update, scanned) = decode_scanned(&raw)?;
            Ok(Incoming::Update {
                update,
                raw,
                scanned,
            })
        }
        Message::Awareness(update) => Ok(Incoming::Awareness { update }),
        Message::AwarenessQuery => Ok(Incoming::QueryAwareness),
        Message::Auth(_) => Ok(Incoming::Auth),
        Message::Custom(tag, _) => Err(ProtocolError::UnsupportedType(u64::from(tag))),
    }
}

/// Refuses a state vector (sync step 1) or an awareness update that declares more entries than
/// its bytes can hold. yrs reserves a hash map for every declared entry before reading one, and
/// a hash map's reservation writes each slot's control byte: ten bytes declaring 2^30 entries
/// would make it touch a gigabyte. Anything else is left for the decoder to judge.
fn check_declared_counts(frame: &[u8]) -> Result<(), ProtocolError> {
    // (offset of the varUint8Array holding the entries, least bytes an entry takes)
    let (start, least) = match frame {
        [0, 0, ..] => (2, 2), // sync step 1: (client, clock) pairs
        [1, ..] => (1, 3),    // awareness: client, clock, JSON string
        _ => return Ok(()),
    };
    let mut at = start;
    let Some(len) = read_var(frame, &mut at) else {
        return Ok(());
    };
    let body_end = at.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
    let Some(count) = read_var(frame, &mut at) else {
        return Ok(());
    };
    let left = body_end.min(frame.len()).saturating_sub(at) as u64;
    if count.saturating_mul(least) > left {
        return Err(ProtocolError::Undecodable(
            "a count past the end of the message".into(),
        ));
    }
    Ok(())
}

/// lib0's varUint at `*at`, advancing it; `None` if it is truncated or too long.
fn read_var(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let (mut num, mut shift) = (0u64, 0u32);
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        num |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(num);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Decodes a Yjs update v1 without ever panicking or overflowing the stack, and only if yrs can
/// read back its own encoding of it.
///
/// The bytes are checked first, without recursion, for nesting deeper than
/// [`crdt_schema::guard::MAX_NESTING`] (yrs decodes values recursively, and a deeply nested one
/// would overflow the stack and abort the process). The check sees this update alone; the
/// board actor checks it again against the board's own nesting before applying it.
///
/// yrs accepts some malformed updates (a block whose declared length disagrees with its
/// content) and then re-encodes them into bytes it cannot decode. Kept as pending data, such an
/// update makes every later `encode_state_as_update_v1` of the board panic. Checking the round
/// trip costs about 0.6 µs for a typical 30-byte drag update.
pub fn decode_update(raw: &[u8]) -> Result<Update, ProtocolError> {
    crdt_schema::guard::check_update_v1(raw)?;
    decode_checked(raw)
}

/// [`decode_update`] for an update that will join a board, which checks how its shared types
/// nest there: here only its values are checked, and what was read of it is returned for that.
pub fn decode_scanned(raw: &[u8]) -> Result<(Update, Scanned), ProtocolError> {
    let scanned = crdt_schema::guard::scan_update_v1(raw)?;
    Ok((decode_checked(raw)?, scanned))
}

/// Decodes bytes the guard passed, checking that yrs can read back its own encoding of them.
fn decode_checked(raw: &[u8]) -> Result<Update, ProtocolError> {
    let update = decode_v1_unwinding(raw)?;
    let encoded = update.encode_v1();
    decode_v1_unwinding(&encoded).map_err(|_| {
        ProtocolError::BadUpdate("update is inconsistent: it does not re-encode".into())
    })?;
    Ok(update)
}

fn decode_v1_unwinding(raw: &[u8]) -> Result<Update, ProtocolError> {
    catch_unwind(AssertUnwindSafe(|| Update::decode_v1(raw)))
        .map_err(|_| ProtocolError::BadUpdate("decoder panicked".into()))?
        .map_err(|e| ProtocolError::BadUpdate(e.to_string()))
}

/// `SyncStep1`: the server's state vector.
pub fn sync_step1(sv: &StateVector) -> Bytes {
    Message::Sync(SyncMessage::SyncStep1(sv.clone()))
        .encode_v1()
        .into()
}

/// Bytes kept free in front of an update encoded in place: the sync and step 2 tags and the
/// update's length (a varint of at most 10 bytes).
const STEP2_GAP: usize = 12;

/// `SyncStep2` of what `txn` holds beyond `sv`, encoded in place: the update is written once,
/// after a gap the message header then fills, and the buffer's spare capacity is given back.
/// A 50 MB board's answer so costs 50 MB, not the update plus a copy with the header (and up
/// to twice that while it grows). Also returns the update's length.
pub fn sync_step2_of<T: ReadTxn>(txn: &T, sv: &StateVector) -> (Bytes, usize) {
    let mut encoder = EncoderV1::new();
    encoder.write_all(&[0; STEP2_GAP]);
    txn.encode_state_as_update(sv, &mut encoder);
    let mut buf = encoder.to_vec();
    let update_len = buf.len() - STEP2_GAP;
    let mut header = Vec::with_capacity(STEP2_GAP);
    header.write_var(0u8); // sync
    header.write_var(1u8); // step 2
    header.write_var(update_len);
    let start = STEP2_GAP - header.len();
    buf[start..STEP2_GAP].copy_from_slice(&header);
    buf.shrink_to_fit();
    (Bytes::from(buf).slice(start..), update_len)
}

/// `SyncStep2`: the updates the peer lacks.
pub fn sync_step2(update: Vec<u8>) -> Bytes {
    Message::Sync(SyncMessage::SyncStep2(update))
        .encode_v1()
        .into()
}

/// A live document update.
pub fn update(update: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(update.len() + 6);
    out.write_var(0u8);
    out.write_var(2u8);
    out.write_buf(update);
    out.into()
}

/// An awareness message.
pub fn awareness(update: AwarenessUpdate) -> Bytes {
    Message::Awareness(update).encode_v1().into()
}

/// Every awareness state the server holds, or `None` if it holds none.
pub fn awareness_all(awareness: &Awareness) -> Option<Bytes> {
    let update = awareness.update().ok()?;
    (!update.clients.is_empty()).then(|| self::awareness(update))
}

/// y-protocols' auth message saying permission was denied, with a reason. y-websocket
/// clients log it (`Permission denied to access ...`) and stay connected.
pub fn permission_denied(reason: &str) -> Bytes {
    Message::Auth(Some(reason.to_owned())).encode_v1().into()
}

/// The durable acknowledgement: the first `count` document messages this connection sent are
/// committed to the database.
pub fn durable_ack(count: u64) -> Bytes {
    let mut out = Vec::with_capacity(12);
    out.write_var(MSG_DURABLE_ACK);
    out.write_var(count);
    out.into()
}

/// A stateless message with `payload`, as board actors queue it ([`MSG_STATELESS`]).
pub fn stateless(payload: &str) -> Bytes {
    let mut out = Vec::with_capacity(payload.len() + 6);
    out.push(MSG_STATELESS);
    out.write_string(payload);
    out.into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use yrs::{Doc, Map, ReadTxn, Transact};

    #[test]
    fn a_step2_encoded_in_place_is_the_usual_message_without_spare_capacity() {
        for text_len in [0usize, 3, 200, 20_000] {
            let doc = Doc::new();
            let text = doc.get_or_insert_text("t");
            yrs::Text::insert(&text, &mut doc.transact_mut(), 0, &"y".repeat(text_len));
            let txn = doc.transact();
            for sv in [StateVector::default(), txn.state_vector()] {
                let update = txn.encode_state_as_update_v1(&sv);
                let (frame, len) = sync_step2_of(&txn, &sv);
                assert_eq!(len, update.len());
                assert_eq!(frame, sync_step2(update), "text of {text_len}");
            }
        }
    }

    #[test]
    fn decodes_the_bytes_yjs_sends() {
        // From notes: Yjs 13.6.33 step 1 for an empty doc, and for client 123 with one op.
        assert!(matches!(decode(&[0, 0, 1, 0]), Ok(Incoming::SyncStep1(sv)) if sv.is_empty()));
        let Ok(Incoming::SyncStep1(sv)) = decode(&[0, 0, 3, 1, 123, 1]) else {
            panic!("step 1")
        };
        assert_eq!(sv.get(&yrs::block::ClientID::new(123)), 1);
        assert!(
            matches!(decode(&[0, 1, 2, 0, 0]), Ok(Incoming::Update { raw, .. }) if raw == [0, 0])
        );
        assert!(matches!(decode(&[3]), Ok(Incoming::QueryAwareness)));
        let aw = [
            1, 11, 1, 123, 1, 7, b'{', b'"', b'u', b'"', b':', b'1', b'}',
        ];
        assert!(
            matches!(decode(&aw), Ok(Incoming::Awareness { update }) if update.clients.len() == 1)
        );
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        assert!(matches!(decode(&[]), Err(ProtocolError::Undecodable(_))));
        assert_eq!(
            decode(&[7, 1, 2]).unwrap_err(),
            ProtocolError::UnsupportedType(7)
        );
        assert!(matches!(
            decode(&[0, 9]),
            Err(ProtocolError::Undecodable(_))
        ));
        assert!(matches!(
            decode(&[0, 2, 200]),
            Err(ProtocolError::Undecodable(_))
        ));
        // A well-framed update whose payload is not a Yjs update.
        assert!(matches!(
            decode(&[0, 2, 3, 0xff, 0xff, 0xff]),
            Err(ProtocolError::BadUpdate(_))
        ));
    }

    #[test]
    fn counts_past_the_end_are_refused_before_yrs_reserves_them() {
        // Sync step 1 with a state vector declaring 2^30 entries in 6 bytes.
        let mut sv = vec![0, 0, 5];
        sv.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
        assert!(matches!(decode(&sv), Err(ProtocolError::Undecodable(_))));
        // Awareness declaring 2^30 clients.
        let mut aw = vec![1, 5];
        aw.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
        assert!(matches!(decode(&aw), Err(ProtocolError::Undecodable(_))));
        // Honest ones pass.
        assert!(matches!(
            decode(&[0, 0, 3, 1, 123, 1]),
            Ok(Incoming::SyncStep1(_))
        ));
    }

    #[test]
    fn encodes_round_trip() {
        let doc = Doc::new();
        let map = doc.get_or_insert_map("objects");
        map.insert(&mut doc.transact_mut(), "a", 1);
        let state = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let frame = update(&state);
        let Ok(Incoming::Update { raw, .. }) = decode(&frame) else {
            panic!("update")
        };
        assert_eq!(raw, state);
        assert_eq!(&durable_ack(300)[..], &[100, 172, 2]);
        let sv = doc.transact().state_vector();
        assert!(matches!(decode(&sync_step1(&sv)), Ok(Incoming::SyncStep1(got)) if got == sv));
    }
}
