//! What a run changed, as CRDT ids: what its transactions inserted and deleted. Recorded from
//! the updates its edits produced, stored with the run, and all undo needs besides the board.

use yrs::encoding::write::Write;
use yrs::updates::decoder::{Decode, DecoderV1};
use yrs::updates::encoder::{Encode, Encoder, EncoderV1};
use yrs::{IdSet, Update};

/// Format byte of the stored encoding.
const FORMAT_V1: u8 = 1;

/// The ids a run's transactions inserted and deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunChanges {
    pub(crate) insertions: IdSet,
    pub(crate) deletions: IdSet,
}

/// Stored changes that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("stored run changes are unreadable: {0}")]
pub(crate) struct ChangesError(String);

impl RunChanges {
    /// Adds what `update` (v1, produced by one of the run's transactions) inserted and deleted.
    pub(crate) fn record(&mut self, update: &[u8]) {
        // Our own transaction's update: it decodes. If it somehow does not, undo will miss it;
        // never fail the edit for it.
        if let Ok(update) = Update::decode_v1(update) {
            self.insertions.merge_with(update.insertions(true));
            self.deletions.merge_with(update.delete_set().clone());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.insertions.is_empty() && self.deletions.is_empty()
    }

    /// The stored form: empty if nothing changed.
    pub(crate) fn encode(&self) -> Vec<u8> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut encoder = EncoderV1::new();
        encoder.write_u8(FORMAT_V1);
        self.insertions.encode(&mut encoder);
        self.deletions.encode(&mut encoder);
        encoder.to_vec()
    }

    /// Reads the stored form back.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, ChangesError> {
        let Some((&format, rest)) = bytes.split_first() else {
            return Ok(Self::default());
        };
        if format != FORMAT_V1 {
            return Err(ChangesError(format!("unknown format {format}")));
        }
        let read = || {
            let mut decoder = DecoderV1::from(rest);
            let insertions = IdSet::decode(&mut decoder)?;
            let deletions = IdSet::decode(&mut decoder)?;
            Ok::<_, yrs::encoding::read::Error>(Self {
                insertions,
                deletions,
            })
        };
        std::panic::catch_unwind(read)
            .map_err(|_| ChangesError("decoder panicked".into()))?
            .map_err(|e| ChangesError(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use yrs::{Doc, Map, ReadTxn, Transact};

    use super::*;

    #[test]
    fn records_and_round_trips() {
        let doc = Doc::with_client_id(3);
        let map = doc.get_or_insert_map("objects");
        let mut changes = RunChanges::default();
        assert_eq!(changes.encode(), Vec::<u8>::new());
        for i in 0..3 {
            let mut txn = doc.transact_mut();
            map.insert(&mut txn, "k", i);
            let update = txn.encode_update_v1();
            drop(txn);
            changes.record(&update);
        }
        assert!(!changes.insertions.is_empty());
        // Overwriting a key deletes the old value twice.
        assert!(!changes.deletions.is_empty());
        let decoded = RunChanges::decode(&changes.encode()).unwrap();
        assert_eq!(decoded, changes);
        assert_eq!(RunChanges::decode(&[]).unwrap(), RunChanges::default());
        assert!(RunChanges::decode(&[9, 1, 2]).is_err());
        assert!(RunChanges::decode(&[1, 0xff, 0xff]).is_err());
        let _ = doc.transact().state_vector();
    }
}
