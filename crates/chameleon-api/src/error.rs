//! What can go wrong with a Chameleon call, sorted by what the caller can do about it, and how
//! each case becomes a delivery [`Outcome`] for the retry policy.

use std::time::Duration;

use sync_core::{Failure, Outcome};

/// A failed Chameleon call. Messages name the call first and then the cause, for example
/// `chameleon rejected profile batch: 422 no identifier found`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChameleonError {
    /// Chameleon answered `429`. The whole client (every clone) is paused for `wait`, and the
    /// call can be retried once it has passed.
    #[error("chameleon rate limited the client for {wait:?}")]
    RateLimited { wait: Duration },
    /// No usable answer (timeout, connection error) or one that means "try later" (`408`,
    /// `5xx`): retry with backoff. `message` is `<call>: <status and upstream message>`.
    #[error("chameleon unavailable for {message}")]
    Transient {
        status: Option<u16>,
        message: String,
    },
    /// Chameleon refused the request (a `4xx` other than `408` and `429`, or a body too large to
    /// send): retrying the same request cannot help. `message` is `<call>: <status> <upstream
    /// message>`.
    #[error("chameleon rejected {message}")]
    Permanent { status: u16, message: String },
    /// The client cannot work as configured: fix the configuration.
    #[error("chameleon client misconfigured: {0}")]
    Config(String),
}

impl ChameleonError {
    /// The HTTP status Chameleon answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ChameleonError::RateLimited { .. } => Some(429),
            ChameleonError::Transient { status, .. } => *status,
            ChameleonError::Permanent { status, .. } => Some(*status),
            ChameleonError::Config(_) => None,
        }
    }

    /// The delivery outcome: a retry (after the stated wait when rate limited) or a dead letter.
    pub fn into_outcome(self) -> Outcome {
        let status = self.status();
        let error = self.to_string();
        match self {
            ChameleonError::RateLimited { wait } => Outcome::Retry {
                after: Some(wait),
                failure: Failure::new("rate_limited", status, error),
            },
            ChameleonError::Transient { .. } => Outcome::Retry {
                after: None,
                failure: Failure::new("upstream_unavailable", status, error),
            },
            ChameleonError::Permanent { .. } => {
                Outcome::Dead(Failure::new("upstream_rejected", status, error))
            }
            // The message is not at fault: keep it retrying while an operator fixes the setup.
            ChameleonError::Config(_) => Outcome::Retry {
                after: None,
                failure: Failure::new("client_misconfigured", status, error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_upstream_the_call_and_the_cause() {
        let rejected = ChameleonError::Permanent {
            status: 422,
            message: "profile batch: 422 no identifier found".to_owned(),
        };
        assert_eq!(
            rejected.to_string(),
            "chameleon rejected profile batch: 422 no identifier found"
        );
        let limited = ChameleonError::RateLimited {
            wait: Duration::from_secs(12),
        };
        assert_eq!(
            limited.to_string(),
            "chameleon rate limited the client for 12s"
        );
    }

    #[test]
    fn rate_limits_retry_after_the_stated_wait() {
        let outcome = ChameleonError::RateLimited {
            wait: Duration::from_secs(19),
        }
        .into_outcome();
        match outcome {
            Outcome::Retry { after, failure } => {
                assert_eq!(after, Some(Duration::from_secs(19)));
                assert_eq!(failure.reason, "rate_limited");
                assert_eq!(failure.status, Some(429));
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn transient_failures_retry_on_the_policys_schedule() {
        let outcome = ChameleonError::Transient {
            status: Some(503),
            message: "event: 503 Service Unavailable".to_owned(),
        }
        .into_outcome();
        match outcome {
            Outcome::Retry { after, failure } => {
                assert_eq!(after, None);
                assert_eq!(failure.reason, "upstream_unavailable");
                assert_eq!(failure.status, Some(503));
                assert_eq!(
                    failure.error,
                    "chameleon unavailable for event: 503 Service Unavailable"
                );
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn permanent_failures_become_dead_letters_with_status_and_message() {
        let outcome = ChameleonError::Permanent {
            status: 403,
            message: "event: 403 Invalid account secret".to_owned(),
        }
        .into_outcome();
        assert_eq!(
            outcome,
            Outcome::Dead(Failure::new(
                "upstream_rejected",
                Some(403),
                "chameleon rejected event: 403 Invalid account secret"
            ))
        );
        assert_eq!(ChameleonError::Config("x".to_owned()).status(), None);
    }
}
