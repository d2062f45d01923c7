//! The assistant's token budgets and request rates kept in the database
//! ([`Runs::update_budgets`](crate::storage::Runs::update_budgets)), so that every server on it
//! shares them and they survive restarts. The rules are ai-agent's ([`reserve_in`],
//! [`release_in`]); this is only where the counters live.
//!
//! A reservation is made in one transaction before the model call. Its release (a settle, a
//! refund, a charge in full) comes from code that cannot wait (a `Drop`), so it is queued to
//! one tracked task that writes releases in order; at shutdown it writes what is queued (until
//! none came for `DRAIN`) and stops. A release that is never written (the server
//! stopped) leaves its hold, which counts like a charge in full until the UTC day ends.

use std::sync::Arc;
use std::time::Duration;

use ai_agent::{
    BudgetError, BudgetLedger, BudgetLimits, Hold, Release, Reservation, ScopeState, release_in,
    reserve_in,
};
use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::storage::{BudgetRow, Storage, now_millis};

/// How long the release writer goes on after shutdown, waiting for the releases of runs that
/// are being cancelled.
const DRAIN: Duration = Duration::from_millis(300);

/// Budgets in the store; see the [module](self).
#[derive(Debug)]
pub(crate) struct StoredBudgets {
    limits: BudgetLimits,
    store: Arc<dyn Storage>,
    releases: Arc<Releases>,
}

/// The queue of releases to write.
#[derive(Debug)]
struct Releases {
    queue: mpsc::UnboundedSender<(Hold, u64, bool)>,
}

impl Release for Releases {
    fn release(&self, hold: &Hold, charge: u64, refund_rate: bool) {
        if self
            .queue
            .send((hold.clone(), charge, refund_rate))
            .is_err()
        {
            warn!(
                tokens = hold.amount,
                "a budget hold could not be released (the server is stopping): it counts until the day ends"
            );
        }
    }
}

impl StoredBudgets {
    /// The budgets of `store`, with the release writer running as a task of `tracker` until
    /// `shutdown`.
    pub(crate) fn spawn(
        limits: BudgetLimits,
        store: Arc<dyn Storage>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel();
        let writer = store.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => write_release(writer.as_ref(), &limits, job).await,
                        None => return,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
            while let Ok(Some(job)) = tokio::time::timeout(DRAIN, rx.recv()).await {
                write_release(writer.as_ref(), &limits, job).await;
            }
        });
        Self {
            limits,
            store,
            releases: Arc::new(Releases { queue }),
        }
    }
}

/// The stored scopes of `user`: all users together, then the user.
fn scopes(user: &str) -> [String; 2] {
    [String::new(), format!("user:{user}")]
}

fn state(row: &BudgetRow) -> ScopeState {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    ScopeState {
        day: n(row.day),
        used: n(row.used),
        reserved: n(row.reserved),
        tat_ms: n(row.tat_ms),
    }
}

fn store_state(row: &mut BudgetRow, s: ScopeState) {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    row.day = n(s.day);
    row.used = n(s.used);
    row.reserved = n(s.reserved);
    row.tat_ms = n(s.tat_ms);
}

fn now() -> u64 {
    u64::try_from(now_millis()).unwrap_or(0)
}

async fn write_release(
    store: &dyn Storage,
    limits: &BudgetLimits,
    (hold, charge, refund_rate): (Hold, u64, bool),
) {
    let scopes = scopes(&hold.user);
    let scopes = [scopes[0].as_str(), scopes[1].as_str()];
    for attempt in 0..3 {
        let mut update = |rows: &mut [BudgetRow]| {
            let (mut global, mut user) = (state(&rows[0]), state(&rows[1]));
            release_in(limits, &mut global, &mut user, &hold, charge, refund_rate);
            store_state(&mut rows[0], global);
            store_state(&mut rows[1], user);
            true
        };
        match store.update_budgets(&scopes, &mut update).await {
            Ok(_) => return,
            Err(e) if attempt < 2 => {
                warn!(error = %e, "could not release a budget hold; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                warn!(error = %e, tokens = hold.amount, "could not release a budget hold: it counts until the day ends");
            }
        }
    }
}

#[async_trait]
impl BudgetLedger for StoredBudgets {
    async fn reserve(&self, user: &str, amount: u64) -> Result<Reservation, BudgetError> {
        let names = scopes(user);
        let names = [names[0].as_str(), names[1].as_str()];
        let now = now();
        let mut decided = None;
        let mut update = |rows: &mut [BudgetRow]| {
            let (mut global, mut own) = (state(&rows[0]), state(&rows[1]));
            let outcome = reserve_in(&self.limits, &mut global, &mut own, amount, now);
            let admitted = outcome.is_ok();
            if admitted {
                store_state(&mut rows[0], global);
                store_state(&mut rows[1], own);
            }
            decided = Some(outcome);
            admitted
        };
        if let Err(e) = self.store.update_budgets(&names, &mut update).await {
            warn!(error = %e, "the budget ledger failed; the model call is refused");
            return Err(BudgetError::Unavailable);
        }
        let day = decided.unwrap_or(Err(BudgetError::Unavailable))?;
        let hold = Hold {
            user: user.to_owned(),
            amount,
            day,
        };
        Ok(Reservation::new(hold, self.releases.clone()))
    }
}
