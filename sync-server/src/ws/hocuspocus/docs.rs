//! The documents of one Hocuspocus socket: each name is waiting for its Auth message (its
//! frames held), open on its board, or refused (its frames dropped until it authenticates
//! again). What a socket can make the server hold here is bounded in names, frames and bytes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::board::link::mux::ChannelId;
use crate::board::peer::ConnId;
use crate::board::registry::BoardHandle;

/// Documents open on one socket at once, at most; past it a document is refused
/// (PermissionDenied `too many documents on this connection`).
pub(crate) const MAX_DOCUMENTS: usize = 64;
/// Names waiting for their Auth message at once, at most; past it the socket is closed (4413).
pub(crate) const MAX_WAITING: usize = 16;
/// Names one socket may be tracking at once (open, waiting or refused), at most; past it the
/// socket is closed (4413).
pub(crate) const MAX_NAMES: usize = 4 * MAX_DOCUMENTS;
/// Frames held for documents waiting for their Auth message, over every name of the socket, at
/// most; past it the socket is closed (4413). Bytes are bounded too: see [`Limits`].
pub(crate) const MAX_HELD_FRAMES: usize = 1024;

/// What the table holds at most (from the server's limits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes of frames held before authentication, over every name.
    pub(crate) held_bytes: usize,
}

/// A document open on its board.
#[derive(Debug)]
pub(crate) struct Open {
    /// The connection id the board knows it by.
    pub(crate) conn: ConnId,
    /// Its channel of the socket's link.
    pub(crate) channel: ChannelId,
    pub(crate) handle: BoardHandle,
    pub(crate) can_write: bool,
    /// The token's user: a fresh token must name the same one.
    pub(crate) user: Option<Arc<str>>,
    /// When its token expires.
    pub(crate) expires_at: Option<Instant>,
    /// When to ask the provider for a fresh token (`None` once asked, or never).
    pub(crate) refresh_at: Option<Instant>,
}

impl Open {
    /// The earlier of its deadlines.
    fn deadline(&self) -> Option<Instant> {
        match (self.refresh_at, self.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Where one document name stands.
#[derive(Debug)]
pub(crate) enum Doc {
    /// Frames arrived before its Auth message: held, in order.
    Waiting(Vec<Bytes>),
    Open(Open),
    /// Refused or closed by the server: its frames are dropped until it authenticates again.
    Refused,
}

/// Why a frame could not be held. Each closes the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldError {
    /// Too many names waiting, frames or bytes held.
    Backlog,
    /// Too many names tracked.
    Names,
}

/// The documents of one socket, by name.
#[derive(Debug)]
pub(crate) struct Docs {
    limits: Limits,
    docs: HashMap<Arc<str>, Doc>,
    held_frames: usize,
    held_bytes: usize,
    open: usize,
    waiting: usize,
}

impl Docs {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            docs: HashMap::new(),
            held_frames: 0,
            held_bytes: 0,
            open: 0,
            waiting: 0,
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Doc> {
        self.docs.get(name)
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Doc> {
        self.docs.get_mut(name)
    }

    /// Documents open now.
    pub(crate) fn open_count(&self) -> usize {
        self.open
    }

    /// Holds `frame` for `name` until it authenticates (a name not seen before starts
    /// waiting). A frame for a refused name is dropped (`Ok(false)`).
    pub(crate) fn hold(&mut self, name: &str, frame: Bytes) -> Result<bool, HoldError> {
        let len = frame.len();
        let fits = self.held_frames < MAX_HELD_FRAMES
            && self.held_bytes.saturating_add(len) <= self.limits.held_bytes;
        match self.docs.get_mut(name) {
            Some(Doc::Refused) => return Ok(false),
            Some(Doc::Open(_)) => {
                debug_assert!(false, "frames of open documents are not held");
                return Ok(false);
            }
            Some(Doc::Waiting(held)) => {
                if !fits {
                    return Err(HoldError::Backlog);
                }
                held.push(frame);
            }
            None => {
                if self.docs.len() >= MAX_NAMES {
                    return Err(HoldError::Names);
                }
                if !fits || self.waiting >= MAX_WAITING {
                    return Err(HoldError::Backlog);
                }
                self.waiting += 1;
                self.docs
                    .insert(name.into(), Doc::Waiting(vec![frame.clone()]));
            }
        }
        self.held_frames += 1;
        self.held_bytes += len;
        Ok(true)
    }

    /// Whether a name not tracked yet may be: `Err` if the socket tracks as many as it may.
    pub(crate) fn admits_new_name(&self, name: &str) -> Result<(), HoldError> {
        if self.docs.contains_key(name) || self.docs.len() < MAX_NAMES {
            Ok(())
        } else {
            Err(HoldError::Names)
        }
    }

    /// Takes the frames held for `name` (none if it was not waiting), leaving it refused until
    /// it is set open.
    pub(crate) fn take_held(&mut self, name: &str) -> Vec<Bytes> {
        match self.docs.get_mut(name) {
            Some(doc @ Doc::Waiting(_)) => {
                let Doc::Waiting(held) = std::mem::replace(doc, Doc::Refused) else {
                    return Vec::new();
                };
                self.waiting -= 1;
                self.held_frames -= held.len();
                self.held_bytes -= held.iter().map(Bytes::len).sum::<usize>();
                held
            }
            _ => Vec::new(),
        }
    }

    /// Sets `name` open (its held frames must have been taken).
    pub(crate) fn set_open(&mut self, name: &str, open: Open) {
        let previous = self.docs.insert(name.into(), Doc::Open(open));
        self.settle(previous);
        self.open += 1;
    }

    /// Sets `name` refused; returns what it was (an open document must still leave its board).
    pub(crate) fn set_refused(&mut self, name: &str) -> Option<Doc> {
        let previous = self.docs.insert(name.into(), Doc::Refused);
        self.settle(previous)
    }

    /// Forgets `name`; returns what it was.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Doc> {
        let previous = self.docs.remove(name);
        self.settle(previous)
    }

    /// Keeps the counts right for a document that was replaced or removed.
    fn settle(&mut self, previous: Option<Doc>) -> Option<Doc> {
        match &previous {
            Some(Doc::Open(_)) => self.open -= 1,
            Some(Doc::Waiting(held)) => {
                self.waiting -= 1;
                self.held_frames -= held.len();
                self.held_bytes -= held.iter().map(Bytes::len).sum::<usize>();
            }
            Some(Doc::Refused) | None => {}
        }
        previous
    }

    /// The name of the open document on `channel`.
    pub(crate) fn name_of_channel(&self, channel: ChannelId) -> Option<Arc<str>> {
        self.docs.iter().find_map(|(name, doc)| match doc {
            Doc::Open(open) if open.channel == channel => Some(name.clone()),
            _ => None,
        })
    }

    /// The open documents.
    pub(crate) fn open_docs(&self) -> impl Iterator<Item = (&Arc<str>, &Open)> {
        self.docs.iter().filter_map(|(name, doc)| match doc {
            Doc::Open(open) => Some((name, open)),
            _ => None,
        })
    }

    /// The earliest token deadline (a refresh to ask for, or an expiry) of the open documents.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open_docs()
            .filter_map(|(_, open)| open.deadline())
            .min()
    }

    /// The open documents with a deadline at or before `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<Arc<str>> {
        self.open_docs()
            .filter(|(_, open)| open.deadline().is_some_and(|d| d <= now))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn docs(held_bytes: usize) -> Docs {
        Docs::new(Limits { held_bytes })
    }

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0; n])
    }

    #[test]
    fn frames_before_auth_are_held_in_order_and_bounded_in_bytes() {
        let mut d = docs(10);
        assert_eq!(d.hold("a", Bytes::from_static(b"1")), Ok(true));
        assert_eq!(d.hold("a", Bytes::from_static(b"22")), Ok(true));
        assert_eq!(d.hold("b", frame(7)), Ok(true));
        assert_eq!(d.hold("b", frame(1)), Err(HoldError::Backlog));
        assert_eq!(d.take_held("a"), [&b"1"[..], b"22"]);
        // What "a" held is given back: room for more.
        assert_eq!(d.hold("b", frame(3)), Ok(true));
        // "a" is refused until set open: its frames are dropped.
        assert_eq!(d.hold("a", frame(1)), Ok(false));
        d.remove("b");
        assert_eq!(d.hold("c", frame(10)), Ok(true));
    }

    #[test]
    fn frames_before_auth_are_bounded_in_count_and_names() {
        let mut d = docs(usize::MAX);
        for _ in 0..MAX_HELD_FRAMES {
            assert_eq!(d.hold("a", frame(1)), Ok(true));
        }
        assert_eq!(d.hold("a", frame(1)), Err(HoldError::Backlog));
        d.remove("a");
        for i in 0..MAX_WAITING {
            assert_eq!(d.hold(&format!("w{i}"), frame(1)), Ok(true));
        }
        assert_eq!(d.hold("one-more", frame(1)), Err(HoldError::Backlog));
        let mut d = docs(usize::MAX);
        for i in 0..MAX_NAMES {
            d.set_refused(&format!("r{i}"));
        }
        assert_eq!(d.admits_new_name("new"), Err(HoldError::Names));
        assert_eq!(d.admits_new_name("r0"), Ok(()));
        assert_eq!(d.hold("new", frame(1)), Err(HoldError::Names));
    }
}
