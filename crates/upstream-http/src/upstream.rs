//! The two traits through which a client tells the shared code about its API: [`Upstream`]
//! names the API, [`ApiCall`] describes one of its calls and how the answers to it read.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::answer;

/// One upstream API, by name. A client implements it on a unit struct and names its error type
/// `UpstreamError<ThatStruct>`.
pub trait Upstream: Copy + fmt::Debug + Eq + Send + Sync + 'static {
    /// How error messages name the upstream, for example `customer.io`.
    const NAME: &'static str;

    /// The `upstream` value of metrics and log lines, for example `customerio`.
    const LABEL: &'static str;
}

/// One call of an upstream API, usually a variant of the client's own `Call` enum: how it is
/// named, and how the answers to it read.
pub trait ApiCall: Copy {
    /// The `call` value of metrics and log lines, for example `profile_batch`.
    fn label(self) -> &'static str;

    /// How error messages name the call, for example `profile batch`; the label unless the
    /// client says otherwise.
    fn name(self) -> &'static str {
        self.label()
    }

    /// Whether a `2xx` answer of `status` whose body was cut off still means the call was taken.
    /// A write that needs nothing back can say yes; a call whose answer must be read says no,
    /// and then a cut-off answer is a transient failure.
    fn taken_without_body(self, status: StatusCode) -> bool;

    /// The message of an error answer to this call, read from its body; `reason` (the status's
    /// reason phrase) when the body says nothing. By default, the start of the body.
    fn error_message(self, body: &[u8], reason: &str) -> String {
        answer::error_message(body, reason, |_| String::new())
    }

    /// The wait a `429` answer to this call states, uncapped; `None` when it states none the
    /// client can read. By default, the seconds of a `Retry-After` header.
    fn stated_wait(self, _body: &[u8], headers: &HeaderMap) -> Option<Duration> {
        answer::header_wait(headers, &[RETRY_AFTER.as_str()])
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[derive(Clone, Copy)]
    struct Plain;

    impl ApiCall for Plain {
        fn label(self) -> &'static str {
            "plain"
        }

        fn taken_without_body(self, _: StatusCode) -> bool {
            false
        }
    }

    #[test]
    fn by_default_a_call_is_named_by_its_label() {
        assert_eq!(Plain.name(), "plain");
    }

    #[test]
    fn by_default_an_error_message_is_the_start_of_the_body() {
        assert_eq!(
            Plain.error_message(br#"{"error":"x"}"#, "Bad Request"),
            r#"{"error":"x"}"#
        );
        assert_eq!(Plain.error_message(b"", "Bad Request"), "Bad Request");
    }

    #[test]
    fn by_default_retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(Plain.stated_wait(b"", &headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        assert_eq!(
            Plain.stated_wait(br#"{"wait":5}"#, &headers),
            Some(Duration::from_secs(30))
        );
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"),
        );
        assert_eq!(Plain.stated_wait(b"", &headers), None);
    }
}
