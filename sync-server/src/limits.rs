//! Per-address and per-connection limits: open connections, message and request rates.
//!
//! Rates are GCRA limits from `governor`: `rate` per second sustained, with `burst` more
//! allowed at once. A limit of zero means none.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limits on what clients may send and hold open. Zero means "no limit" for the connection
/// and rate limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message and HTTP body accepted, in bytes.
    pub max_message_bytes: usize,
    /// Frames queued for one connection before it is closed as too slow (1013).
    pub outbound_queue: usize,
    /// Bytes queued for one connection before it is closed as too slow (1013); one frame of
    /// any size still fits an empty queue.
    pub outbound_queue_bytes: usize,
    /// Bytes of updates one connection may have sent and not yet had committed; past it the
    /// server stops reading its socket (TCP backpressure) until commits catch up. Never below
    /// `max_message_bytes`.
    pub max_uncommitted_bytes: usize,
    /// WebSocket connections open at once from one client address.
    pub max_connections_per_address: usize,
    /// A WebSocket connection that sends nothing (not even a pong) for this long is closed.
    pub read_timeout: Duration,
    /// Messages one WebSocket connection may send per second, sustained.
    pub message_rate: u32,
    /// Messages one WebSocket connection may send in a burst above the rate.
    pub message_burst: u32,
    /// A connection over its message rate is slowed down; one slowed down for more than three
    /// quarters of this window is closed (1008). A minute by default.
    pub abuse_window: Duration,
    /// HTTP requests one client address may make per second, sustained.
    pub http_rate: u32,
    /// HTTP requests one client address may make in a burst above the rate.
    pub http_burst: u32,
    /// Origins allowed to open WebSockets (browsers send `Origin`); empty allows any.
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            outbound_queue: 1024,
            outbound_queue_bytes: 32 << 20,
            max_uncommitted_bytes: 32 << 20,
            max_connections_per_address: 1000,
            read_timeout: Duration::from_secs(90),
            message_rate: 500,
            message_burst: 1000,
            abuse_window: Duration::from_secs(60),
            http_rate: 100,
            http_burst: 200,
            allowed_origins: Vec::new(),
        }
    }
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate.get())).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

/// A message-rate limit for one connection.
#[derive(Debug)]
pub(crate) struct MessageLimiter(Option<DefaultDirectRateLimiter>);

impl MessageLimiter {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self(quota(rate, burst).map(RateLimiter::direct))
    }

    /// `Ok` if one more message is within the limit now (and counts it); otherwise how long
    /// until it will be.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        match &self.0 {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

/// How long a connection has waited for its message budget, per window: a connection slowed
/// down for more than three quarters of a window is abusing the server, not bursting.
#[derive(Debug)]
pub(crate) struct Throttled {
    window: Duration,
    window_start: std::time::Instant,
    waited: Duration,
}

impl Throttled {
    pub(crate) fn new(window: Duration, now: std::time::Instant) -> Self {
        Self {
            window,
            window_start: now,
            waited: Duration::ZERO,
        }
    }

    /// Counts `waited` (ending `now`); returns whether the connection has now been throttled
    /// for more than three quarters of its current window: sustained abuse.
    pub(crate) fn add(&mut self, now: std::time::Instant, waited: Duration) -> bool {
        if now.saturating_duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.waited = Duration::ZERO;
        }
        self.waited += waited;
        self.waited > self.window / 4 * 3
    }
}

/// The HTTP request-rate limit, per client address.
#[derive(Debug)]
pub(crate) struct HttpLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
}

impl HttpLimiter {
    /// `None` when the rate is zero (no limit).
    pub(crate) fn new(rate: u32, burst: u32) -> Option<Self> {
        quota(rate, burst).map(|q| Self {
            limiter: RateLimiter::keyed(q),
            checks: AtomicU64::new(0),
        })
    }

    /// `Ok` if `addr` may make a request now; otherwise how long until it may.
    pub(crate) fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        // Forget addresses whose limits have fully recovered, now and then, so the map stays
        // as small as the set of recently active clients.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&addr)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Open WebSocket connections per client address.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionCounts {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    addr: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionCounts {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// Counts a connection from `addr`, unless that address is at its limit.
    pub(crate) fn acquire(&self, addr: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(addr).or_insert(0);
        if self.max != 0 && *count >= self.max {
            if *count == 0 {
                open.remove(&addr);
            }
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            addr,
            open: self.open.clone(),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_are_counted_and_released() {
        let counts = ConnectionCounts::new(2);
        let addr: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = counts.acquire(addr).expect("first");
        let _b = counts.acquire(addr).expect("second");
        assert!(counts.acquire(addr).is_none(), "third is over the limit");
        assert!(counts.acquire("10.0.0.2".parse().expect("ip")).is_some());
        drop(a);
        assert!(counts.acquire(addr).is_some(), "a slot was freed");
    }

    #[test]
    fn message_limits_allow_the_burst_then_say_how_long_to_wait() {
        let limiter = MessageLimiter::new(10, 20);
        let allowed = (0..100).filter(|_| limiter.check().is_ok()).count();
        assert!((20..=22).contains(&allowed), "allowed {allowed}");
        let wait = limiter.check().expect_err("over the burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        let unlimited = MessageLimiter::new(0, 0);
        assert!((0..10_000).all(|_| unlimited.check().is_ok()));
    }

    #[test]
    fn only_throttling_for_most_of_a_window_counts_as_abuse() {
        let start = std::time::Instant::now();
        let mut throttled = Throttled::new(Duration::from_secs(60), start);
        assert!(!throttled.add(start + Duration::from_secs(10), Duration::from_secs(40)));
        // A new window starts over.
        assert!(!throttled.add(start + Duration::from_secs(61), Duration::from_secs(40)));
        assert!(throttled.add(start + Duration::from_secs(100), Duration::from_secs(6)));
    }

    #[test]
    fn http_limits_are_per_address() {
        let limiter = HttpLimiter::new(1, 3).expect("limited");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!((0..3).all(|_| limiter.check(a).is_ok()));
        let wait = limiter.check(a).expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1));
        assert!(limiter.check("10.0.0.2".parse().expect("ip")).is_ok());
        assert!(HttpLimiter::new(0, 0).is_none());
    }
}
