//! What can go wrong with a Chameleon call: [`ChameleonError`], the shared
//! [`UpstreamError`] named for Chameleon by [`Chameleon`]. The shared type sorts failures by what
//! the caller can do about them and maps each onto a delivery outcome for the retry policy.

use upstream_http::Upstream;
pub use upstream_http::UpstreamError;

/// Chameleon, as the shared error type and transport name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chameleon;

impl Upstream for Chameleon {
    const NAME: &'static str = "chameleon";
    const LABEL: &'static str = "chameleon";
}

/// A failed Chameleon call. Messages name the call first and then the cause, for example
/// `chameleon rejected profile batch: 422 no identifier found`.
pub type ChameleonError = UpstreamError<Chameleon>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sync_core::{Failure, Outcome};

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
