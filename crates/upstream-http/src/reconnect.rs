//! [`Reconnect`]: how a request whose connection could not be opened is tried again inside the
//! same call, before the call gives up and the message goes to a retry tier.
//!
//! Only a failure to connect (refused, reset during the handshake, no route, a name that did
//! not resolve, a TLS handshake that failed) is retried here: the request never reached the
//! upstream, so sending it again cannot duplicate it. A timeout, or a connection lost after the
//! request went out, is not: Chameleon events are not idempotent, and the upstream may have
//! acted on the request already.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The in-process retry schedule of connection failures. The default makes 3 retries after
/// waits of 50-100 ms, 100-200 ms and 200-400 ms: enough to ride out a restarting proxy or a
/// dropped pooled connection, short enough not to hold a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnect {
    /// Tries after the first; zero turns in-process retries off.
    pub retries: usize,
    /// The wait before the first retry; each later wait doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest wait before jitter; jitter adds up to as much again to every wait.
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            retries: 3,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        }
    }
}

impl Reconnect {
    /// No in-process retries: a connection failure ends the call at once.
    pub const NEVER: Reconnect = Reconnect {
        retries: 0,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The waits before each retry of one call, jittered; it ends when the retries are spent.
    pub(crate) fn waits(&self) -> ExponentialBackoff {
        ExponentialBuilder::new()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay.max(self.first_delay))
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }
}

/// Whether `error` means the request never reached the upstream, so it may be sent again.
pub(crate) fn never_sent(error: &reqwest::Error) -> bool {
    // A connect that timed out may also count as a connect error; a retry would only spend the
    // whole timeout again.
    error.is_connect() && !error.is_timeout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_makes_three_jittered_retries_from_50_to_400_ms() {
        for _ in 0..50 {
            let waits: Vec<Duration> = Reconnect::default().waits().collect();
            assert_eq!(waits.len(), 3, "{waits:?}");
            // A millisecond of slack: the schedule doubles in `f32` seconds.
            let bounds = [(50, 101), (100, 201), (200, 401)];
            for (wait, (low, high)) in waits.iter().zip(bounds) {
                assert!(
                    *wait >= Duration::from_millis(low - 1) && *wait <= Duration::from_millis(high),
                    "{wait:?} outside {low}-{high} ms in {waits:?}"
                );
            }
        }
    }

    #[test]
    fn waits_stop_doubling_at_the_maximum_and_never_means_none() {
        let reconnect = Reconnect {
            retries: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(150),
        };
        let waits: Vec<Duration> = reconnect.waits().collect();
        assert_eq!(waits.len(), 5);
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(301)),
            "{waits:?}"
        );
        assert_eq!(Reconnect::NEVER.waits().count(), 0);
    }
}
