//! Which of this client's own edits the server has made durable.
//!
//! The server acknowledges document messages by count (`PROTOCOL.md`, "Durable acknowledgement"):
//! `Ack(n)` says the first `n` sync step 2 and update frames this connection sent are committed.
//! Its commits are ordered per board, so when a message is acknowledged, everything the server
//! had applied before it is durable too, including what it already held when the connection
//! opened. Hence one rule: when message `n` is acknowledged, everything this replica held when it
//! encoded message `n` is durable. The tracker remembers the replica's state vector at each send
//! and, on an acknowledgement, folds it into the **durable state vector**.
//!
//! An edit is pending while the durable state vector lacks its last clock. Edits and the durable
//! state vector are kept in the offline store, so the count survives reloads: an edit made
//! offline yesterday is pending until a connection's sync step 2 that carried it is acknowledged.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use yrs::{ClientID, StateVector};

/// One local edit: the client id it was made under and the clock just past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// The replica's client id when the edit was made (a new one every session).
    pub client: u64,
    /// The clock after the edit: it is durable once the durable state vector reaches this.
    pub end: u32,
}

/// What the acknowledgements have said so far.
#[derive(Debug, Default)]
pub struct Durability {
    durable: StateVector,
    pending: VecDeque<Edit>,
    /// Per connection: state vectors at each document message sent, oldest first, with the
    /// number of the first one.
    sent: VecDeque<StateVector>,
    first_unacked: u64,
    /// Document messages sent on this connection.
    sent_count: u64,
}

/// The result of an acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Edits that became durable with it.
    pub saved: usize,
    /// Edits still pending.
    pub pending: usize,
}

/// An acknowledgement the client cannot have earned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("acknowledgement of {count} messages, but only {sent} were sent")]
pub struct AckError {
    /// What the server acknowledged.
    pub count: u64,
    /// What this connection sent.
    pub sent: u64,
}

impl Durability {
    /// A tracker resumed from the offline store.
    pub fn resume(durable: StateVector, pending: Vec<Edit>) -> Self {
        let mut d = Durability {
            durable,
            pending: pending.into(),
            ..Durability::default()
        };
        d.drop_durable();
        d
    }

    /// The durable state vector.
    pub fn durable(&self) -> &StateVector {
        &self.durable
    }

    /// Edits not yet durable, oldest first.
    pub fn pending(&self) -> impl ExactSizeIterator<Item = &Edit> {
        self.pending.iter()
    }

    /// How many edits are not yet durable.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Records a local edit (before it is stored or sent).
    pub fn edited(&mut self, edit: Edit) {
        if self.durable.get(&ClientID::new(edit.client)) < edit.end {
            self.pending.push_back(edit);
        }
    }

    /// A new connection: message numbers start again from 1.
    pub fn connected(&mut self) {
        self.sent.clear();
        self.first_unacked = 1;
        self.sent_count = 0;
    }

    /// Records a document message sent, with the replica's state vector when it was encoded.
    pub fn sent(&mut self, sv: StateVector) {
        self.sent_count += 1;
        self.sent.push_back(sv);
    }

    /// Document messages sent on this connection.
    pub fn sent_count(&self) -> u64 {
        self.sent_count
    }

    /// The server acknowledged the first `count` messages of this connection.
    pub fn acknowledged(&mut self, count: u64) -> Result<Progress, AckError> {
        if count > self.sent_count {
            return Err(AckError {
                count,
                sent: self.sent_count,
            });
        }
        let before = self.pending.len();
        let mut newest = None;
        while self.first_unacked <= count {
            newest = self.sent.pop_front();
            self.first_unacked += 1;
        }
        if let Some(sv) = newest {
            self.durable.merge(sv);
            self.drop_durable();
        }
        Ok(Progress {
            saved: before - self.pending.len(),
            pending: self.pending.len(),
        })
    }

    fn drop_durable(&mut self) {
        let durable = &self.durable;
        self.pending
            .retain(|e| durable.get(&ClientID::new(e.client)) < e.end);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sv(entries: &[(u64, u32)]) -> StateVector {
        StateVector::from_iter(entries.iter().map(|&(c, k)| (ClientID::new(c), k)))
    }

    #[test]
    fn an_ack_makes_durable_what_the_replica_held_when_it_sent() {
        let mut d = Durability::default();
        d.connected();
        d.edited(Edit { client: 1, end: 3 });
        d.sent(sv(&[(1, 3)]));
        d.edited(Edit { client: 1, end: 5 });
        d.sent(sv(&[(1, 5)]));
        assert_eq!(d.pending_count(), 2);
        assert_eq!(
            d.acknowledged(1).unwrap(),
            Progress {
                saved: 1,
                pending: 1
            }
        );
        assert_eq!(d.durable().get(&ClientID::new(1)), 3);
        assert_eq!(d.acknowledged(2).unwrap().pending, 0);
        // A repeated count changes nothing.
        assert_eq!(d.acknowledged(2).unwrap().saved, 0);
    }

    #[test]
    fn an_ack_past_what_was_sent_is_refused() {
        let mut d = Durability::default();
        d.connected();
        d.sent(sv(&[]));
        assert_eq!(d.acknowledged(2), Err(AckError { count: 2, sent: 1 }));
    }

    #[test]
    fn counts_restart_per_connection_and_pending_edits_survive() {
        let mut d = Durability::default();
        d.connected();
        d.edited(Edit { client: 1, end: 1 });
        d.sent(sv(&[(1, 1)]));
        // The connection drops before the ack; a reload resumes from the store.
        let stored: Vec<Edit> = d.pending().copied().collect();
        let mut d = Durability::resume(d.durable().clone(), stored);
        assert_eq!(d.pending_count(), 1);
        d.connected();
        d.edited(Edit { client: 2, end: 1 });
        // The new connection's step 2 carries both sessions' edits.
        d.sent(sv(&[(1, 1), (2, 1)]));
        assert_eq!(d.acknowledged(1).unwrap().pending, 0);
    }

    #[test]
    fn edits_already_durable_are_not_pending() {
        let mut d = Durability::resume(sv(&[(1, 10)]), vec![Edit { client: 1, end: 4 }]);
        assert_eq!(d.pending_count(), 0);
        d.edited(Edit { client: 1, end: 9 });
        assert_eq!(d.pending_count(), 0);
    }
}
