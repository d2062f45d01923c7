//! Stalls in the fan-out benchmark: the longest time a receiver went without receiving anything
//! while at least one update addressed to it was outstanding (sent by another client of its
//! board, not yet received).
//!
//! Why not the raw gap between two deliveries: when the senders pause (the load generator's own
//! scheduling, the end of the window), nothing is owed, and that wait is not the server's doing.
//! Why not the latency percentiles: a receiver that hears nothing for a second while thousands of
//! other deliveries are fast still has a good p99; its stall cannot hide here.
//!
//! A [`Receiver`] keeps, per sender, how far into that sender's log of sent updates it has
//! received; the log itself (send times, in order) belongs to the caller, who answers
//! "when was update `i` of sender `s` sent" through a closure.

use std::time::{Duration, Instant};

/// What one receiver has received of each sender's updates, and its longest stall so far.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Per sender slot: index in that sender's log of the first update not yet received.
    next: Vec<usize>,
    /// The receiver's own sender slot, if it sends too: its own updates are not owed to it.
    own: Option<usize>,
    last_delivery: Option<Instant>,
    longest: Duration,
}

impl Receiver {
    /// A receiver on a board with `senders` sender slots, `own` being its own if it sends.
    pub fn new(senders: usize, own: Option<usize>) -> Self {
        Self {
            next: vec![0; senders],
            own,
            last_delivery: None,
            longest: Duration::ZERO,
        }
    }

    /// Index in sender `slot`'s log of the first update this receiver has not received.
    pub fn next(&self, slot: usize) -> usize {
        self.next.get(slot).copied().unwrap_or(0)
    }

    /// Records that everything before index `to` of sender `slot`'s log has been received.
    /// Call [`Self::delivery`] first, once per incoming message that advances any sender.
    pub fn advance(&mut self, slot: usize, to: usize) {
        if let Some(next) = self.next.get_mut(slot) {
            *next = (*next).max(to);
        }
    }

    /// A message delivering something arrived at `now` (before it is applied with
    /// [`Self::advance`]). `sent_at(slot, i)` is the send time of update `i` of sender `slot`
    /// if it was sent. Stalls count from `since` on (the measured window's start; `None`: not
    /// yet measuring).
    pub fn delivery(
        &mut self,
        now: Instant,
        since: Option<Instant>,
        sent_at: impl Fn(usize, usize) -> Option<Instant>,
    ) {
        if let Some(since) = since {
            let waited = self.waited(now, since, &sent_at);
            self.longest = self.longest.max(waited);
        }
        self.last_delivery = Some(now);
    }

    /// The longest stall, counting the one still open at `end` if something is still owed.
    pub fn longest_at(
        &self,
        end: Instant,
        since: Instant,
        sent_at: impl Fn(usize, usize) -> Option<Instant>,
    ) -> Duration {
        self.longest.max(self.waited(end, since, &sent_at))
    }

    /// The longest stall among the messages that arrived (not counting an open one).
    pub fn longest(&self) -> Duration {
        self.longest
    }

    /// Updates owed but not received: `len(slot)` is the length of sender `slot`'s log.
    pub fn lacking(&self, len: impl Fn(usize) -> usize) -> u64 {
        self.owed_slots()
            .map(|slot| len(slot).saturating_sub(self.next(slot)) as u64)
            .sum()
    }

    fn owed_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.next.len()).filter(move |&slot| Some(slot) != self.own)
    }

    /// Send time of the oldest update owed and not received, over every sender but its own.
    fn oldest_owed(&self, sent_at: impl Fn(usize, usize) -> Option<Instant>) -> Option<Instant> {
        self.owed_slots()
            .filter_map(|slot| sent_at(slot, self.next(slot)))
            .min()
    }

    /// How long, up to `now`, the receiver has been owed something without receiving anything:
    /// from the latest of its last delivery, the send of the oldest update it is owed, and
    /// `since`.
    fn waited(
        &self,
        now: Instant,
        since: Instant,
        sent_at: impl Fn(usize, usize) -> Option<Instant>,
    ) -> Duration {
        let Some(oldest) = self.oldest_owed(sent_at) else {
            return Duration::ZERO;
        };
        let start = [Some(oldest), self.last_delivery, Some(since)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(oldest);
        now.saturating_duration_since(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Sender logs as send offsets (ms) from `t0`.
    fn logs(t0: Instant, logs: &[&[u64]]) -> Vec<Vec<Instant>> {
        logs.iter()
            .map(|l| l.iter().map(|&m| t0 + ms(m)).collect())
            .collect()
    }

    fn at(logs: &[Vec<Instant>]) -> impl Fn(usize, usize) -> Option<Instant> + '_ {
        |slot, i| logs.get(slot).and_then(|l| l.get(i)).copied()
    }

    #[test]
    fn steady_deliveries_stall_no_longer_than_their_latency() {
        let t0 = Instant::now();
        let log = logs(t0, &[&[0, 100, 200]]);
        let mut rx = Receiver::new(1, None);
        for (i, recv) in [5u64, 104, 203].into_iter().enumerate() {
            rx.delivery(t0 + ms(recv), Some(t0), at(&log));
            rx.advance(0, i + 1);
        }
        // Nothing owed between deliveries: each wait is one update's latency (5, 4, 3 ms).
        assert_eq!(rx.longest(), ms(5));
        assert_eq!(rx.longest_at(t0 + ms(900), t0, at(&log)), ms(5));
        assert_eq!(rx.lacking(|s| log[s].len()), 0);
    }

    #[test]
    fn a_held_pipeline_is_one_long_stall() {
        let t0 = Instant::now();
        let log = logs(t0, &[&[0, 10, 20, 30]]);
        let mut rx = Receiver::new(1, None);
        rx.delivery(t0 + ms(2), Some(t0), at(&log));
        rx.advance(0, 1);
        // Updates 1..3 arrive together at 800 ms: owed since 10 ms, nothing in between.
        rx.delivery(t0 + ms(800), Some(t0), at(&log));
        rx.advance(0, 4);
        assert_eq!(rx.longest(), ms(790));
    }

    #[test]
    fn owed_by_another_sender_counts_from_the_last_delivery() {
        let t0 = Instant::now();
        // Sender 0 sends at 0; sender 1 at 50. The receiver gets sender 1's update at 60
        // but sender 0's only at 500: owed since 0, last delivery at 60, so 440 ms.
        let log = logs(t0, &[&[0], &[50]]);
        let mut rx = Receiver::new(2, None);
        rx.delivery(t0 + ms(60), Some(t0), at(&log));
        rx.advance(1, 1);
        rx.delivery(t0 + ms(500), Some(t0), at(&log));
        rx.advance(0, 1);
        assert_eq!(rx.longest(), ms(440));
    }

    #[test]
    fn own_updates_are_not_owed() {
        let t0 = Instant::now();
        let log = logs(t0, &[&[0, 10, 20], &[5]]);
        let mut rx = Receiver::new(2, Some(0));
        rx.delivery(t0 + ms(7), Some(t0), at(&log));
        rx.advance(1, 1);
        assert_eq!(rx.lacking(|s| log[s].len()), 0);
        assert_eq!(rx.longest_at(t0 + ms(1000), t0, at(&log)), ms(2));
    }

    #[test]
    fn an_incomplete_receiver_stalls_until_the_end_of_the_drain() {
        let t0 = Instant::now();
        let log = logs(t0, &[&[0, 10, 20]]);
        let mut rx = Receiver::new(1, None);
        rx.delivery(t0 + ms(3), Some(t0), at(&log));
        rx.advance(0, 1);
        assert_eq!(rx.lacking(|s| log[s].len()), 2);
        // Owed since 10 ms; the drain ends at 2,010 ms.
        assert_eq!(rx.longest_at(t0 + ms(2010), t0, at(&log)), ms(2000));
    }

    #[test]
    fn stalls_count_from_the_window_start() {
        let t0 = Instant::now();
        let log = logs(t0, &[&[0]]);
        let mut rx = Receiver::new(1, None);
        // Before the window: not counted.
        rx.delivery(t0 + ms(300), None, at(&log));
        assert_eq!(rx.longest(), Duration::ZERO);
        // Owed since 0 but the window started at 250: 100 ms count.
        let mut rx = Receiver::new(1, None);
        rx.delivery(t0 + ms(350), Some(t0 + ms(250)), at(&log));
        assert_eq!(rx.longest(), ms(100));
    }
}
