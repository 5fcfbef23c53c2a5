//! The retry policy: exponential backoff with jitter, an upstream's stated wait honoured, and an
//! end after `max_attempts` attempts or `max_age` since receipt, whichever comes first.

use std::time::Duration;

use rand::Rng;

use crate::envelope::Envelope;
use crate::outcome::{Failure, Outcome, Settlement};

/// When to try again and when to give up.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt; doubles each attempt up to `max_delay`.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all, the first included; the message is dead-lettered after the last.
    pub max_attempts: u32,
    /// Age since receipt after which a failing message is dead-lettered.
    pub max_age: Duration,
    /// Fraction of each delay drawn at random (0.0 to 1.0), so retries do not arrive together.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            max_attempts: 12,
            max_age: Duration::from_secs(72 * 3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1`, without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        self.initial_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay)
    }

    /// Turn an attempt's outcome into what the queue should do with the message.
    pub fn settle(&self, envelope: &Envelope, outcome: Outcome, now_ms: i64) -> Settlement {
        match outcome {
            Outcome::Delivered | Outcome::Filtered { .. } => Settlement::Ack,
            Outcome::Dead(failure) => Settlement::Dead(failure),
            Outcome::Retry { after, failure } => {
                if envelope.attempt >= self.max_attempts {
                    return Settlement::Dead(exhausted(failure, "max_attempts"));
                }
                let age = Duration::from_millis(envelope.age_ms(now_ms).max(0) as u64);
                if age >= self.max_age {
                    return Settlement::Dead(exhausted(failure, "max_age"));
                }
                let backoff = self.jittered(self.backoff(envelope.attempt));
                // An upstream that says how long to wait knows better than our schedule.
                let delay = after.unwrap_or(backoff);
                Settlement::Retry { delay, failure }
            }
        }
    }

    fn jittered(&self, delay: Duration) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return delay;
        }
        let factor = 1.0 - jitter + rand::rng().random::<f64>() * jitter;
        delay.mul_f64(factor)
    }
}

/// A transient failure that ran out of attempts or time keeps its status and error, and says why
/// it stopped.
fn exhausted(failure: Failure, limit: &str) -> Failure {
    Failure {
        reason: format!("{}_after_{limit}", failure.reason),
        ..failure
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::envelope::Source;

    fn transient() -> Outcome {
        Outcome::Retry {
            after: None,
            failure: Failure::new("upstream_unavailable", Some(503), "service unavailable"),
        }
    }

    #[test]
    fn backs_off_exponentially_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_secs(5));
        assert_eq!(policy.backoff(2), Duration::from_secs(10));
        assert_eq!(policy.backoff(20), Duration::from_secs(3600));
    }

    #[test]
    fn honours_the_upstream_wait() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let envelope = Envelope::new(Source::ChameleonWebhook, Bytes::new(), None);
        let outcome = Outcome::Retry {
            after: Some(Duration::from_secs(90)),
            failure: Failure::new("rate_limited", Some(429), "slow down"),
        };
        let now = envelope.received_at;
        match policy.settle(&envelope, outcome, now) {
            Settlement::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(90)),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn gives_up_after_max_attempts_and_max_age() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let mut envelope = Envelope::new(Source::CustomerioEvents, Bytes::new(), None);
        let now = envelope.received_at;
        envelope.attempt = 3;
        match policy.settle(&envelope, transient(), now) {
            Settlement::Dead(failure) => {
                assert_eq!(failure.reason, "upstream_unavailable_after_max_attempts");
                assert_eq!(failure.status, Some(503));
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
        envelope.attempt = 1;
        let later = now + 73 * 3600 * 1000;
        assert!(matches!(
            policy.settle(&envelope, transient(), later),
            Settlement::Dead(_)
        ));
    }
}
