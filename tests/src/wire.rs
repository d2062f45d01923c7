//! The y-websocket wire format (y-protocols sync and awareness, and the server's durable
//! acknowledgement), for every client here: the tests' [`TestClient`](crate::client::TestClient),
//! the load generator and the relay. One WebSocket binary message carries one message (the
//! server sends one over 64 KiB as fragments, which tungstenite reassembles).
//!
//! Frames are built by the server's own encoder ([`sync_server::protocol`], over `yrs::sync`);
//! [`parse`] reads them without copying (the load generator's hot path), and tests that want
//! decoded values use `yrs::sync::Message::decode_v1` with [`durable_ack`] for the one message
//! yrs does not know.
//!
//! | Starts with | Meaning | Payload |
//! |---|---|---|
//! | `0, 0` | SyncStep1 | `varUint8Array(state vector v1)` |
//! | `0, 1` | SyncStep2 | `varUint8Array(update v1)` |
//! | `0, 2` | Update | `varUint8Array(update v1)` |
//! | `1` | Awareness | `varUint8Array(awareness update)` |
//! | `3` | QueryAwareness | empty |
//! | `100` | durable ack (ours) | `varUint(count)` |

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use sync_server::protocol;
use yrs::block::ClientID;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::sync::{AwarenessUpdate, Message as YMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Update};

/// Message type: sync.
pub const MSG_SYNC: u8 = 0;
/// Message type: awareness.
pub const MSG_AWARENESS: u8 = 1;
/// Message type: query awareness.
pub const MSG_QUERY_AWARENESS: u8 = 3;
/// Sync sub-type: step 1 (state vector).
pub const SYNC_STEP1: u8 = 0;
/// Sync sub-type: step 2 (update answering a step 1).
pub const SYNC_STEP2: u8 = 1;
/// Sync sub-type: update.
pub const SYNC_UPDATE: u8 = 2;

/// One decoded incoming frame. Payloads borrow from the frame.
#[derive(Debug)]
pub enum Frame<'a> {
    /// `[0, 0, sv]`: the peer's state vector (v1 bytes).
    Step1(&'a [u8]),
    /// `[0, 1, update]`.
    Step2(&'a [u8]),
    /// `[0, 2, update]`.
    Update(&'a [u8]),
    /// `[1, ...]`.
    Awareness,
    /// `[3]`.
    QueryAwareness,
    /// Auth or anything else (custom types); ignored by y-websocket peers.
    Other(u8),
}

/// Writes `value` as a lib0 varUint.
pub fn write_var_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a lib0 varUint at `*pos`, advancing it.
fn read_var_u64(buf: &[u8], pos: &mut usize) -> anyhow::Result<u64> {
    let mut value: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*pos).context("truncated varUint")?;
        *pos += 1;
        if shift > 63 {
            bail!("varUint too long");
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

fn read_var_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> anyhow::Result<&'a [u8]> {
    let len = usize::try_from(read_var_u64(buf, pos)?).context("length too large")?;
    let end = pos.checked_add(len).context("length overflow")?;
    let bytes = buf.get(*pos..end).context("truncated varUint8Array")?;
    *pos = end;
    Ok(bytes)
}

/// Decodes the message type and, for sync messages, the payload.
pub fn parse(frame: &[u8]) -> anyhow::Result<Frame<'_>> {
    let (&kind, _) = frame.split_first().context("empty frame")?;
    Ok(match kind {
        MSG_SYNC => {
            let sub = *frame.get(1).context("sync message without sub-type")?;
            let mut pos = 2;
            let payload = read_var_bytes(frame, &mut pos)?;
            match sub {
                SYNC_STEP1 => Frame::Step1(payload),
                SYNC_STEP2 => Frame::Step2(payload),
                SYNC_UPDATE => Frame::Update(payload),
                other => bail!("unknown sync sub-type {other}"),
            }
        }
        MSG_AWARENESS => Frame::Awareness,
        MSG_QUERY_AWARENESS => Frame::QueryAwareness,
        other => Frame::Other(other),
    })
}

/// `[0, 0, sv]`.
pub fn step1_frame(sv: &StateVector) -> Bytes {
    protocol::sync_step1(sv)
}

/// `[0, 1, update]`.
pub fn step2_frame(update: Vec<u8>) -> Bytes {
    protocol::sync_step2(update)
}

/// `[0, 2, update]`.
pub fn update_frame(update: &[u8]) -> Bytes {
    protocol::update(update)
}

/// `[1, ...]`: an awareness update announcing each `(client, clock, json)`.
pub fn awareness_frame(entries: &[(ClientID, u32, &str)]) -> Vec<u8> {
    let clients = entries
        .iter()
        .map(|&(client, clock, json)| {
            let json = Arc::from(json);
            (client, AwarenessUpdateEntry { clock, json })
        })
        .collect::<HashMap<_, _>>();
    YMessage::Awareness(AwarenessUpdate { clients }).encode_v1()
}

/// The count of a durable acknowledgement `[100, count]`, or `None` for any other frame.
pub fn durable_ack(frame: &[u8]) -> Option<u64> {
    let mut pos = 0;
    if read_var_u64(frame, &mut pos).ok()? != protocol::MSG_DURABLE_ACK {
        return None;
    }
    read_var_u64(frame, &mut pos).ok()
}

/// WebSocket settings for the load generator and the relay: small buffers, as in the server.
///
/// tungstenite's default 128 KiB read buffer is zero-filled up to its capacity before every
/// `read` (`FrameCodec::read_in`); with many small frames that memset dominates CPU (measured:
/// 59% of the load generator's samples at 200 clients) and costs 128 KiB per connection.
pub fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
}

/// Decodes a state vector sent in a step 1.
pub fn decode_sv(bytes: &[u8]) -> anyhow::Result<StateVector> {
    StateVector::decode_v1(bytes).context("undecodable state vector")
}

/// For an update v1, the end (exclusive upper bound) of the clocks it inserts, per client id.
///
/// Unlike `Update::state_vector`, this also works for incremental updates whose blocks do not
/// start at clock 0. Tiny vectors: an update usually carries one client.
pub fn insertion_ends(update: &[u8]) -> anyhow::Result<Vec<(u64, u32)>> {
    let update = Update::decode_v1(update).context("undecodable update")?;
    let inserted = update.insertions(true);
    let mut ends = Vec::with_capacity(1);
    for (client, ranges) in inserted.iter() {
        if let Some(last) = ranges.iter().next_back() {
            ends.push((client.get(), last.end));
        }
    }
    Ok(ends)
}

/// The Hocuspocus dialect (`/v1/hocuspocus`, `@hocuspocus/provider` 4.x): every frame is
/// `varString(document name) • message`, where a message of type 0, 1 or 3 is a y-websocket frame
/// as above; the dialect adds Auth (2), Stateless (5), Close (7), SyncStatus (8) and the
/// socket-level ping `[9]` and pong `[10]`.
pub mod hocuspocus {
    use bytes::Bytes;

    use super::{read_var_bytes, read_var_u64, write_var_u64};

    /// Message type: auth.
    pub const AUTH: u64 = 2;
    /// Message type: stateless.
    pub const STATELESS: u64 = 5;
    /// Message type: close one document.
    pub const CLOSE: u64 = 7;
    /// Message type: SyncStatus.
    pub const SYNC_STATUS: u64 = 8;
    /// Socket-level ping, then pong.
    pub const PING: u8 = 9;
    pub const PONG: u8 = 10;

    fn write_string(out: &mut Vec<u8>, s: &[u8]) {
        write_var_u64(out, s.len() as u64);
        out.extend_from_slice(s);
    }

    /// `varString(name) • body`: a y-websocket frame (or any message body) for document `name`.
    pub fn doc_frame(name: &str, body: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(name.len() + body.len() + 2);
        write_string(&mut out, name.as_bytes());
        out.extend_from_slice(body);
        out.into()
    }

    /// The provider's Auth message: `[name][2][0][token][provider version]`.
    pub fn auth_frame(name: &str, token: &str) -> Bytes {
        let mut body = vec![2, 0];
        write_string(&mut body, token.as_bytes());
        write_string(&mut body, b"4.8.0");
        doc_frame(name, &body)
    }

    /// `[name][7]`: the provider detaches the document.
    pub fn close_frame(name: &str) -> Bytes {
        doc_frame(name, &[7])
    }

    /// `[name][5][payload]`.
    pub fn stateless_frame(name: &str, payload: &str) -> Bytes {
        let mut body = vec![5];
        write_string(&mut body, payload.as_bytes());
        doc_frame(name, &body)
    }

    /// A server frame, split.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ServerFrame<'a> {
        /// `[9]`.
        Ping,
        /// `[name][2][sub-type][string]`: 0 asks for a token (no string), 1 permission denied,
        /// 2 authenticated.
        Auth {
            name: &'a str,
            sub: u64,
            text: Option<&'a str>,
        },
        /// `[name][8][value]`.
        SyncStatus { name: &'a str, committed: bool },
        /// `[name][7][reason]`.
        Close { name: &'a str, reason: &'a str },
        /// `[name][5][payload]`.
        Stateless { name: &'a str, payload: &'a str },
        /// `[name] • y-websocket frame` (types 0, 1, 3).
        Yjs { name: &'a str, body: &'a [u8] },
    }

    fn string<'a>(frame: &'a [u8], pos: &mut usize) -> anyhow::Result<&'a str> {
        Ok(std::str::from_utf8(read_var_bytes(frame, pos)?)?)
    }

    /// Splits a frame the server sent.
    pub fn parse(frame: &[u8]) -> anyhow::Result<ServerFrame<'_>> {
        if frame == [PING] {
            return Ok(ServerFrame::Ping);
        }
        let mut pos = 0;
        let name = string(frame, &mut pos)?;
        let at = pos;
        let kind = read_var_u64(frame, &mut pos)?;
        Ok(match kind {
            AUTH => {
                let sub = read_var_u64(frame, &mut pos)?;
                let text = if pos < frame.len() {
                    Some(string(frame, &mut pos)?)
                } else {
                    None
                };
                ServerFrame::Auth { name, sub, text }
            }
            SYNC_STATUS => ServerFrame::SyncStatus {
                name,
                committed: read_var_u64(frame, &mut pos)? == 1,
            },
            CLOSE => ServerFrame::Close {
                name,
                reason: string(frame, &mut pos)?,
            },
            STATELESS => ServerFrame::Stateless {
                name,
                payload: string(frame, &mut pos)?,
            },
            _ => ServerFrame::Yjs {
                name,
                body: &frame[at..],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{Any, Doc, Map, MapPrelim, ReadTxn, Transact};

    #[test]
    fn varuint_round_trip() {
        let mut out = Vec::new();
        write_var_u64(&mut out, 300);
        assert_eq!(out, [172, 2]);
        let mut pos = 0;
        assert_eq!(read_var_u64(&out, &mut pos).ok(), Some(300));
    }

    #[test]
    fn empty_step1_matches_yjs() {
        assert_eq!(step1_frame(&StateVector::default())[..], [0, 0, 1, 0]);
    }

    #[test]
    fn durable_ack_round_trip() {
        assert_eq!(durable_ack(&protocol::durable_ack(300)), Some(300));
        assert_eq!(durable_ack(&update_frame(&[0, 0])), None);
        assert_eq!(durable_ack(&[100]), None);
    }

    #[test]
    fn insertion_ends_of_incremental_updates() {
        let doc = Doc::new();
        let objects = doc.get_or_insert_map("objects");
        let note = {
            let mut txn = doc.transact_mut();
            objects.insert(
                &mut txn,
                "n",
                MapPrelim::from([("pos", Any::from(vec![0.0, 0.0]))]),
            )
        };
        let mut last = 0;
        for i in 0..3 {
            let update = {
                let mut txn = doc.transact_mut();
                note.insert(&mut txn, "pos", Any::from(vec![f64::from(i), 1.5]));
                txn.encode_update_v1()
            };
            let sv_end = doc.transact().state_vector().get(&doc.client_id());
            let ends = insertion_ends(&update).expect("decodes");
            assert_eq!(ends, vec![(doc.client_id().get(), sv_end)]);
            assert!(sv_end > last);
            last = sv_end;
            let frame = update_frame(&update);
            assert!(matches!(parse(&frame), Ok(Frame::Update(u)) if u == update.as_slice()));
        }
    }
}
