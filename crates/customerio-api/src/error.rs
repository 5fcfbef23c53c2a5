//! What can go wrong with a Track API call, sorted by what the caller can do about it, and how
//! each case becomes a delivery [`Outcome`] for the retry policy.

use std::time::Duration;

use sync_core::{Failure, Outcome};

/// A failed Track API call. Messages name the call first and then the cause, for example
/// `customer.io rejected event: 400 event name is too long`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// Customer.io answered `429`. The whole client (every clone) is paused for `wait`, and the
    /// call can be retried once it has passed.
    #[error("customer.io rate limited the client for {wait:?}")]
    RateLimited { wait: Duration },
    /// No usable answer (timeout, connection error) or one that means "try later" (`408`,
    /// `5xx`, a `207` that names no operation): retry with backoff. `message` is
    /// `<call>: <status and upstream message>`.
    #[error("customer.io unavailable for {message}")]
    Transient {
        status: Option<u16>,
        message: String,
    },
    /// Customer.io refused the whole request (`400`, `401`, any `4xx` other than `408` and
    /// `429`, or a request too large to send): retrying the same request cannot help. `message`
    /// is `<call>: <status> <upstream message>`.
    #[error("customer.io rejected {message}")]
    Permanent { status: u16, message: String },
    /// The client cannot work as configured: fix the configuration.
    #[error("customer.io client misconfigured: {0}")]
    Config(String),
}

impl TrackError {
    /// The HTTP status Customer.io answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            TrackError::RateLimited { .. } => Some(429),
            TrackError::Transient { status, .. } => *status,
            TrackError::Permanent { status, .. } => Some(*status),
            TrackError::Config(_) => None,
        }
    }

    /// The delivery outcome: a retry (after the stated wait when rate limited) or a dead letter.
    pub fn into_outcome(self) -> Outcome {
        let status = self.status();
        let error = self.to_string();
        match self {
            TrackError::RateLimited { wait } => Outcome::Retry {
                after: Some(wait),
                failure: Failure::new("rate_limited", status, error),
            },
            TrackError::Transient { .. } => Outcome::Retry {
                after: None,
                failure: Failure::new("upstream_unavailable", status, error),
            },
            TrackError::Permanent { .. } => {
                Outcome::Dead(Failure::new("upstream_rejected", status, error))
            }
            // The message is not at fault: keep it retrying while an operator fixes the setup.
            TrackError::Config(_) => Outcome::Retry {
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
        let rejected = TrackError::Permanent {
            status: 401,
            message: "batch: 401 Unauthorized".to_owned(),
        };
        assert_eq!(
            rejected.to_string(),
            "customer.io rejected batch: 401 Unauthorized"
        );
        let limited = TrackError::RateLimited {
            wait: Duration::from_millis(2500),
        };
        assert_eq!(
            limited.to_string(),
            "customer.io rate limited the client for 2.5s"
        );
    }

    #[test]
    fn each_class_becomes_its_outcome() {
        let limited = TrackError::RateLimited {
            wait: Duration::from_secs(30),
        };
        assert!(matches!(
            limited.into_outcome(),
            Outcome::Retry { after: Some(after), failure }
                if after == Duration::from_secs(30) && failure.reason == "rate_limited"
        ));

        let transient = TrackError::Transient {
            status: None,
            message: "event: no answer within 10s".to_owned(),
        };
        assert_eq!(
            transient.into_outcome(),
            Outcome::Retry {
                after: None,
                failure: Failure::new(
                    "upstream_unavailable",
                    None,
                    "customer.io unavailable for event: no answer within 10s"
                )
            }
        );

        let permanent = TrackError::Permanent {
            status: 400,
            message: "event: 400 bad timestamp".to_owned(),
        };
        assert_eq!(
            permanent.into_outcome(),
            Outcome::Dead(Failure::new(
                "upstream_rejected",
                Some(400),
                "customer.io rejected event: 400 bad timestamp"
            ))
        );
        assert!(matches!(
            TrackError::Config("x".to_owned()).into_outcome(),
            Outcome::Retry { failure, .. } if failure.reason == "client_misconfigured"
        ));
    }
}
