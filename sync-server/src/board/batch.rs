//! Everything that waits on one commit: the updates to store and what to release once they are.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::BoardError;
use super::peer::ConnId;

/// Updates bound for one commit, with the broadcasts, acknowledgements and HTTP replies that
/// must not happen before it.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// What to append to the log, in order.
    pub(super) updates: Vec<Vec<u8>>,
    /// Bytes in `updates`.
    pub(super) bytes: u64,
    /// Frames for every peer but the one named (the sender, which has the content already).
    pub(super) broadcasts: Vec<(Option<ConnId>, Bytes)>,
    /// Per connection, how many of its document messages this commit makes durable.
    pub(super) acks: HashMap<ConnId, u64>,
    /// HTTP writers waiting for durability.
    pub(super) http: Vec<oneshot::Sender<Result<(), BoardError>>>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.updates.is_empty()
            && self.broadcasts.is_empty()
            && self.acks.is_empty()
            && self.http.is_empty()
    }

    /// Fails every HTTP writer waiting on this batch.
    pub(super) fn fail(self, error: &BoardError) {
        for reply in self.http {
            let _ = reply.send(Err(error.clone()));
        }
    }
}
