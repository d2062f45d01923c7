//! The check of the database that heals what Redis lost: every `heal_interval`, the last
//! sequence number of every board this node holds, in one query, to their actors. An actor
//! behind it reads the rows it lacks; one whose board is gone closes its clients.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Inbound, Inner};
use crate::storage::Storage;

pub(super) async fn run(inner: Arc<Inner>, store: Arc<dyn Storage>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(inner.config.heal_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held = inner.held();
        if held.is_empty() {
            continue;
        }
        let stored = tokio::select! {
            () = shutdown.cancelled() => return,
            stored = store.last_seqs(&held) => stored,
        };
        inner.metrics.cluster.db_checks.inc();
        match stored {
            Ok(stored) => {
                for board in &held {
                    let last = stored.get(board).copied();
                    inner.deliver(board, || Inbound::Stored(last));
                }
            }
            Err(e) => debug!(error = %e, "cannot check the boards this node holds; trying again"),
        }
    }
}
