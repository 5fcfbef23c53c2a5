//! What can go wrong with an upstream call, sorted by what the caller can do about it, and how
//! each case becomes a delivery [`Outcome`] for the retry policy.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::time::Duration;

use sync_core::{Failure, Outcome};

use crate::upstream::{ApiCall, Upstream};

/// A failed call to the upstream `U`. Messages name the upstream, then the call, then the cause,
/// for example `chameleon rejected profile batch: 422 no identifier found`. Each client names
/// its own alias of it (`ChameleonError`, `TrackError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError<U: Upstream> {
    /// The upstream answered `429`. The whole client (every clone) is paused for `wait`, and the
    /// call can be retried once it has passed.
    #[error("{upstream} rate limited the client for {wait:?}", upstream = U::NAME)]
    RateLimited { wait: Duration },
    /// No usable answer (timeout, connection error that outlasted the in-process reconnects) or
    /// one that means "try later" (a status in the transport's retryable set, by default `408`
    /// and `5xx`, or an answer the client could not read): retry with backoff. `message` is
    /// `<call>: <status and upstream message>`.
    #[error("{upstream} unavailable for {message}", upstream = U::NAME)]
    Transient {
        status: Option<u16>,
        message: String,
    },
    /// The upstream refused the request (an error status outside the retryable set other than
    /// `429`, or a body too large to send): retrying the same request cannot help. `message` is
    /// `<call>: <status> <upstream message>`.
    #[error("{upstream} rejected {message}", upstream = U::NAME)]
    Permanent { status: u16, message: String },
    /// The client cannot work as configured: fix the configuration.
    #[error("{upstream} client misconfigured: {0}", upstream = U::NAME)]
    Config(String),
    /// Never built: it only ties the type to its upstream, whose name the messages carry. Its
    /// `Infallible` field lets a `match` by value leave it out.
    #[doc(hidden)]
    #[error("{upstream}", upstream = U::NAME)]
    Unreachable(Infallible, PhantomData<U>),
}

impl<U: Upstream> UpstreamError<U> {
    /// A request that was not sent because its body of `bytes` is not under the upstream's
    /// `limit`: sending it would only earn a refusal and spend a request of the budget.
    pub fn too_large(call: impl ApiCall, bytes: usize, limit: usize) -> Self {
        UpstreamError::Permanent {
            status: 413,
            message: format!(
                "{}: 413 body of {bytes} bytes is not under the {limit}-byte limit (not sent)",
                call.name()
            ),
        }
    }

    /// The HTTP status the upstream answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::RateLimited { .. } => Some(429),
            UpstreamError::Transient { status, .. } => *status,
            UpstreamError::Permanent { status, .. } => Some(*status),
            UpstreamError::Config(_) => None,
            UpstreamError::Unreachable(never, _) => match *never {},
        }
    }

    /// The delivery outcome: a retry (after the stated wait when rate limited) or a dead letter.
    pub fn into_outcome(self) -> Outcome {
        let status = self.status();
        let error = self.to_string();
        match self {
            UpstreamError::RateLimited { wait } => Outcome::Retry {
                after: Some(wait),
                failure: Failure::new("rate_limited", status, error),
            },
            UpstreamError::Transient { .. } => Outcome::Retry {
                after: None,
                failure: Failure::new("upstream_unavailable", status, error),
            },
            UpstreamError::Permanent { .. } => {
                Outcome::Dead(Failure::new("upstream_rejected", status, error))
            }
            // The message is not at fault: keep it retrying while an operator fixes the setup.
            UpstreamError::Config(_) => Outcome::Retry {
                after: None,
                failure: Failure::new("client_misconfigured", status, error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Example;

    impl Upstream for Example {
        const NAME: &'static str = "example.org";
        const LABEL: &'static str = "example";
    }

    #[derive(Clone, Copy)]
    struct Upload;

    impl ApiCall for Upload {
        fn label(self) -> &'static str {
            "upload"
        }

        fn name(self) -> &'static str {
            "file upload"
        }

        fn taken_without_body(self, _: StatusCode) -> bool {
            false
        }
    }

    type ExampleError = UpstreamError<Example>;

    #[test]
    fn messages_name_the_upstream_the_call_and_the_cause() {
        let cases = [
            (
                ExampleError::RateLimited {
                    wait: Duration::from_millis(2500),
                },
                "example.org rate limited the client for 2.5s",
            ),
            (
                ExampleError::Transient {
                    status: None,
                    message: "upload: no answer within 10s".to_owned(),
                },
                "example.org unavailable for upload: no answer within 10s",
            ),
            (
                ExampleError::Permanent {
                    status: 422,
                    message: "upload: 422 no name".to_owned(),
                },
                "example.org rejected upload: 422 no name",
            ),
            (
                ExampleError::Config("api_url is empty".to_owned()),
                "example.org client misconfigured: api_url is empty",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn each_class_becomes_its_outcome_with_the_status() {
        let retry = |after, reason, status, error| Outcome::Retry {
            after,
            failure: Failure::new(reason, status, error),
        };
        let cases = [
            (
                ExampleError::RateLimited {
                    wait: Duration::from_secs(19),
                },
                retry(
                    Some(Duration::from_secs(19)),
                    "rate_limited",
                    Some(429),
                    "example.org rate limited the client for 19s",
                ),
            ),
            (
                ExampleError::Transient {
                    status: Some(503),
                    message: "upload: 503 Service Unavailable".to_owned(),
                },
                retry(
                    None,
                    "upstream_unavailable",
                    Some(503),
                    "example.org unavailable for upload: 503 Service Unavailable",
                ),
            ),
            (
                ExampleError::Permanent {
                    status: 403,
                    message: "upload: 403 Forbidden".to_owned(),
                },
                Outcome::Dead(Failure::new(
                    "upstream_rejected",
                    Some(403),
                    "example.org rejected upload: 403 Forbidden",
                )),
            ),
            (
                ExampleError::Config("x".to_owned()),
                retry(
                    None,
                    "client_misconfigured",
                    None,
                    "example.org client misconfigured: x",
                ),
            ),
        ];
        for (error, outcome) in cases {
            assert_eq!(error.into_outcome(), outcome);
        }
    }

    #[test]
    fn a_body_too_large_is_a_413_that_names_the_call_and_the_limit() {
        let error = ExampleError::too_large(Upload, 2048, 1024);
        assert_eq!(error.status(), Some(413));
        assert_eq!(
            error.to_string(),
            "example.org rejected file upload: 413 body of 2048 bytes is not under the \
             1024-byte limit (not sent)"
        );
    }

    #[test]
    fn a_match_by_value_needs_no_arm_for_the_marker() {
        // Callers match on the four classes only; this compiles only while that stays true.
        let class = |error: ExampleError| match error {
            ExampleError::RateLimited { .. } => "rate limited",
            ExampleError::Transient { .. } => "transient",
            ExampleError::Permanent { .. } => "permanent",
            ExampleError::Config(_) => "config",
        };
        assert_eq!(class(ExampleError::Config(String::new())), "config");
    }
}
