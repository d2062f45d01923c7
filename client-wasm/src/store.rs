//! What the offline store keeps, and when it compacts.
//!
//! The store (IndexedDB in the browser) holds one board as a **log** of Yjs updates (local
//! edits, updates from the server) and one **metadata** record: the durable state vector and the
//! pending edits ([`crate::durability`]). Loading merges the log; compaction replaces it with one
//! snapshot of the replica, in the same store transaction as the metadata, so a crash at any
//! point leaves either the old log or the new snapshot.

use serde::{Deserialize, Serialize};

use crate::durability::Edit;

/// Log entries past which the log is compacted.
pub const COMPACT_ENTRIES: usize = 500;
/// Log bytes past which the log is compacted (when it also holds more than a few entries).
pub const COMPACT_BYTES: usize = 8 << 20;

/// The metadata record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// The durable state vector, Yjs v1 encoding.
    pub durable: Vec<u8>,
    /// Edits not yet durable.
    pub pending: Vec<Edit>,
}

impl StoredMeta {
    /// As stored: JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the store; `None` if it does not parse (the store is then treated as having no
    /// durable state: every local edit in it counts as pending until the next acknowledgement).
    pub fn from_json(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

/// A compaction: the log becomes this one snapshot.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// The whole replica as one update.
    pub snapshot: Vec<u8>,
    /// The metadata at that moment.
    pub meta: StoredMeta,
}

/// Whether a log of `entries` entries and `bytes` bytes should be compacted.
pub fn should_compact(entries: usize, bytes: usize) -> bool {
    entries > COMPACT_ENTRIES || (entries > 16 && bytes > COMPACT_BYTES)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn metadata_round_trips_and_garbage_is_refused() {
        let meta = StoredMeta {
            durable: vec![1, 2, 3],
            pending: vec![Edit { client: 7, end: 9 }],
        };
        assert_eq!(StoredMeta::from_json(&meta.to_json()), Some(meta));
        assert_eq!(StoredMeta::from_json("{\"durable\": 5}"), None);
    }

    #[test]
    fn compacts_long_or_large_logs_only() {
        assert!(!should_compact(10, 100 << 20));
        assert!(should_compact(17, 9 << 20));
        assert!(should_compact(501, 10));
        assert!(!should_compact(500, 10));
    }
}
