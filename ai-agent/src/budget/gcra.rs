//! A generic cell rate algorithm (GCRA) cell: N requests per minute with a burst of N.
//!
//! Hand-written rather than `governor` because a reservation must check *every* scope (token
//! ledgers and rate cells) and then commit all of them, or none, in one critical section:
//! `governor` consumes a cell on a successful check and offers no refund, so a request
//! admitted by the rate limiter but refused by a token budget (or never sent) would still be
//! counted. This cell separates [`Gcra::check`] from [`Gcra::admit`] and can [`Gcra::refund`].

use std::time::Duration;

/// Time since the budget's origin (a monotonic clock).
pub(crate) type Tick = Duration;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gcra {
    /// Theoretical arrival time of the next request.
    tat: Tick,
}

/// The per-request emission interval and the burst tolerance for `per_minute`.
fn parameters(per_minute: u32) -> (Duration, Duration) {
    let minute = Duration::from_secs(60);
    let interval = minute / per_minute.max(1);
    (interval, minute.saturating_sub(interval))
}

impl Gcra {
    /// A cell whose next request is expected at `tat` (as stored elsewhere).
    pub(crate) fn at(tat: Tick) -> Self {
        Gcra { tat }
    }

    /// When the next request is expected.
    pub(crate) fn tat(&self) -> Tick {
        self.tat
    }

    /// `Err(wait)` if a request now would exceed `per_minute`.
    pub(crate) fn check(&self, now: Tick, per_minute: u32) -> Result<(), Duration> {
        let (_, tolerance) = parameters(per_minute);
        let tat = self.tat.max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            Err(ahead - tolerance)
        } else {
            Ok(())
        }
    }

    /// Counts one request (after a successful [`Gcra::check`]).
    pub(crate) fn admit(&mut self, now: Tick, per_minute: u32) {
        let (interval, _) = parameters(per_minute);
        self.tat = self.tat.max(now) + interval;
    }

    /// Gives back one request's worth (a reservation that was never sent).
    pub(crate) fn refund(&mut self, per_minute: u32) {
        let (interval, _) = parameters(per_minute);
        self.tat = self.tat.saturating_sub(interval);
    }

    /// Whether the cell remembers anything at `now` (otherwise it can be forgotten).
    pub(crate) fn is_idle(&self, now: Tick) -> bool {
        self.tat <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_spaces_requests() {
        let mut g = Gcra::default();
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert!(g.check(t0, 3).is_ok());
            g.admit(t0, 3);
        }
        let wait = g.check(t0, 3).err();
        assert_eq!(wait, Some(Duration::from_secs(20)));
        assert!(g.check(t0 + Duration::from_secs(20), 3).is_ok());
        g.refund(3);
        assert!(g.check(t0, 3).is_ok());
        assert!(!g.is_idle(t0));
        assert!(g.is_idle(t0 + Duration::from_secs(60)));
    }
}
