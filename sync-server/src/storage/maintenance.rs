//! The maintenance lock: compaction, automatic versions and version retention of a board run
//! on one server at a time ([`Snapshots::try_lock_maintenance`](super::Snapshots)).
//!
//! On PostgreSQL, servers sharing the database take a transaction-scoped advisory lock
//! (`pg_try_advisory_xact_lock`) keyed by [`lock_key`]: a stable 64-bit hash of a fixed
//! namespace, the schema and the board id. A server that dies releases it with its connection.
//! Two boards whose keys collide (one in 2^64) only take turns. SQLite and the in-memory store
//! serve one server, so their lock is this process's ([`LocalLocks`]).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::ids::BoardId;

/// A board's maintenance lock, held until dropped.
pub trait MaintenanceLock: Send + fmt::Debug {}

/// The namespace every key is hashed under, so the server's locks never meet another
/// application's advisory locks on the same database by design.
const NAMESPACE: &[u8] = b"sync-server/board-maintenance";

/// The advisory lock key of board `id` in schema `scope`: FNV-1a (64 bits) over the namespace,
/// the scope and the id, each followed by a zero byte. Stable across builds and platforms (every
/// server on a database must compute the same key).
pub fn lock_key(scope: &str, id: &BoardId) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in [NAMESPACE, scope.as_bytes(), id.as_str().as_bytes()] {
        for &byte in part.iter().chain(&[0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    i64::from_le_bytes(hash.to_le_bytes())
}

/// Maintenance locks held in this process: for stores that serve one server.
#[derive(Debug, Default, Clone)]
pub(crate) struct LocalLocks {
    held: Arc<Mutex<HashSet<BoardId>>>,
}

impl LocalLocks {
    /// Board `id`'s lock if it is free.
    pub(crate) fn try_lock(&self, id: &BoardId) -> Option<Box<dyn MaintenanceLock>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id.clone()).then(|| {
            Box::new(LocalLock {
                locks: self.clone(),
                id: id.clone(),
            }) as Box<dyn MaintenanceLock>
        })
    }
}

#[derive(Debug)]
struct LocalLock {
    locks: LocalLocks,
    id: BoardId,
}

impl MaintenanceLock for LocalLock {}

impl Drop for LocalLock {
    fn drop(&mut self) {
        let mut held = self
            .locks
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_stable_and_apart() {
        let a = BoardId::parse("a").unwrap();
        let b = BoardId::parse("b").unwrap();
        // Fixed (FNV-1a 64 as specified, checked against an independent computation): every
        // server on a database, whatever its build, computes the same key.
        assert_eq!(lock_key("public", &a), lock_key("public", &a));
        assert_eq!(lock_key("public", &a), 7_720_212_417_647_539_857);
        assert_ne!(lock_key("public", &a), lock_key("public", &b));
        assert_ne!(lock_key("public", &a), lock_key("other", &a));
        // The parts are delimited: ("ab", "c") is not ("a", "bc").
        let c = BoardId::parse("c").unwrap();
        let bc = BoardId::parse("bc").unwrap();
        assert_ne!(lock_key("ab", &c), lock_key("a", &bc));
    }

    #[test]
    fn a_local_lock_is_held_until_dropped() {
        let locks = LocalLocks::default();
        let a = BoardId::parse("a").unwrap();
        let held = locks.try_lock(&a).unwrap();
        assert!(locks.try_lock(&a).is_none());
        assert!(locks.try_lock(&BoardId::parse("b").unwrap()).is_some());
        drop(held);
        assert!(locks.try_lock(&a).is_some());
    }
}
