//! The upstream metrics every request feeds, with bounded labels: the upstream, the call, and the
//! answer's status class rather than the status itself.

use std::time::Duration;

use reqwest::StatusCode;

/// Counts one request to `upstream` and its duration. `status` is `None` when no answer came
/// back. Each try counts, so a call retried in-process after a connection failure counts once
/// per try, with `error` for each failed one.
pub(crate) fn request_finished(
    upstream: &'static str,
    call: &'static str,
    status: Option<StatusCode>,
    took: Duration,
) {
    let class = status_class(status);
    metrics::counter!(
        "ccsync_upstream_requests_total",
        "upstream" => upstream,
        "call" => call,
        "status" => class
    )
    .increment(1);
    metrics::histogram!(
        "ccsync_upstream_request_seconds",
        "upstream" => upstream,
        "call" => call
    )
    .record(took.as_secs_f64());
}

/// Counts one in-process retry of a request to `upstream` that could not connect.
pub(crate) fn reconnecting(upstream: &'static str) {
    metrics::counter!("ccsync_upstream_reconnects_total", "upstream" => upstream).increment(1);
}

/// Counts one `429` from `upstream`.
pub(crate) fn rate_limited(upstream: &'static str) {
    metrics::counter!("ccsync_upstream_rate_limited_total", "upstream" => upstream).increment(1);
}

/// `2xx`, `4xx`, `429`, `5xx`, `error` (no answer), or `other` (1xx and 3xx).
fn status_class(status: Option<StatusCode>) -> &'static str {
    match status {
        None => "error",
        Some(StatusCode::TOO_MANY_REQUESTS) => "429",
        Some(s) if s.is_success() => "2xx",
        Some(s) if s.is_client_error() => "4xx",
        Some(s) if s.is_server_error() => "5xx",
        Some(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_into_bounded_classes() {
        let class = |code: u16| status_class(StatusCode::from_u16(code).ok());
        assert_eq!(class(202), "2xx");
        assert_eq!(class(422), "4xx");
        assert_eq!(class(429), "429");
        assert_eq!(class(503), "5xx");
        assert_eq!(class(301), "other");
        assert_eq!(status_class(None), "error");
    }
}
