//! Rebuilding a board's `yrs::Doc` from what the store holds.
//!
//! Every row is checked and decoded before anything is applied, so a corrupt row fails the load
//! with an error naming the board and the row, and leaves no half-built document behind. Rows are
//! checked for nesting first ([`crdt_schema::guard`]): one written before that check existed, or
//! by another program, could otherwise overflow the stack while it decodes, or later, and abort
//! the process. A panic inside yrs on hostile bytes (debug builds assert on client ids past 2^53)
//! is caught and reported the same way, so one bad board can never take the process down.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crdt_schema::guard::Nesting;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::StoredBoard;
use crate::ids::{BoardId, Seq};

/// A stored row, named for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowRef {
    /// The board's snapshot, which covers the log up to `seq`.
    Snapshot {
        /// The sequence the snapshot covers.
        seq: Seq,
    },
    /// A row of the update log.
    Update {
        /// The row's sequence number.
        seq: Seq,
    },
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Snapshot { seq } => write!(f, "snapshot (covering seq {seq})"),
            Self::Update { seq } => write!(f, "update log row seq {seq}"),
        }
    }
}

/// Why a board could not be rebuilt from its rows.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A row is not a Yjs update.
    #[error("board `{board}`: {row} is corrupt: {reason}")]
    CorruptRow {
        /// The board.
        board: BoardId,
        /// The row that failed.
        row: RowRef,
        /// What the decoder or yrs said.
        reason: String,
    },
}

/// What a replay found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayStats {
    /// The newest sequence applied (the snapshot's if the log after it is empty, 0 if both are).
    pub last_seq: Seq,
    /// The sequence the snapshot covers (0 if none).
    pub snapshot_seq: Seq,
    /// Log rows applied after the snapshot.
    pub log_rows: usize,
    /// Bytes of those log rows.
    pub log_bytes: usize,
}

fn decode(board: &BoardId, row: RowRef, data: &[u8]) -> Result<Update, ReplayError> {
    let corrupt = |reason: String| ReplayError::CorruptRow {
        board: board.clone(),
        row,
        reason,
    };
    match catch_unwind(|| Update::decode_v1(data)) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(corrupt(e.to_string())),
        Err(_) => Err(corrupt("the Yjs decoder panicked on it".into())),
    }
}

/// Applies a stored board (snapshot, then log rows in order) to `doc` in one transaction.
///
/// `doc` should be fresh: on error it may hold part of the board and must be discarded.
pub fn replay_into(doc: &Doc, stored: &StoredBoard) -> Result<ReplayStats, ReplayError> {
    replay_with_nesting(doc, stored).map(|(stats, _)| stats)
}

/// [`replay_into`], also returning the nesting index of the rebuilt document, against which
/// later updates are checked.
pub fn replay_with_nesting(
    doc: &Doc,
    stored: &StoredBoard,
) -> Result<(ReplayStats, Nesting), ReplayError> {
    let board = &stored.info.id;
    let mut nesting = Nesting::default();
    let mut updates = Vec::with_capacity(stored.updates.len() + 1);
    let rows = stored
        .snapshot
        .iter()
        .map(|s| (RowRef::Snapshot { seq: s.seq }, &s.data))
        .chain(
            stored
                .updates
                .iter()
                .map(|u| (RowRef::Update { seq: u.seq }, &u.data)),
        );
    for (row, data) in rows {
        nesting.admit(data).map_err(|e| ReplayError::CorruptRow {
            board: board.clone(),
            row,
            reason: e.to_string(),
        })?;
        updates.push((row, decode(board, row, data)?));
    }
    let applied = catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        for (row, update) in updates {
            txn.apply_update(update).map_err(|e| (row, e.to_string()))?;
        }
        Ok::<(), (RowRef, String)>(())
    }));
    let failed = match applied {
        Ok(Ok(())) => None,
        Ok(Err((row, reason))) => Some((row, reason)),
        Err(_) => Some((
            stored
                .updates
                .last()
                .map_or(RowRef::Snapshot { seq: 0 }, |u| RowRef::Update {
                    seq: u.seq,
                }),
            "yrs panicked while applying the board's rows".to_owned(),
        )),
    };
    if let Some((row, reason)) = failed {
        return Err(ReplayError::CorruptRow {
            board: board.clone(),
            row,
            reason,
        });
    }
    let snapshot_seq = stored.snapshot.as_ref().map_or(0, |s| s.seq);
    let stats = ReplayStats {
        last_seq: stored.updates.last().map_or(snapshot_seq, |u| u.seq),
        snapshot_seq,
        log_rows: stored.updates.len(),
        log_bytes: stored.updates.iter().map(|u| u.data.len()).sum(),
    };
    Ok((stats, nesting))
}

/// The whole board as one Yjs update v1, including updates still waiting for missing
/// dependencies (so nothing stored is lost by folding it into a snapshot).
pub fn merged_state(stored: &StoredBoard) -> Result<(Vec<u8>, ReplayStats), ReplayError> {
    let doc = Doc::new();
    let stats = replay_into(&doc, stored)?;
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    Ok((state, stats))
}
