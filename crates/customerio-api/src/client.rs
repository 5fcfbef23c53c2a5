//! [`TrackClient`]: the v1 event call and the v2 batch call, their URLs and Basic auth, each sent
//! through the shared [`Transport`] (rate budget, metrics, and the rules that turn an answer into
//! a result), and the reading of a `207` naming the operations that failed.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use sync_core::Secret;
use sync_core::outbound::TrackEvent;
use upstream_http::{Accepted, ApiCall, Budget, Reconnect, Transport, TransportConfig};

use crate::answer::{self, BatchResult};
use crate::batch::{Batch, MAX_BATCH_BYTES, V1Event};
use crate::config::TrackConfig;
use crate::error::{CustomerIo, TrackError};

/// The wait assumed when a `429` states none (Customer.io documents no `Retry-After`).
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// One Track API call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Event,
    Batch,
}

impl ApiCall for Call {
    /// The `call` label of the metrics, also how error messages name the call.
    fn label(self) -> &'static str {
        match self {
            Call::Event => "event",
            Call::Batch => "batch",
        }
    }

    /// A single event answered 200 has been taken; a batch answer may be a `207` to read.
    fn taken_without_body(self, status: StatusCode) -> bool {
        status == StatusCode::OK && self == Call::Event
    }

    fn error_message(self, body: &[u8], reason: &str) -> String {
        answer::error_message(body, reason)
    }

    // A `429` states its wait only in `Retry-After`, as the default `stated_wait` reads it.
}

/// A client for Customer.io's Track API. Clones share one connection pool and one rate budget.
#[derive(Clone)]
pub struct TrackClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport<CustomerIo>,
    /// The base URL without a trailing slash; v1 paths are appended per person.
    base: String,
    batch_url: Url,
    site_id: String,
    api_key: Secret,
}

impl fmt::Debug for TrackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackClient")
            .field("site_id", &self.inner.site_id)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

impl TrackClient {
    /// Validates the configuration and builds the client; no request is sent.
    pub fn new(config: TrackConfig) -> Result<Self, TrackError> {
        let base = config.validate()?;
        let batch_url = Url::parse(&format!("{base}/api/v2/batch"))
            .map_err(|e| TrackError::Config(format!("track_url gives no valid batch URL ({e})")))?;

        // The credentials go with each request as Basic auth, not as a default header.
        let requests = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let transport = Transport::new(TransportConfig {
            headers: HeaderMap::new(),
            budget: Budget::new(Duration::from_secs(1), requests, None),
            timeout: config.timeout,
            max_wait: config.max_wait,
            default_wait: DEFAULT_RATE_LIMIT_WAIT,
            retryable_statuses: config.retryable_set()?,
            reconnect: Reconnect::default(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                transport,
                base,
                batch_url,
                site_id: config.site_id,
                api_key: config.api_key,
            }),
        })
    }

    /// Sends one person event through v1: `POST /api/v1/customers/{identifier}/events` with
    /// `{"name","id","timestamp","data"}`. The identifier (an id or an email) is URL-encoded;
    /// Customer.io tells which it is by its shape.
    pub async fn send_event(&self, event: &TrackEvent) -> Result<(), TrackError> {
        // Limitation: an id shaped like an email or like `cio_...` is read by Customer.io as an
        // email or a cio_id, because the v1 path carries no type; v2 batches do not have this gap.
        let identifier = event.identifier.value();
        // URL parsers fold `.` and `..` segments away, so such a path would name another route.
        if matches!(identifier, "" | "." | "..") {
            return Err(TrackError::Permanent {
                status: 400,
                message: format!("event: 400 person identifier {identifier:?} (not sent)"),
            });
        }
        let url = format!(
            "{}/api/v1/customers/{}/events",
            self.inner.base,
            encode_segment(identifier)
        );
        let url = Url::parse(&url)
            .map_err(|e| TrackError::Config(format!("no valid event URL ({e})")))?;

        let body = self
            .inner
            .transport
            .json_body(Call::Event, &V1Event::from(event))?;
        self.execute(Call::Event, url, body).await.map(drop)
    }

    /// Sends events as one v2 batch: `POST /api/v2/batch` with `{"batch": [op, ...]}`. The
    /// result lists the operations Customer.io refused (`207`); the others were accepted. Use
    /// [`crate::plan_batches`] first: a body not under [`MAX_BATCH_BYTES`] is refused unsent.
    pub async fn send_batch(&self, events: &[TrackEvent]) -> Result<BatchResult, TrackError> {
        if events.is_empty() {
            return Ok(BatchResult::default());
        }

        let body = self
            .inner
            .transport
            .json_body(Call::Batch, &Batch::new(events))?;
        if body.len() >= MAX_BATCH_BYTES {
            // Sending it would only earn a refusal of the whole batch and spend the budget.
            return Err(TrackError::too_large(
                Call::Batch,
                body.len(),
                MAX_BATCH_BYTES,
            ));
        }

        let url = self.inner.batch_url.clone();
        let Accepted { status, body } = self.execute(Call::Batch, url, body).await?;
        if status != StatusCode::MULTI_STATUS {
            return Ok(BatchResult::default());
        }

        // Event ids make a resend harmless, so a 207 that cannot be read is retried whole.
        match answer::parse_partial_failure(&body, events.len()) {
            Some(result) if !result.failed.is_empty() => Ok(result),
            _ => Err(TrackError::Transient {
                status: Some(207),
                message: "batch: 207 answer names no failed operation".to_owned(),
            }),
        }
    }

    /// How long the whole client stays paused by a `429`, if it is.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.inner.transport.pause_remaining()
    }

    /// Sends one request, with the workspace's Basic auth, through the transport; `Ok` holds a
    /// `2xx` status and body.
    async fn execute(&self, call: Call, url: Url, body: Vec<u8>) -> Result<Accepted, TrackError> {
        let inner = &self.inner;
        let request = inner
            .transport
            .post_json(url, body)
            .basic_auth(&inner.site_id, Some(inner.api_key.expose()));
        inner.transport.send(call, request).await
    }
}

/// Percent-encodes one path segment, keeping only RFC 3986 unreserved characters as they are,
/// so `mira@example.org` becomes `mira%40example.org` and `a/b` cannot add a path level.
fn encode_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_keep_only_unreserved_characters() {
        assert_eq!(encode_segment("user_3120"), "user_3120");
        assert_eq!(encode_segment("mira@example.org"), "mira%40example.org");
        assert_eq!(encode_segment("a/b c+d?"), "a%2Fb%20c%2Bd%3F");
        assert_eq!(encode_segment("zoë"), "zo%C3%AB");
    }
}
