//! The Hocuspocus dialect's framing, byte by byte (`@hocuspocus/provider` 4.x): decoding what a
//! provider sends and encoding what the server sends. Pure functions, no I/O.
//!
//! Every frame but the socket-level ping and pong starts with `varString(documentName)`, then a
//! message type (`varUint`):
//!
//! | type | from the provider | from the server |
//! |---|---|---|
//! | 0, 1, 3 | y-protocols sync, awareness, query awareness (as y-websocket sends them) | the same |
//! | 2 | Auth: `0` (Token) `varString(token)` [`varString(provider version)`] | Auth: `0` (asks for a fresh token), `1` (PermissionDenied) `varString(reason)`, `2` (Authenticated) `varString("read-write" or "readonly")` |
//! | 5 | Stateless `varString(payload)` | the same |
//! | 7 | Close this document (no payload) | Close this document `varString(reason)` |
//! | 8 | — | SyncStatus `varUint(1 or 0)`: one per document message, 1 once it is committed |
//!
//! A frame that is the single byte `9` is a ping, `10` a pong (no document name).
//!
//! The body of types 0, 1 and 3 is exactly a y-websocket frame, decoded by
//! [`crate::protocol::decode`] (depth-bounded, never panicking). Auth is read here, never by
//! `yrs::sync::Message`: yrs reads sub-tag 0 as "permission denied", where Hocuspocus means a
//! token.

use bytes::Bytes;
use yrs::encoding::write::Write;

/// Message types of the dialect.
pub(crate) mod tag {
    pub(crate) const SYNC: u8 = 0;
    pub(crate) const AWARENESS: u8 = 1;
    pub(crate) const AUTH: u8 = 2;
    pub(crate) const QUERY_AWARENESS: u8 = 3;
    pub(crate) const STATELESS: u8 = 5;
    pub(crate) const CLOSE: u8 = 7;
    pub(crate) const SYNC_STATUS: u8 = 8;
    pub(crate) const PING: u8 = 9;
    pub(crate) const PONG: u8 = 10;
    /// Auth sub-type: a token (from the provider), or a request for one (from the server).
    pub(crate) const AUTH_TOKEN: u8 = 0;
    pub(crate) const AUTH_PERMISSION_DENIED: u8 = 1;
    pub(crate) const AUTH_AUTHENTICATED: u8 = 2;
}

/// Longest document name accepted, in bytes: a board id (128) and, with the provider's
/// `sessionAwareness`, `\0` and a session id.
pub(crate) const MAX_NAME_BYTES: usize = 512;

/// A decoded frame from a provider. Strings borrow from the frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientFrame<'a> {
    /// `[9]`: answer with a pong.
    Ping,
    /// `[10]`: the answer to the server's ping.
    Pong,
    /// A message about one document.
    Doc {
        /// The document name exactly as sent (the provider matches answers by it).
        name: &'a str,
        message: DocMessage<'a>,
    },
}

/// What a provider says about one document.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DocMessage<'a> {
    /// Authenticate (or re-authenticate) with this token; empty if the provider has none.
    Auth { token: &'a str },
    /// A y-protocols message (sync, awareness, query awareness), as a y-websocket frame starting
    /// at this offset of the frame.
    Yjs { at: usize },
    /// An application's stateless message.
    Stateless(&'a str),
    /// The provider detaches this document.
    Close,
}

/// Why a frame is not a Hocuspocus message. Every one closes the socket (4400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The frame ends before what it declares.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A varUint longer than 64 bits.
    #[error("varUint too long")]
    VarTooLong,
    /// A string declaring more bytes than it may hold (a document name: [`MAX_NAME_BYTES`]).
    #[error("{what} of {len} bytes")]
    TooLong { what: &'static str, len: u64 },
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A message type providers never send.
    #[error("message type {0} is not one a provider sends")]
    UnknownType(u64),
    /// An auth message other than a token.
    #[error("auth message of sub-type {0} (a provider sends only tokens, sub-type 0)")]
    UnknownAuth(u64),
    /// Bytes after a message that has nothing after it.
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

/// A cursor over a frame, reading lib0's encodings.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn var(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let (mut num, mut shift) = (0u64, 0u32);
        loop {
            let b = *self.bytes.get(self.at).ok_or(FrameError::Truncated(what))?;
            self.at += 1;
            num |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(FrameError::VarTooLong)?;
            if b < 0x80 {
                return Ok(num);
            }
            shift += 7;
            if shift > 63 {
                return Err(FrameError::VarTooLong);
            }
        }
    }

    /// A `varString` of at most `max` bytes (checked before anything is read past its length).
    fn string(&mut self, what: &'static str, max: usize) -> Result<&'a str, FrameError> {
        let len = self.var(what)?;
        if len > max as u64 {
            return Err(FrameError::TooLong { what, len });
        }
        let len = len as usize;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(FrameError::Truncated(what))?;
        let s = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| FrameError::NotUtf8(what))?;
        self.at = end;
        Ok(s)
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn end(&self) -> Result<(), FrameError> {
        match self.left() {
            0 => Ok(()),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

/// Decodes one frame from a provider. Never panics; reads nothing past a length it has not
/// checked against the frame.
pub(crate) fn decode(frame: &[u8]) -> Result<ClientFrame<'_>, FrameError> {
    match frame {
        [tag::PING] => return Ok(ClientFrame::Ping),
        [tag::PONG] => return Ok(ClientFrame::Pong),
        _ => {}
    }
    let mut r = Reader {
        bytes: frame,
        at: 0,
    };
    let name = r.string("document name", MAX_NAME_BYTES)?;
    let at = r.at;
    let kind = r.var("message type")?;
    let message = match kind {
        k if k == u64::from(tag::SYNC)
            || k == u64::from(tag::AWARENESS)
            || k == u64::from(tag::QUERY_AWARENESS) =>
        {
            DocMessage::Yjs { at }
        }
        k if k == u64::from(tag::AUTH) => {
            let sub = r.var("auth sub-type")?;
            if sub != u64::from(tag::AUTH_TOKEN) {
                return Err(FrameError::UnknownAuth(sub));
            }
            // The token is bounded by the frame (itself bounded by the message size limit).
            // A provider version may follow; newer providers may add more: not read.
            let token = r.string("token", frame.len())?;
            DocMessage::Auth { token }
        }
        k if k == u64::from(tag::STATELESS) => {
            let payload = r.string("stateless payload", frame.len())?;
            r.end()?;
            DocMessage::Stateless(payload)
        }
        k if k == u64::from(tag::CLOSE) => {
            r.end()?;
            DocMessage::Close
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    Ok(ClientFrame::Doc { name, message })
}

/// `varString(name)`: what every frame of a document starts with.
pub(crate) fn prefix(name: &str) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + 2);
    out.write_string(name);
    out.into()
}

/// `prefix • frame`: a y-protocols frame (or any body) for the document `prefix` names.
pub(crate) fn prefixed(prefix: &[u8], body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + body.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(body);
    out.into()
}

fn message(name: &str, kind: u8, build: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + 16);
    out.write_string(name);
    out.push(kind);
    build(&mut out);
    out.into()
}

/// `[name][2][2][scope]`: the document is open, read-write or read-only.
pub(crate) fn authenticated(name: &str, read_only: bool) -> Bytes {
    message(name, tag::AUTH, |out| {
        out.push(tag::AUTH_AUTHENTICATED);
        out.write_string(if read_only { "readonly" } else { "read-write" });
    })
}

/// `[2][2][scope]` without the name: the same, for the document's own channel (the writer puts
/// the name in front).
pub(crate) fn authenticated_body(read_only: bool) -> Bytes {
    let mut out = vec![tag::AUTH, tag::AUTH_AUTHENTICATED];
    out.write_string(if read_only { "readonly" } else { "read-write" });
    out.into()
}

/// `[name][2][1][reason]`: the document is refused (or no longer allowed).
pub(crate) fn permission_denied(name: &str, reason: &str) -> Bytes {
    message(name, tag::AUTH, |out| {
        out.push(tag::AUTH_PERMISSION_DENIED);
        out.write_string(reason);
    })
}

/// `[name][2][0]`: asks the provider for a fresh token (it calls its `token` function again
/// and answers with an Auth message).
pub(crate) fn token_request(name: &str) -> Bytes {
    message(name, tag::AUTH, |out| out.push(tag::AUTH_TOKEN))
}

/// `[name][8][1 or 0]`: one document message of the provider's is committed (1) or refused
/// (0).
pub(crate) fn sync_status(name: &str, committed: bool) -> Bytes {
    message(name, tag::SYNC_STATUS, |out| out.push(u8::from(committed)))
}

/// `prefix • [8][1]`: [`sync_status`] committed, for a name already encoded.
pub(crate) fn committed(prefix: &[u8]) -> Bytes {
    prefixed(prefix, &[tag::SYNC_STATUS, 1])
}

/// `[name][7][reason]`: the server closed this document (the socket stays open).
pub(crate) fn close(name: &str, reason: &str) -> Bytes {
    message(name, tag::CLOSE, |out| out.write_string(reason))
}

/// `prefix • [5] • varString(payload)`, from a board's stateless frame
/// ([`crate::protocol::stateless`]: `[101] • varString(payload)`).
pub(crate) fn stateless_from_board(prefix: &[u8], board_frame: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + board_frame.len());
    out.extend_from_slice(prefix);
    out.push(tag::STATELESS);
    out.extend_from_slice(board_frame.get(1..).unwrap_or_default());
    out.into()
}

/// `[9]`: the server's ping (a provider answers `[10]`).
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[tag::PING])
}

/// `[10]`: the answer to a ping.
pub(crate) fn pong() -> Bytes {
    Bytes::from_static(&[tag::PONG])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// A frame as the provider (4.8.0) builds it: `varString(name) • type • body`.
    fn frame(name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.write_string(name);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn decodes_what_the_provider_sends() {
        // AuthenticationMessage: [name][2][0][token][version].
        let mut auth = vec![2, 0];
        auth.write_string("tok");
        auth.write_string("4.8.0");
        assert_eq!(
            decode(&frame("board-1", &auth)),
            Ok(ClientFrame::Doc {
                name: "board-1",
                message: DocMessage::Auth { token: "tok" }
            })
        );
        // Without a version (older providers), and with an empty token (`token ?? ""`).
        assert_eq!(
            decode(&frame("b", &[2, 0, 0])),
            Ok(ClientFrame::Doc {
                name: "b",
                message: DocMessage::Auth { token: "" }
            })
        );
        // SyncStepOneMessage for an empty doc: [name][0][0][1][0]; the body is y-websocket's.
        let f = frame("board-1", &[0, 0, 1, 0]);
        let Ok(ClientFrame::Doc {
            message: DocMessage::Yjs { at },
            ..
        }) = decode(&f)
        else {
            panic!("a sync message")
        };
        assert_eq!(&f[at..], [0, 0, 1, 0]);
        assert!(matches!(
            crate::protocol::decode(&f[at..]),
            Ok(crate::protocol::Incoming::SyncStep1(_))
        ));
        let mut stateless = vec![5];
        stateless.write_string("{\"hi\":1}");
        assert_eq!(
            decode(&frame("b", &stateless)),
            Ok(ClientFrame::Doc {
                name: "b",
                message: DocMessage::Stateless("{\"hi\":1}")
            })
        );
        // CloseMessage: [name][7], nothing after it.
        assert_eq!(
            decode(&frame("b", &[7])),
            Ok(ClientFrame::Doc {
                name: "b",
                message: DocMessage::Close
            })
        );
        assert_eq!(decode(&[9]), Ok(ClientFrame::Ping));
        assert_eq!(decode(&[10]), Ok(ClientFrame::Pong));
        // A name of nine bytes is not a ping.
        assert!(matches!(
            decode(&frame("ninechars", &[3])),
            Ok(ClientFrame::Doc {
                name: "ninechars",
                ..
            })
        ));
    }

    #[test]
    fn refuses_what_a_provider_never_sends() {
        assert_eq!(decode(&[]), Err(FrameError::Truncated("document name")));
        // A name declaring 2^40 bytes in six: refused before anything is read past it.
        assert_eq!(
            decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 1]),
            Err(FrameError::TooLong {
                what: "document name",
                len: 1 << 40
            })
        );
        assert_eq!(
            decode(&[5, b'a', b'b']),
            Err(FrameError::Truncated("document name"))
        );
        assert_eq!(
            decode(&[2, 0xff, 0xfe, 0]),
            Err(FrameError::NotUtf8("document name"))
        );
        assert_eq!(
            decode(&[0xff; 11]),
            Err(FrameError::VarTooLong),
            "a varUint past 64 bits"
        );
        assert_eq!(
            decode(&frame("b", &[])),
            Err(FrameError::Truncated("message type"))
        );
        for server_only in [4, 6, 8, 9, 10, 11, 100] {
            assert_eq!(
                decode(&frame("b", &[server_only])),
                Err(FrameError::UnknownType(server_only.into()))
            );
        }
        assert_eq!(
            decode(&frame("b", &[0xc8, 1])),
            Err(FrameError::UnknownType(200))
        );
        // Auth sub-types 1 and 2 are the server's.
        assert_eq!(
            decode(&frame("b", &[2, 1, 0])),
            Err(FrameError::UnknownAuth(1))
        );
        assert_eq!(
            decode(&frame("b", &[2, 0, 50, b'x'])),
            Err(FrameError::TooLong {
                what: "token",
                len: 50
            })
        );
        assert_eq!(
            decode(&frame("b", &[2, 0, 2, b'x'])),
            Err(FrameError::Truncated("token"))
        );
        assert_eq!(decode(&frame("b", &[7, 0])), Err(FrameError::Trailing(1)));
        assert_eq!(
            decode(&frame("b", &[5, 1, b'x', 9])),
            Err(FrameError::Trailing(1))
        );
    }

    #[test]
    fn encodes_the_bytes_the_provider_reads() {
        assert_eq!(
            &authenticated("b", false)[..],
            [
                1, b'b', 2, 2, 10, b'r', b'e', b'a', b'd', b'-', b'w', b'r', b'i', b't', b'e'
            ]
        );
        assert_eq!(
            &authenticated("b", true)[..],
            [
                1, b'b', 2, 2, 8, b'r', b'e', b'a', b'd', b'o', b'n', b'l', b'y'
            ]
        );
        assert_eq!(
            prefixed(&prefix("b"), &authenticated_body(true)),
            authenticated("b", true)
        );
        assert_eq!(
            &permission_denied("b", "no")[..],
            [1, b'b', 2, 1, 2, b'n', b'o']
        );
        assert_eq!(&token_request("b")[..], [1, b'b', 2, 0]);
        assert_eq!(&sync_status("b", true)[..], [1, b'b', 8, 1]);
        assert_eq!(&sync_status("b", false)[..], [1, b'b', 8, 0]);
        assert_eq!(committed(&prefix("b")), sync_status("b", true));
        assert_eq!(&close("b", "x")[..], [1, b'b', 7, 1, b'x']);
        let board = crate::protocol::stateless("hi");
        assert_eq!(
            &stateless_from_board(&prefix("b"), &board)[..],
            [1, b'b', 5, 2, b'h', b'i']
        );
        assert_eq!(
            &prefixed(&prefix("b"), &[0, 0, 1, 0])[..],
            [1, b'b', 0, 0, 1, 0]
        );
    }

    proptest! {
        /// Whatever the bytes, decoding returns (never panics), and a decoded name or string
        /// lies within the frame.
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(ClientFrame::Doc { name, message }) = decode(&bytes) {
                prop_assert!(name.len() <= MAX_NAME_BYTES);
                if let DocMessage::Yjs { at } = message {
                    prop_assert!(at < bytes.len());
                }
            }
        }

        /// Frames with a valid name and an arbitrary body: decoding never panics, and a
        /// y-protocols body goes on to the y-protocols decoder, which never panics either.
        #[test]
        fn bodies_after_a_valid_name_never_panic(
            name in "[a-z0-9-]{0,20}",
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let f = frame(&name, &body);
            if let Ok(ClientFrame::Doc { name: got, message }) = decode(&f) {
                prop_assert_eq!(got, name.as_str());
                if let DocMessage::Yjs { at } = message {
                    let _ = crate::protocol::decode(&f[at..]);
                }
            }
        }
    }
}
