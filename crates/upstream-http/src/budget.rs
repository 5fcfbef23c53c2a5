//! [`Budget`]: a client's rate budget, shared by every clone of the client: an even pace of
//! requests (a `governor` limiter with no burst), an optional cap on requests in flight, and a
//! pause of the whole client that a `429` sets. Time is read from tokio's clock, so tests can run
//! it on a paused clock.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Tokio's clock as `governor` sees it: nanoseconds since the budget was made.
#[derive(Clone, Debug)]
struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    fn nanos(&self) -> u64 {
        saturating_nanos(self.origin.elapsed())
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::new(self.nanos())
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Permission to send one request; the in-flight slot is given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Admission<'a> {
    _slot: Option<SemaphorePermit<'a>>,
}

/// The pace, the in-flight cap and the pause of one client and its clones. Hand it to a
/// [`crate::Transport`], which admits every request through it.
#[derive(Debug)]
pub struct Budget {
    clock: TokioClock,
    limiter: Limiter,
    in_flight: Option<Semaphore>,
    /// End of the current pause, in the clock's nanoseconds; zero when never paused.
    paused_until: AtomicU64,
    /// The even spacing between two requests.
    period: Duration,
    /// When the last request was admitted, in the clock's nanoseconds plus one; zero before the
    /// first.
    last_admitted: AtomicU64,
}

impl Budget {
    /// At most `requests` every `per`, spread evenly, and at most `max_in_flight` at once when
    /// given.
    pub fn new(per: Duration, requests: NonZeroU32, max_in_flight: Option<usize>) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        // No burst: requests are spread evenly over the period, so a budget of 60 per minute
        // never sends a second request within a second of the first.
        let period = (per / requests.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
            in_flight: max_in_flight.map(|n| Semaphore::new(n.max(1))),
            paused_until: AtomicU64::new(0),
            period,
            last_admitted: AtomicU64::new(0),
        }
    }

    /// Waits until a request may be sent: a free in-flight slot, no pause, and a paced slot.
    pub(crate) async fn admit(&self) -> Admission<'_> {
        // The semaphore is never closed, so acquiring only fails in theory; then no cap applies.
        let slot = match &self.in_flight {
            Some(semaphore) => semaphore.acquire().await.ok(),
            None => None,
        };
        loop {
            self.wait_out_pause().await;
            self.wait_for_pace().await;

            // A 429 that arrived while this request waited for its turn holds it back too.
            if self.pause_remaining().is_none() {
                let now = self.clock.nanos().saturating_add(1);
                self.last_admitted.fetch_max(now, Ordering::AcqRel);
                return Admission { _slot: slot };
            }
        }
    }

    /// Waits until a request would be admitted at once, without taking the turn: no pause, a
    /// free in-flight slot, and the paced spacing since the last admitted request passed. A
    /// batch that is built only then carries everything gathered while the budget was spent;
    /// another caller may still take the turn first, and then `admit` waits as usual.
    pub async fn ready(&self) {
        loop {
            self.wait_out_pause().await;
            if let Some(semaphore) = &self.in_flight {
                // Never closed; taking and giving back a slot only waits for one to be free.
                drop(semaphore.acquire().await);
            }
            match self.until_next_turn() {
                Some(wait) => tokio::time::sleep(wait).await,
                None if self.pause_remaining().is_none() => return,
                None => {}
            }
        }
    }

    /// How long until the paced spacing since the last admitted request has passed.
    fn until_next_turn(&self) -> Option<Duration> {
        let last = self.last_admitted.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let next = (last - 1).saturating_add(saturating_nanos(self.period));
        let now = self.clock.nanos();
        (next > now).then(|| Duration::from_nanos(next - now))
    }

    /// Pauses every request for `wait` from now, unless a longer pause is already set. Returns
    /// whether the pause was extended.
    pub(crate) fn pause(&self, wait: Duration) -> bool {
        let until = self.clock.nanos().saturating_add(saturating_nanos(wait));
        self.paused_until.fetch_max(until, Ordering::AcqRel) < until
    }

    /// How long the client stays paused, if it is.
    pub fn pause_remaining(&self) -> Option<Duration> {
        let until = self.paused_until.load(Ordering::Acquire);
        let now = self.clock.nanos();
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    async fn wait_out_pause(&self) {
        while let Some(remaining) = self.pause_remaining() {
            tokio::time::sleep(remaining).await;
        }
    }

    async fn wait_for_pace(&self) {
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn per_minute(requests: u32, max_in_flight: Option<usize>) -> Budget {
        let requests = NonZeroU32::new(requests).unwrap_or(NonZeroU32::MIN);
        Budget::new(MINUTE, requests, max_in_flight)
    }

    #[tokio::test(start_paused = true)]
    async fn sixty_per_minute_spaces_requests_a_second_apart() {
        let budget = per_minute(60, Some(2));
        let started = Instant::now();
        for _ in 0..3 {
            drop(budget.admit().await);
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(2), "took {elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn clones_of_a_client_share_one_pace() {
        let budget = Arc::new(per_minute(60, None));
        let started = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let budget = Arc::clone(&budget);
                tokio::spawn(async move { drop(budget.admit().await) })
            })
            .collect();
        for task in tasks {
            assert!(task.await.is_ok());
        }
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_back_the_next_request_for_its_whole_length() {
        let budget = per_minute(6000, None);
        drop(budget.admit().await);
        assert!(budget.pause(Duration::from_secs(30)));
        assert_eq!(budget.pause_remaining(), Some(Duration::from_secs(30)));

        let started = Instant::now();
        drop(budget.admit().await);
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert_eq!(budget.pause_remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_pause_does_not_cut_a_longer_one() {
        let budget = per_minute(60, None);
        assert!(budget.pause(Duration::from_secs(20)));
        assert!(!budget.pause(Duration::from_secs(4)));
        assert_eq!(budget.pause_remaining(), Some(Duration::from_secs(20)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_set_while_waiting_for_pace_holds_the_waiter() {
        let budget = Arc::new(per_minute(1, None));
        drop(budget.admit().await);
        let started = Instant::now();
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { drop(budget.admit().await) })
        };

        // The waiter sleeps until its paced slot (60 s); the pause ends later than that.
        tokio::time::sleep(Duration::from_secs(10)).await;
        budget.pause(Duration::from_secs(100));
        assert!(waiter.await.is_ok());
        assert!(started.elapsed() >= Duration::from_secs(110));
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_for_the_next_paced_turn_without_taking_it() {
        let budget = per_minute(60, Some(1));
        let started = Instant::now();
        budget.ready().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing sent yet");

        drop(budget.admit().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        budget.ready().await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));

        // The turn was not taken: admitting now does not wait.
        let before = Instant::now();
        drop(budget.admit().await);
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_out_a_pause_and_a_busy_slot() {
        let budget = Arc::new(per_minute(60_000, Some(1)));
        budget.pause(Duration::from_secs(5));
        let started = Instant::now();
        budget.ready().await;
        assert!(started.elapsed() >= Duration::from_secs(5));

        let held = budget.admit().await;
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.ready().await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished(), "ready while the only slot is taken");
        drop(held);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_slots_are_capped_and_given_back_on_drop() {
        let budget = Arc::new(per_minute(60_000, Some(2)));
        let first = budget.admit().await;
        let second = budget.admit().await;
        let third = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { drop(budget.admit().await) })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !third.is_finished(),
            "a third request went out with two in flight"
        );

        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), third)
                .await
                .is_ok()
        );
        drop(second);
    }
}
