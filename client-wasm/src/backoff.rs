//! Reconnect delays: exponential backoff with full jitter.
//!
//! After the `n`th failed attempt in a row the client waits a random time in
//! `[base * 2^n / 2, base * 2^n]`, capped at `max`: half the window is kept so that a client never
//! retries at once after a failure, and the random half spreads a crowd of clients that lost the
//! same server over the window instead of bringing them back in one instant. A connection that
//! stayed up for a while resets the count.

/// Backoff state. Randomness comes from the caller (a number in `[0, 1)`), so it is testable.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: f64,
    max_ms: f64,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(500.0, 30_000.0)
    }
}

impl Backoff {
    /// Delays start around `base_ms` and never exceed `max_ms`.
    pub fn new(base_ms: f64, max_ms: f64) -> Self {
        Backoff {
            base_ms,
            max_ms: max_ms.max(base_ms),
            failures: 0,
        }
    }

    /// The delay before the next attempt, given a random number in `[0, 1)`; counts a failure.
    pub fn next_delay_ms(&mut self, random: f64) -> f64 {
        let window = (self.base_ms * 2f64.powi(self.failures.min(30) as i32)).min(self.max_ms);
        self.failures = self.failures.saturating_add(1);
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        window / 2.0 + random * window / 2.0
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A connection succeeded (it synced and stayed up): start again from `base_ms`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_jitters_within_the_window() {
        let mut b = Backoff::new(500.0, 30_000.0);
        let lows: Vec<f64> = (0..10).map(|_| b.next_delay_ms(0.0)).collect();
        assert_eq!(&lows[..4], &[250.0, 500.0, 1000.0, 2000.0]);
        assert_eq!(lows[9], 15_000.0);
        let mut b = Backoff::new(500.0, 30_000.0);
        let highs: Vec<f64> = (0..10).map(|_| b.next_delay_ms(0.999_999)).collect();
        assert!(highs[0] < 500.0 && highs[0] > 499.0);
        assert!(highs[9] <= 30_000.0);
        assert!(highs.iter().zip(&lows).all(|(h, l)| h > l));
    }

    #[test]
    fn resets_after_a_good_connection() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay_ms(0.5);
        }
        assert_eq!(b.failures(), 5);
        b.reset();
        assert_eq!(b.next_delay_ms(0.0), 250.0);
    }

    #[test]
    fn survives_bad_randomness() {
        let mut b = Backoff::default();
        assert!(b.next_delay_ms(f64::NAN).is_finite());
        assert!(b.next_delay_ms(7.0) <= 1000.0);
    }
}
