//! Everything that waits on one commit: the updates to store and what to release once they are.

use std::collections::HashMap;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::BoardError;
use super::peer::ConnId;
use crate::ids::Seq;

/// Updates bound for one commit, with the broadcasts, acknowledgements and HTTP replies that
/// must not happen before it.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// What to append to the log, in order.
    pub(super) updates: Vec<Vec<u8>>,
    /// Bytes in `updates`.
    pub(super) bytes: u64,
    /// Updates (what the doc learned) for every peer but the one named (the sender, which
    /// has the content already).
    pub(super) broadcasts: Vec<(Option<ConnId>, Vec<u8>)>,
    /// Per connection, how many of its document messages this commit makes durable.
    pub(super) acks: HashMap<ConnId, u64>,
    /// HTTP writers waiting for durability.
    pub(super) http: Vec<Waiter>,
    /// When the first update of the batch arrived (for the fan-out delay metric).
    pub(super) first_at: Option<std::time::Instant>,
    /// How many updates the batch sent to the committer (`updates` is empty once it did).
    pub(super) stored: usize,
    /// The log rows its commits wrote, as `(last, count)`, ascending (for the other nodes).
    pub(super) rows: Vec<(Seq, u32)>,
    /// The senders' budgets of uncommitted bytes this batch takes; given back when it is
    /// released or fails (dropped with the batch).
    pub(super) held: Vec<OwnedSemaphorePermit>,
}

/// Someone waiting for a batch to be durable (or to fail).
pub(super) struct Waiter(Box<dyn FnOnce(Result<(), BoardError>) + Send>);

impl Waiter {
    /// Answers `reply` with the batch's outcome.
    pub(super) fn reply(reply: oneshot::Sender<Result<(), BoardError>>) -> Self {
        Self(Box::new(move |result| {
            let _ = reply.send(result);
        }))
    }

    /// Answers `reply` with `value` once durable, or the error.
    pub(super) fn with<T: Send + 'static>(
        reply: oneshot::Sender<Result<T, BoardError>>,
        value: T,
    ) -> Self {
        Self(Box::new(move |result| {
            let _ = reply.send(result.map(|()| value));
        }))
    }

    pub(super) fn answer(self, result: Result<(), BoardError>) {
        (self.0)(result);
    }
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waiter")
    }
}

/// Above this many updates, a batch's broadcasts go out merged into one frame.
const MERGE_ABOVE: usize = 16;
/// Updates merged per `merge_updates_v1` call: one call over many updates is quadratic.
const MERGE_CHUNK: usize = 64;

/// What to send once a batch is durable.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// One update, to everyone but `skip`.
    One {
        skip: Option<ConnId>,
        update: Vec<u8>,
    },
    /// Many updates merged into one, to everyone (the senders ignore what they have).
    Merged(Vec<u8>),
}

impl Batch {
    /// The batch's broadcasts as frames to send: one per update for a few, merged for many
    /// (a burst of thousands of updates becomes one frame per peer, not thousands).
    pub(super) fn outgoing(broadcasts: Vec<(Option<ConnId>, Vec<u8>)>) -> Vec<Outgoing> {
        if broadcasts.len() > MERGE_ABOVE {
            let updates: Vec<&[u8]> = broadcasts.iter().map(|(_, u)| u.as_slice()).collect();
            if let Some(merged) = merge_chunked(&updates) {
                return vec![Outgoing::Merged(merged)];
            }
        }
        broadcasts
            .into_iter()
            .map(|(skip, update)| Outgoing::One { skip, update })
            .collect()
    }

    /// Adds `later`, a batch that follows this one, to it.
    pub(super) fn absorb(&mut self, later: Batch) {
        self.updates.extend(later.updates);
        self.bytes += later.bytes;
        self.broadcasts.extend(later.broadcasts);
        // The higher count for a connection (a message that waited for clocks it skipped may
        // be applied after later ones).
        for (conn, count) in later.acks {
            let mine = self.acks.entry(conn).or_insert(count);
            *mine = (*mine).max(count);
        }
        self.http.extend(later.http);
        self.first_at = self.first_at.or(later.first_at);
        self.stored += later.stored;
        self.rows.extend(later.rows);
        self.held.extend(later.held);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.broadcasts.is_empty()
            && self.acks.is_empty()
            && self.http.is_empty()
            && self.held.is_empty()
    }

    /// Fails every HTTP writer waiting on this batch.
    pub(super) fn fail(self, error: &BoardError) {
        for waiter in self.http {
            waiter.answer(Err(error.clone()));
        }
    }
}

fn merge_chunked(updates: &[&[u8]]) -> Option<Vec<u8>> {
    let mut level: Vec<Vec<u8>> = updates
        .chunks(MERGE_CHUNK)
        .map(|chunk| yrs::merge_updates_v1(chunk.iter().copied()).ok())
        .collect::<Option<_>>()?;
    while level.len() > 1 {
        level = level
            .chunks(MERGE_CHUNK)
            .map(|chunk| yrs::merge_updates_v1(chunk.iter()).ok())
            .collect::<Option<_>>()?;
    }
    level.pop()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Text, Transact, Update};

    #[test]
    fn many_broadcasts_merge_into_one_update_with_the_same_content() {
        let source = Doc::new();
        let text = source.get_or_insert_text("t");
        let mut broadcasts = Vec::new();
        for i in 0..300u32 {
            let mut txn = source.transact_mut();
            text.insert(&mut txn, i, "x");
            broadcasts.push((Some(u64::from(i % 3)), txn.encode_update_v1()));
        }
        let out = Batch::outgoing(broadcasts);
        let [Outgoing::Merged(merged)] = out.as_slice() else {
            panic!("expected one merged update, got {}", out.len())
        };
        let copy = Doc::new();
        copy.transact_mut()
            .apply_update(Update::decode_v1(merged).unwrap())
            .unwrap();
        let t = copy.get_or_insert_text("t");
        assert_eq!(t.get_string(&copy.transact()), "x".repeat(300));
    }

    #[test]
    fn absorbing_a_later_batch_keeps_order_and_the_later_ack_counts() {
        let earlier_at = std::time::Instant::now();
        let mut batch = Batch {
            bytes: 3,
            broadcasts: vec![(Some(1), vec![1])],
            acks: HashMap::from([(1, 4), (2, 7)]),
            first_at: Some(earlier_at),
            ..Batch::default()
        };
        let later = Batch {
            bytes: 5,
            broadcasts: vec![(Some(2), vec![2]), (None, vec![3])],
            acks: HashMap::from([(1, 6)]),
            http: vec![Waiter(Box::new(|_| {}))],
            first_at: Some(std::time::Instant::now()),
            ..Batch::default()
        };
        batch.absorb(later);
        assert_eq!(batch.bytes, 8);
        assert_eq!(
            batch.broadcasts,
            [(Some(1), vec![1]), (Some(2), vec![2]), (None, vec![3])]
        );
        assert_eq!(batch.acks, HashMap::from([(1, 6), (2, 7)]));
        assert_eq!(batch.http.len(), 1);
        assert_eq!(batch.first_at, Some(earlier_at));
    }

    #[test]
    fn few_broadcasts_go_out_one_by_one_skipping_their_sender() {
        let out = Batch::outgoing(vec![(Some(1), vec![0, 0]), (None, vec![0, 0])]);
        assert!(matches!(
            out.as_slice(),
            [
                Outgoing::One { skip: Some(1), .. },
                Outgoing::One { skip: None, .. }
            ]
        ));
    }
}
