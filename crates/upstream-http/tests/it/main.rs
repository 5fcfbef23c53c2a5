//! Integration tests of the shared send step against fake upstreams: wiremock for whole answers,
//! a raw TCP listener for answers cut off mid-body or missing and for a port that starts
//! listening late. The upstream here is a made-up one, so that every rule is seen to come from
//! this crate and not from either real client.

mod classify;
mod metrics;
mod rate_limit;
mod raw;
mod reconnect;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use upstream_http::answer::{error_message, header_wait, seconds_in_json};
use upstream_http::{
    Accepted, ApiCall, Budget, Reconnect, StatusSet, Transport, TransportConfig, Upstream,
    UpstreamError,
};

/// A made-up upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Example;

impl Upstream for Example {
    const NAME: &'static str = "example.org";
    const LABEL: &'static str = "example";
}

pub type ExampleError = UpstreamError<Example>;

/// The made-up upstream's calls: a write that needs nothing back, and a read. Errors read
/// `{"error": ..}`; a `429` states its wait as a body `wait` or an `X-Wait` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Write,
    Read,
}

impl ApiCall for Call {
    fn label(self) -> &'static str {
        match self {
            Call::Write => "write",
            Call::Read => "read",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::Write => "item write",
            Call::Read => "item read",
        }
    }

    fn taken_without_body(self, _status: StatusCode) -> bool {
        self == Call::Write
    }

    fn error_message(self, body: &[u8], reason: &str) -> String {
        error_message(body, reason, |answer| {
            let error = answer.get("error").and_then(Value::as_str);
            error.unwrap_or_default().to_owned()
        })
    }

    fn stated_wait(self, body: &[u8], headers: &HeaderMap) -> Option<Duration> {
        let answer = serde_json::from_slice::<Value>(body).ok();
        let in_body = answer.as_ref().and_then(|a| a.get("wait"));
        in_body
            .and_then(seconds_in_json)
            .or_else(|| header_wait(headers, &["x-wait"]))
    }
}

/// The pause a `429` without a readable wait causes in these tests.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(7);

/// A transport with a budget fast enough not to slow tests down, changed by `adjust`.
pub fn transport(adjust: impl FnOnce(&mut TransportConfig)) -> Transport<Example> {
    let requests = std::num::NonZeroU32::new(1000).unwrap_or(std::num::NonZeroU32::MIN);
    let mut config = TransportConfig {
        headers: HeaderMap::new(),
        budget: Budget::new(Duration::from_secs(1), requests, Some(4)),
        timeout: Duration::from_secs(20),
        max_wait: Duration::from_secs(300),
        default_wait: DEFAULT_WAIT,
        retryable_statuses: StatusSet::default(),
        reconnect: Reconnect::default(),
    };
    adjust(&mut config);
    match Transport::new(config) {
        Ok(transport) => transport,
        Err(error) => panic!("test transport could not be built: {error}"),
    }
}

/// Sends `call` with an empty JSON object to `url`.
pub async fn post(
    transport: &Transport<Example>,
    call: Call,
    url: &str,
) -> Result<Accepted, ExampleError> {
    let url = match reqwest::Url::parse(url) {
        Ok(url) => url,
        Err(error) => panic!("bad test url {url}: {error}"),
    };
    let request = transport.post_json(url, b"{}".to_vec());
    transport.send(call, request).await
}
