//! What can go wrong with a Track API call: [`TrackError`], the shared [`UpstreamError`] named
//! for Customer.io by [`CustomerIo`]. The shared type sorts failures by what the caller can do
//! about them and maps each onto a delivery outcome for the retry policy. This client adds a
//! `207` that names no operation to the transient failures, and refuses unusable person
//! identifiers and oversized batches without sending them.

use upstream_http::Upstream;
pub use upstream_http::UpstreamError;

/// Customer.io's Track API, as the shared error type and transport name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomerIo;

impl Upstream for CustomerIo {
    const NAME: &'static str = "customer.io";
    const LABEL: &'static str = "customerio";
}

/// A failed Track API call. Messages name the call first and then the cause, for example
/// `customer.io rejected event: 400 event name is too long`.
pub type TrackError = UpstreamError<CustomerIo>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sync_core::{Failure, Outcome};

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
