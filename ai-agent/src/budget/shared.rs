//! Budgets kept outside this process: the [`BudgetLedger`] the run loop reserves through, and
//! the rules of one reservation over stored counters ([`ScopeState`], [`reserve_in`],
//! [`release_in`]), so a ledger that keeps them elsewhere (a database shared by several
//! servers) applies exactly these rules and knows nothing of them itself.
//!
//! Differences from the in-process [`Budgets`]: time is the wall clock (Unix milliseconds,
//! shared by every server), and a hold belongs to the UTC day it was made: at midnight a scope
//! starts from zero, holds included, so a hold never released (its server stopped mid-call)
//! counts like a charge in full until the day ends, never longer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::gcra::Gcra;
use super::{BudgetError, BudgetLimits, Budgets, Ledger, Reservation, Scope};

/// Where the run loop reserves tokens and requests: [`Budgets`] (this process) or a ledger
/// shared by several processes.
#[async_trait]
pub trait BudgetLedger: Send + Sync + fmt::Debug {
    /// Reserves `amount` tokens and one request for `user` in every scope, or nothing.
    async fn reserve(&self, user: &str, amount: u64) -> Result<Reservation, BudgetError>;
}

#[async_trait]
impl BudgetLedger for Budgets {
    async fn reserve(&self, user: &str, amount: u64) -> Result<Reservation, BudgetError> {
        Budgets::reserve(self, user, amount)
    }
}

/// What a reservation holds, for the ledger that made it to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Whose.
    pub user: String,
    /// Tokens held.
    pub amount: u64,
    /// The UTC day it was made (days since the Unix epoch).
    pub day: u64,
}

/// Ends holds. Called from [`Reservation::settle`] and from a reservation's `Drop`, so it must
/// not block: a ledger that writes elsewhere queues the release.
pub trait Release: Send + Sync + fmt::Debug {
    /// Ends `hold`: charges `charge` tokens to its day and, if `refund_rate`, gives back its
    /// request slot (a reservation never sent).
    fn release(&self, hold: &Hold, charge: u64, refund_rate: bool);
}

impl Reservation {
    /// A reservation of a ledger of another kind than [`Budgets`]: `releaser` ends it.
    pub fn new(hold: Hold, releaser: Arc<dyn Release>) -> Self {
        Reservation {
            owner: super::Owner::Other(releaser),
            user: hold.user,
            amount: hold.amount,
            day: hold.day,
            sent: false,
            done: false,
        }
    }
}

/// One scope's stored counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeState {
    /// The UTC day `used` and `reserved` belong to.
    pub day: u64,
    /// Tokens settled (or charged) that day.
    pub used: u64,
    /// Tokens held by outstanding reservations made that day.
    pub reserved: u64,
    /// The request-rate cell: the theoretical arrival time of the next request, Unix ms.
    pub tat_ms: u64,
}

impl ScopeState {
    fn roll(&mut self, day: u64) {
        if day > self.day {
            *self = ScopeState {
                day,
                used: 0,
                reserved: 0,
                tat_ms: self.tat_ms,
            };
        }
    }

    fn ledger(&self) -> Ledger {
        Ledger {
            used: self.used,
            reserved: self.reserved,
        }
    }

    fn gcra(&self) -> Gcra {
        Gcra::at(Duration::from_millis(self.tat_ms))
    }

    fn set_gcra(&mut self, gcra: Gcra) {
        self.tat_ms = u64::try_from(gcra.tat().as_millis()).unwrap_or(u64::MAX);
    }
}

/// The wall clock for a reservation: Unix milliseconds.
fn clock(now_ms: u64) -> (u64, Duration) {
    (now_ms / 86_400_000, Duration::from_millis(now_ms))
}

/// Checks every scope and reserves `amount` tokens and one request in all of them (`global`,
/// and `user`'s), or changes nothing; at `now_ms` (Unix milliseconds). Returns the day the
/// hold belongs to.
pub fn reserve_in(
    limits: &BudgetLimits,
    global: &mut ScopeState,
    user: &mut ScopeState,
    amount: u64,
    now_ms: u64,
) -> Result<u64, BudgetError> {
    let (day, tick) = clock(now_ms);
    global.roll(day);
    user.roll(day);
    global
        .ledger()
        .check(Scope::Global, limits.global_tokens_per_day, amount)?;
    user.ledger()
        .check(Scope::User, limits.user_tokens_per_day, amount)?;
    for (scope, state, rpm) in [
        (Scope::Global, &*global, limits.global_requests_per_minute),
        (Scope::User, &*user, limits.user_requests_per_minute),
    ] {
        if let Some(rpm) = rpm {
            state
                .gcra()
                .check(tick, rpm)
                .map_err(|retry_after| BudgetError::RateLimited { scope, retry_after })?;
        }
    }
    for (state, rpm) in [
        (&mut *global, limits.global_requests_per_minute),
        (&mut *user, limits.user_requests_per_minute),
    ] {
        state.reserved = state.reserved.saturating_add(amount);
        if let Some(rpm) = rpm {
            let mut gcra = state.gcra();
            gcra.admit(tick, rpm);
            state.set_gcra(gcra);
        }
    }
    Ok(day)
}

/// Ends `hold` in both scopes: if the scope is still on the hold's day, the hold goes and
/// `charge` is added to `used` (a hold of a day gone went with it); `refund_rate` gives its
/// request slot back.
pub fn release_in(
    limits: &BudgetLimits,
    global: &mut ScopeState,
    user: &mut ScopeState,
    hold: &Hold,
    charge: u64,
    refund_rate: bool,
) {
    for (state, rpm) in [
        (global, limits.global_requests_per_minute),
        (user, limits.user_requests_per_minute),
    ] {
        if state.day == hold.day {
            state.reserved = state.reserved.saturating_sub(hold.amount);
            state.used = state.used.saturating_add(charge);
        }
        if refund_rate && let Some(rpm) = rpm {
            let mut gcra = state.gcra();
            gcra.refund(rpm);
            state.set_gcra(gcra);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: u64 = 86_400_000;

    fn limits() -> BudgetLimits {
        BudgetLimits {
            global_tokens_per_day: Some(1000),
            user_tokens_per_day: Some(600),
            global_requests_per_minute: None,
            user_requests_per_minute: Some(2),
        }
    }

    #[test]
    fn reserve_settle_refund_and_refuse_in_stored_counters() {
        let l = limits();
        let (mut g, mut u) = (ScopeState::default(), ScopeState::default());
        let now = 10 * DAY + 5;
        let day = reserve_in(&l, &mut g, &mut u, 500, now).unwrap();
        assert_eq!((g.reserved, u.reserved, day), (500, 500, 10));
        let hold = Hold {
            user: "u".into(),
            amount: 500,
            day,
        };
        release_in(&l, &mut g, &mut u, &hold, 120, false);
        assert_eq!((g.used, g.reserved, u.used, u.reserved), (120, 0, 120, 0));
        // The user's 600 a day: 480 left.
        let err = reserve_in(&l, &mut g, &mut u, 481, now).unwrap_err();
        assert!(matches!(
            err,
            BudgetError::TokensExhausted {
                scope: Scope::User,
                available: 480,
                ..
            }
        ));
        assert_eq!(u.reserved, 0, "a refusal reserves nothing");
        // Two requests a minute: the second is admitted, the third refused, a refund frees one.
        reserve_in(&l, &mut g, &mut u, 1, now).unwrap();
        let err = reserve_in(&l, &mut g, &mut u, 1, now).unwrap_err();
        assert!(matches!(
            err,
            BudgetError::RateLimited {
                scope: Scope::User,
                ..
            }
        ));
        let one = Hold {
            user: "u".into(),
            amount: 1,
            day,
        };
        release_in(&l, &mut g, &mut u, &one, 0, true);
        reserve_in(&l, &mut g, &mut u, 1, now).unwrap();
    }

    #[test]
    fn a_new_day_starts_from_zero_holds_included() {
        let l = limits();
        let (mut g, mut u) = (ScopeState::default(), ScopeState::default());
        let day = reserve_in(&l, &mut g, &mut u, 600, 3 * DAY).unwrap();
        // Never released (its server stopped): it holds the day...
        assert!(reserve_in(&l, &mut g, &mut u, 1, 3 * DAY + 1000).is_err());
        // ...and no longer.
        reserve_in(&l, &mut g, &mut u, 600, 4 * DAY + 60_000).unwrap();
        // Released late, the old hold touches nothing of the new day.
        let old = Hold {
            user: "u".into(),
            amount: 600,
            day,
        };
        release_in(&l, &mut g, &mut u, &old, 600, false);
        assert_eq!((u.day, u.used, u.reserved), (4, 0, 600));
    }
}
