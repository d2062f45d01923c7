//! Token budgets and request rates, reserved atomically across scopes: in this process
//! ([`Budgets`]), or in a ledger kept elsewhere through [`BudgetLedger`] (a database several
//! servers share), which applies the same rules over stored counters ([`reserve_in`],
//! [`release_in`]; see `shared.rs`).
//!
//! Scopes: the global and the per-user **token budget per UTC day**, and the global and the
//! per-user **request rate per minute** (one request = one model call). [`Budgets::reserve`]
//! checks every scope and then reserves in all of them inside one critical section (a
//! `std::sync::Mutex`, never held across an `.await`), so N concurrent callers can never
//! overspend: it is all scopes or none.
//!
//! A [`Reservation`] then goes through:
//! - [`Reservation::mark_sent`] just before the HTTP call;
//! - [`Reservation::settle`] with the tokens the service reported (even above the amount);
//! - or is dropped: **unsent → refunded** (tokens and the rate slot), **sent but unsettled →
//!   charged the full amount** (cancelled, timed out, cut off, no usage reported).
//!
//! The amount to reserve for a call is [`estimate_tokens`] of the request plus the call's
//! `max_completion_tokens`. Tokens settled after midnight UTC for a reservation made the day
//! before count for neither day's `used` (the reservation itself still held the budget).

mod gcra;
mod shared;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use gcra::{Gcra, Tick};
pub use shared::{BudgetLedger, Hold, Release, ScopeState, release_in, reserve_in};

/// Users remembered before idle ones are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// The limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BudgetLimits {
    /// Tokens per UTC day, all users together.
    pub global_tokens_per_day: Option<u64>,
    /// Tokens per UTC day, per user.
    pub user_tokens_per_day: Option<u64>,
    /// Model calls per minute, all users together (burst: the same number).
    pub global_requests_per_minute: Option<u32>,
    /// Model calls per minute, per user (burst: the same number).
    pub user_requests_per_minute: Option<u32>,
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// All users together.
    Global,
    /// The requesting user.
    User,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Global => "global",
            Scope::User => "per-user",
        })
    }
}

/// A reservation was refused; nothing was reserved in any scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// Not enough tokens left today.
    #[error(
        "the {scope} daily assistant token budget is exhausted \
         ({available} of {limit} tokens left, {requested} needed)"
    )]
    TokensExhausted {
        /// The scope that refused.
        scope: Scope,
        /// Its daily limit.
        limit: u64,
        /// Tokens neither used nor reserved.
        available: u64,
        /// What was asked for.
        requested: u64,
    },
    /// The budgets could not be checked (a shared ledger's database failed): nothing was
    /// reserved, and the call is not made.
    #[error("the assistant's budgets cannot be checked right now")]
    Unavailable,
    /// Too many model calls in the last minute.
    #[error("too many assistant requests ({scope} rate limit); retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        /// The scope that refused.
        scope: Scope,
        /// When a request would be admitted.
        retry_after: Duration,
    },
}

/// Usage of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScopeUsage {
    /// Tokens settled (or charged) today.
    pub used: u64,
    /// Tokens held by outstanding reservations.
    pub reserved: u64,
    /// The daily limit, if any.
    pub limit: Option<u64>,
}

/// Current usage, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetSnapshot {
    /// The UTC day the `used` figures belong to (days since the Unix epoch).
    pub day: u64,
    /// All users together.
    pub global: ScopeUsage,
    /// Each user the budget remembers.
    pub users: BTreeMap<String, ScopeUsage>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Ledger {
    used: u64,
    reserved: u64,
}

impl Ledger {
    fn check(&self, scope: Scope, limit: Option<u64>, amount: u64) -> Result<(), BudgetError> {
        let Some(limit) = limit else { return Ok(()) };
        let available = limit.saturating_sub(self.used.saturating_add(self.reserved));
        if amount > available {
            return Err(BudgetError::TokensExhausted {
                scope,
                limit,
                available,
                requested: amount,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct UserState {
    ledger: Ledger,
    rate: Gcra,
}

#[derive(Debug, Default)]
struct State {
    day: u64,
    global: Ledger,
    global_rate: Gcra,
    users: HashMap<String, UserState>,
}

/// A point in time for the budget: the UTC day and a monotonic tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) day: u64,
    pub(crate) tick: Tick,
}

#[derive(Debug)]
struct Inner {
    limits: BudgetLimits,
    origin: Instant,
    state: Mutex<State>,
}

/// Token budgets and request rates shared by every run of a process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Budgets {
    inner: Arc<Inner>,
}

impl Budgets {
    /// Budgets with these limits and nothing used yet.
    pub fn new(limits: BudgetLimits) -> Self {
        Budgets {
            inner: Arc::new(Inner {
                limits,
                origin: Instant::now(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Budgets that never refuse (still counted, for metrics).
    pub fn unlimited() -> Self {
        Budgets::new(BudgetLimits::default())
    }

    /// The configured limits.
    pub fn limits(&self) -> BudgetLimits {
        self.inner.limits
    }

    fn now(&self) -> Now {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Now {
            day: secs / 86_400,
            tick: self.inner.origin.elapsed(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters (every update is a few
        // additions), so a poisoned lock is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `amount` tokens and one request for `user` in every scope, or nothing.
    pub fn reserve(&self, user: &str, amount: u64) -> Result<Reservation, BudgetError> {
        self.reserve_at(user, amount, self.now())
    }

    pub(crate) fn reserve_at(
        &self,
        user: &str,
        amount: u64,
        now: Now,
    ) -> Result<Reservation, BudgetError> {
        let limits = self.inner.limits;
        let mut state = self.lock();
        roll_day(&mut state, now);
        if state.users.len() > PRUNE_ABOVE {
            state.users.retain(|_, u| {
                u.ledger.reserved > 0 || u.ledger.used > 0 || !u.rate.is_idle(now.tick)
            });
        }
        // Check everything first...
        state
            .global
            .check(Scope::Global, limits.global_tokens_per_day, amount)?;
        let user_state = state.users.get(user);
        user_state.map(|u| u.ledger).unwrap_or_default().check(
            Scope::User,
            limits.user_tokens_per_day,
            amount,
        )?;
        if let Some(rpm) = limits.global_requests_per_minute {
            state
                .global_rate
                .check(now.tick, rpm)
                .map_err(|retry_after| BudgetError::RateLimited {
                    scope: Scope::Global,
                    retry_after,
                })?;
        }
        if let (Some(rpm), Some(u)) = (limits.user_requests_per_minute, user_state) {
            u.rate
                .check(now.tick, rpm)
                .map_err(|retry_after| BudgetError::RateLimited {
                    scope: Scope::User,
                    retry_after,
                })?;
        }
        // ...then commit everything.
        state.global.reserved += amount;
        if let Some(rpm) = limits.global_requests_per_minute {
            state.global_rate.admit(now.tick, rpm);
        }
        let u = state.users.entry(user.to_string()).or_default();
        u.ledger.reserved += amount;
        if let Some(rpm) = limits.user_requests_per_minute {
            u.rate.admit(now.tick, rpm);
        }
        Ok(Reservation {
            owner: Owner::Budgets(self.clone()),
            user: user.to_string(),
            amount,
            day: now.day,
            sent: false,
            done: false,
        })
    }

    /// Current usage of every scope.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = self.now();
        let limits = self.inner.limits;
        let mut state = self.lock();
        roll_day(&mut state, now);
        BudgetSnapshot {
            day: state.day,
            global: ScopeUsage {
                used: state.global.used,
                reserved: state.global.reserved,
                limit: limits.global_tokens_per_day,
            },
            users: state
                .users
                .iter()
                .map(|(name, u)| {
                    (
                        name.clone(),
                        ScopeUsage {
                            used: u.ledger.used,
                            reserved: u.ledger.reserved,
                            limit: limits.user_tokens_per_day,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Releases `r`'s hold and charges `charge` tokens (to today, if `r` was made today);
    /// `refund_rate` also gives back its request slot.
    fn release(&self, r: &Reservation, charge: u64, refund_rate: bool) {
        let limits = self.inner.limits;
        let mut state = self.lock();
        let same_day = state.day == r.day;
        state.global.reserved = state.global.reserved.saturating_sub(r.amount);
        if same_day {
            state.global.used = state.global.used.saturating_add(charge);
        }
        if refund_rate && let Some(rpm) = limits.global_requests_per_minute {
            state.global_rate.refund(rpm);
        }
        if let Some(u) = state.users.get_mut(&r.user) {
            u.ledger.reserved = u.ledger.reserved.saturating_sub(r.amount);
            if same_day {
                u.ledger.used = u.ledger.used.saturating_add(charge);
            }
            if refund_rate && let Some(rpm) = limits.user_requests_per_minute {
                u.rate.refund(rpm);
            }
        }
    }
}

/// Starts a new UTC day: yesterday's `used` is forgotten; outstanding reservations still hold.
fn roll_day(state: &mut State, now: Now) {
    if now.day > state.day {
        state.day = now.day;
        state.global.used = 0;
        for u in state.users.values_mut() {
            u.ledger.used = 0;
        }
    }
}

/// Who ends a reservation.
#[derive(Debug)]
enum Owner {
    /// This process's budgets.
    Budgets(Budgets),
    /// Another ledger (see [`BudgetLedger`]).
    Other(Arc<dyn Release>),
}

/// Tokens held for one model call. See the module docs for its life cycle.
#[derive(Debug)]
#[must_use = "dropping a reservation refunds it (unsent) or charges it in full (sent)"]
pub struct Reservation {
    owner: Owner,
    user: String,
    amount: u64,
    day: u64,
    sent: bool,
    done: bool,
}

impl Reservation {
    /// Tokens held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Marks the request as sent: from now on dropping it charges the full amount.
    pub fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Ends the reservation, charging what the service reported (which may exceed the
    /// amount). Settling `0` is how a call that certainly cost nothing (an error status, no
    /// connection) gives everything back.
    pub fn settle(mut self, actual_total_tokens: u64) {
        self.done = true;
        self.release(actual_total_tokens, false);
    }

    fn release(&self, charge: u64, refund_rate: bool) {
        match &self.owner {
            Owner::Budgets(budgets) => budgets.release(self, charge, refund_rate),
            Owner::Other(releaser) => {
                let hold = Hold {
                    user: self.user.clone(),
                    amount: self.amount,
                    day: self.day,
                };
                releaser.release(&hold, charge, refund_rate);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.sent {
            self.release(self.amount, false);
        } else {
            self.release(0, true);
        }
    }
}

/// The prompt estimate for a request of `request_bytes` serialized bytes holding `messages`
/// messages: `ceil(bytes / 3) + 16 × messages` (generous for English; no tokenizer needed).
pub fn estimate_tokens(request_bytes: usize, messages: usize) -> u64 {
    let bytes = u64::try_from(request_bytes).unwrap_or(u64::MAX);
    let messages = u64::try_from(messages).unwrap_or(u64::MAX);
    bytes
        .div_ceil(3)
        .saturating_add(messages.saturating_mul(16))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(day: u64, secs: u64) -> Now {
        Now {
            day,
            tick: Duration::from_secs(secs),
        }
    }

    fn limits() -> BudgetLimits {
        BudgetLimits {
            global_tokens_per_day: Some(1000),
            user_tokens_per_day: Some(600),
            global_requests_per_minute: None,
            user_requests_per_minute: Some(2),
        }
    }

    #[test]
    fn life_cycle_refund_settle_and_charge() {
        let b = Budgets::new(limits());
        let r = b.reserve_at("u", 500, at(1, 0)).unwrap();
        assert_eq!(b.snapshot_at_day().global.reserved, 500);
        drop(r); // unsent: refunded, request slot too
        let s = b.snapshot_at_day();
        assert_eq!((s.global.used, s.global.reserved), (0, 0));

        let mut r = b.reserve_at("u", 500, at(1, 0)).unwrap();
        r.mark_sent();
        r.settle(120);
        let mut r = b.reserve_at("u", 300, at(1, 0)).unwrap();
        r.mark_sent();
        drop(r); // sent, never settled: charged in full
        let s = b.snapshot_at_day();
        assert_eq!((s.global.used, s.global.reserved), (420, 0));
        assert_eq!(s.users["u"].used, 420);
    }

    #[test]
    fn refuses_in_any_scope_and_reserves_nothing() {
        let b = Budgets::new(limits());
        let err = b.reserve_at("u", 601, at(1, 0)).unwrap_err();
        assert!(matches!(
            err,
            BudgetError::TokensExhausted {
                scope: Scope::User,
                ..
            }
        ));
        let _a = b.reserve_at("a", 600, at(1, 0)).unwrap();
        let err = b.reserve_at("b", 500, at(1, 0)).unwrap_err();
        assert!(matches!(
            err,
            BudgetError::TokensExhausted {
                scope: Scope::Global,
                available: 400,
                ..
            }
        ));
        // The refused user got nothing reserved and no request counted.
        assert_eq!(b.snapshot_at_day().users.get("b").map(|u| u.reserved), None);
        let _b1 = b.reserve_at("b", 1, at(1, 0)).unwrap();
        let _b2 = b.reserve_at("b", 1, at(1, 0)).unwrap();
        let err = b.reserve_at("b", 1, at(1, 0)).unwrap_err();
        assert!(matches!(
            err,
            BudgetError::RateLimited {
                scope: Scope::User,
                ..
            }
        ));
    }

    #[test]
    fn a_new_day_starts_from_zero() {
        let b = Budgets::new(limits());
        let mut r = b.reserve_at("u", 600, at(1, 0)).unwrap();
        r.mark_sent();
        r.settle(600);
        assert!(b.reserve_at("u", 1, at(1, 100)).is_err());
        let r = b.reserve_at("u", 600, at(2, 200)).unwrap();
        r.settle(10);
        assert_eq!(b.snapshot_at_day().users["u"].used, 10);
    }

    #[test]
    fn estimate() {
        assert_eq!(estimate_tokens(0, 0), 0);
        assert_eq!(estimate_tokens(10, 2), 4 + 32);
    }

    impl Budgets {
        /// A snapshot without rolling the day (tests use synthetic days).
        fn snapshot_at_day(&self) -> BudgetSnapshot {
            let state = self.lock();
            BudgetSnapshot {
                day: state.day,
                global: ScopeUsage {
                    used: state.global.used,
                    reserved: state.global.reserved,
                    limit: None,
                },
                users: state
                    .users
                    .iter()
                    .map(|(k, u)| {
                        (
                            k.clone(),
                            ScopeUsage {
                                used: u.ledger.used,
                                reserved: u.ledger.reserved,
                                limit: None,
                            },
                        )
                    })
                    .collect(),
            }
        }
    }
}
