//! What nodes say to each other through Redis, and its encoding.
//!
//! Every message is a hint: the truth is in the database. An update message carries what its
//! node committed (the board's sequence numbers and the updates), published after the commit;
//! a node that misses one reads the rows from the database.
//!
//! Encoding (lib0 varints and length-prefixed buffers, as Yjs frames use): a version byte
//! ([`VERSION`]), a kind byte, the sender's node id, the time it was sent (microseconds since
//! the Unix epoch, for the lag metric), then the kind's fields. The board is the channel's
//! name, not part of the message. A message that does not decode is dropped and counted: it
//! can cost a board a delay until the next check of the database, never data.

use bytes::Bytes;
use yrs::encoding::read::{Cursor, Read};
use yrs::encoding::write::Write;

use crate::ids::Seq;

/// The encoding's version. A node drops messages of another version (counted), so nodes of
/// two versions side by side (a rolling upgrade) fall back on the database, never misread.
pub(crate) const VERSION: u8 = 1;

/// Longest node id, in bytes.
pub(crate) const MAX_NODE_ID_LEN: usize = 64;

/// Most row ranges or updates one message may carry (a commit group of one board).
const MAX_PARTS: u64 = 1 << 16;

/// A node's name, as given by `--node-id` (checked: 1 to 64 bytes of `[A-Za-z0-9._-]`).
pub(crate) type NodeId = std::sync::Arc<str>;

/// Checks a node id.
pub(crate) fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// Rows the sender committed for the board: each `(last, count)` is rows
    /// `last - count + 1 ..= last`, ascending; `updates` is what they hold (merged or not), or
    /// nothing when that was too large to carry (the receivers read the rows).
    Update {
        rows: Vec<(Seq, u32)>,
        updates: Vec<Bytes>,
    },
    /// An awareness update (the y-protocols payload, without the message type) of the
    /// sender's connections, or of the board's own entry (the assistant) on that node.
    Awareness(Bytes),
    /// The sender just started holding the board: others answer with their connections'
    /// awareness states.
    AwarenessQuery,
    /// The sender deleted the board.
    Deleted,
    /// The sender is alive (on the nodes channel).
    Heartbeat,
    /// The sender is shutting down (on the nodes channel): its presence goes at once.
    Leaving,
}

/// A message with its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) node: NodeId,
    /// When it was sent, in microseconds since the Unix epoch (the sender's clock).
    pub(crate) sent_at: u64,
    pub(crate) body: Body,
}

/// Why a message was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("message of encoding version {0}, this node speaks {VERSION}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("bad node id")]
    NodeId,
    #[error("a message of {0} parts (at most {MAX_PARTS})")]
    TooManyParts(u64),
    #[error("a row range that does not fit the board's sequence")]
    Rows,
    #[error("truncated or malformed message")]
    Malformed,
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

impl From<yrs::encoding::read::Error> for DecodeError {
    fn from(_: yrs::encoding::read::Error) -> Self {
        Self::Malformed
    }
}

const UPDATE: u8 = 1;
const AWARENESS: u8 = 2;
const AWARENESS_QUERY: u8 = 3;
const DELETED: u8 = 4;
const HEARTBEAT: u8 = 5;
const LEAVING: u8 = 6;

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.payload_len());
        out.write_u8(VERSION);
        out.write_u8(match self.body {
            Body::Update { .. } => UPDATE,
            Body::Awareness(_) => AWARENESS,
            Body::AwarenessQuery => AWARENESS_QUERY,
            Body::Deleted => DELETED,
            Body::Heartbeat => HEARTBEAT,
            Body::Leaving => LEAVING,
        });
        out.write_string(&self.node);
        out.write_var(self.sent_at);
        match &self.body {
            Body::Update { rows, updates } => {
                out.write_var(rows.len() as u64);
                for (last, count) in rows {
                    out.write_var(*last as u64);
                    out.write_var(*count);
                }
                out.write_var(updates.len() as u64);
                for update in updates {
                    out.write_buf(update);
                }
            }
            Body::Awareness(update) => out.write_buf(update),
            Body::AwarenessQuery | Body::Deleted | Body::Heartbeat | Body::Leaving => {}
        }
        out
    }

    fn payload_len(&self) -> usize {
        match &self.body {
            Body::Update { rows, updates } => {
                rows.len() * 8 + updates.iter().map(|u| u.len() + 4).sum::<usize>()
            }
            Body::Awareness(update) => update.len() + 4,
            _ => 0,
        }
    }

    /// Decodes a message; bounded by `bytes` (every length is checked against what is left).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(bytes);
        let version = cur.read_u8()?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = cur.read_u8()?;
        let node = cur.read_string()?;
        if !valid_node_id(node) {
            return Err(DecodeError::NodeId);
        }
        let node: NodeId = node.into();
        let sent_at: u64 = cur.read_var()?;
        let body = match kind {
            UPDATE => {
                let n = parts(&mut cur)?;
                let mut rows = Vec::with_capacity(n.min(64));
                let mut floor = 0;
                for _ in 0..n {
                    let last: u64 = cur.read_var()?;
                    let count: u32 = cur.read_var()?;
                    let last = Seq::try_from(last).map_err(|_| DecodeError::Rows)?;
                    // Ascending, non-empty, not below 1, not overlapping.
                    if count == 0 || last - Seq::from(count) < floor {
                        return Err(DecodeError::Rows);
                    }
                    floor = last;
                    rows.push((last, count));
                }
                let n = parts(&mut cur)?;
                let mut updates = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    updates.push(Bytes::copy_from_slice(cur.read_buf()?));
                }
                Body::Update { rows, updates }
            }
            AWARENESS => Body::Awareness(Bytes::copy_from_slice(cur.read_buf()?)),
            AWARENESS_QUERY => Body::AwarenessQuery,
            DELETED => Body::Deleted,
            HEARTBEAT => Body::Heartbeat,
            LEAVING => Body::Leaving,
            other => return Err(DecodeError::Kind(other)),
        };
        let left = bytes.len() - cur.next;
        if left != 0 {
            return Err(DecodeError::Trailing(left));
        }
        Ok(Self {
            node,
            sent_at,
            body,
        })
    }
}

fn parts(cur: &mut Cursor<'_>) -> Result<usize, DecodeError> {
    let n: u64 = cur.read_var()?;
    if n > MAX_PARTS {
        return Err(DecodeError::TooManyParts(n));
    }
    // Each part takes at least one byte: a count past what is left is a lie.
    if n as usize > cur.buf.len() - cur.next {
        return Err(DecodeError::Malformed);
    }
    Ok(n as usize)
}

/// Microseconds since the Unix epoch, now.
pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn message(body: Body) -> Message {
        Message {
            node: "node-a".into(),
            sent_at: 1_733_000_000_000_000,
            body,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let bodies = [
            Body::Update {
                rows: vec![(3, 2), (7, 1)],
                updates: vec![Bytes::from_static(&[0, 0]), Bytes::from_static(&[1, 2, 3])],
            },
            Body::Awareness(Bytes::from_static(&[1, 9, 9])),
            Body::AwarenessQuery,
            Body::Deleted,
            Body::Heartbeat,
            Body::Leaving,
        ];
        for body in bodies {
            let m = message(body);
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let good = message(Body::Update {
            rows: vec![(5, 5)],
            updates: vec![Bytes::from_static(&[0, 0])],
        })
        .encode();
        assert_eq!(Message::decode(&[]), Err(DecodeError::Malformed));
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(Message::decode(&v2), Err(DecodeError::Version(2)));
        let mut kind = good.clone();
        kind[1] = 99;
        assert!(matches!(Message::decode(&kind), Err(DecodeError::Kind(99))));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Message::decode(&trailing), Err(DecodeError::Trailing(1)));
        assert_eq!(
            Message::decode(&good[..good.len() - 1]),
            Err(DecodeError::Malformed)
        );
        // Rows below 1, and overlapping ranges.
        for rows in [vec![(2, 3)], vec![(5, 2), (5, 1)], vec![(5, 0)]] {
            let m = message(Body::Update {
                rows,
                updates: vec![],
            });
            assert_eq!(Message::decode(&m.encode()), Err(DecodeError::Rows));
        }
        let bad_node = Message {
            node: "a b".into(),
            ..message(Body::Heartbeat)
        };
        assert_eq!(
            Message::decode(&bad_node.encode()),
            Err(DecodeError::NodeId)
        );
    }

    #[test]
    fn a_count_larger_than_the_message_is_refused_before_allocating() {
        let mut out = Vec::new();
        out.write_u8(VERSION);
        out.write_u8(UPDATE);
        out.write_string("n");
        out.write_var(0u64);
        out.write_var(60_000u64);
        assert_eq!(Message::decode(&out), Err(DecodeError::Malformed));
        let mut out2 = out[..out.len() - 3].to_vec();
        out2.write_var(u64::MAX);
        assert!(matches!(
            Message::decode(&out2),
            Err(DecodeError::TooManyParts(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(flip in 0usize..64, value: u8) {
            let mut m = message(Body::Update {
                rows: vec![(3, 2), (9, 4)],
                updates: vec![Bytes::from_static(&[1, 2, 3, 4]), Bytes::from_static(&[0, 0])],
            }).encode();
            let at = flip % m.len();
            m[at] = value;
            let _ = Message::decode(&m);
        }
    }
}
