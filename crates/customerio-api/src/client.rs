//! [`TrackClient`]: the v1 event call and the v2 batch call, each sent under the shared rate
//! budget, and the rules that turn Customer.io's answer into a result: `2xx` accepted (a `207`
//! naming the operations that failed), `429` pauses the client, `408` and `5xx` transient, any
//! other status permanent.

use std::error::Error as _;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use sync_core::Secret;
use sync_core::outbound::TrackEvent;
use tokio::time::Instant;

use crate::answer::{self, BatchResult};
use crate::batch::{Batch, MAX_BATCH_BYTES, V1Event};
use crate::budget::Budget;
use crate::config::TrackConfig;
use crate::error::TrackError;
use crate::telemetry;

/// The wait assumed when a `429` states none (Customer.io documents no `Retry-After`).
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// The shortest pause a `429` causes, so that a stated wait of zero cannot make a busy loop.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// One Track API call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Event,
    Batch,
}

impl Call {
    /// The `call` label of the metrics, also how error messages name the call.
    fn label(self) -> &'static str {
        match self {
            Call::Event => "event",
            Call::Batch => "batch",
        }
    }
}

/// A client for Customer.io's Track API. Clones share one connection pool and one rate budget.
#[derive(Clone)]
pub struct TrackClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The base URL without a trailing slash; v1 paths are appended per person.
    base: String,
    batch_url: Url,
    site_id: String,
    api_key: Secret,
    budget: Budget,
    timeout: Duration,
    max_wait: Duration,
}

/// What came back from one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, reqwest::Error>,
}

impl fmt::Debug for TrackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackClient")
            .field("site_id", &self.inner.site_id)
            .field("timeout", &self.inner.timeout)
            .field("max_wait", &self.inner.max_wait)
            .finish_non_exhaustive()
    }
}

impl TrackClient {
    /// Validates the configuration and builds the client; no request is sent.
    pub fn new(config: TrackConfig) -> Result<Self, TrackError> {
        let base = config.validate()?;
        let batch_url = Url::parse(&format!("{base}/api/v2/batch"))
            .map_err(|e| TrackError::Config(format!("track_url gives no valid batch URL ({e})")))?;

        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        // Redirects are not followed: the credentials must never travel to another host.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cio-chameleon-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TrackError::Config(format!("http client: {e}")))?;

        let requests = NonZeroU32::new(config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                batch_url,
                site_id: config.site_id,
                api_key: config.api_key,
                budget: Budget::new(Duration::from_secs(1), requests, None),
                timeout: config.timeout,
                max_wait: config.max_wait,
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

        let body = encode(Call::Event, &V1Event::from(event))?;
        self.execute(Call::Event, url, body).await.map(drop)
    }

    /// Sends events as one v2 batch: `POST /api/v2/batch` with `{"batch": [op, ...]}`. The
    /// result lists the operations Customer.io refused (`207`); the others were accepted. Use
    /// [`crate::plan_batches`] first: a body not under [`MAX_BATCH_BYTES`] is refused unsent.
    pub async fn send_batch(&self, events: &[TrackEvent]) -> Result<BatchResult, TrackError> {
        if events.is_empty() {
            return Ok(BatchResult::default());
        }

        let body = encode(Call::Batch, &Batch::new(events))?;
        if body.len() >= MAX_BATCH_BYTES {
            // Sending it would only earn a refusal of the whole batch and spend the budget.
            return Err(TrackError::Permanent {
                status: 413,
                message: format!(
                    "batch: 413 body of {} bytes is not under the {MAX_BATCH_BYTES}-byte limit \
                     (not sent)",
                    body.len()
                ),
            });
        }

        let url = self.inner.batch_url.clone();
        let (status, body) = self.execute(Call::Batch, url, body).await?;
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
        self.inner.budget.pause_remaining()
    }

    /// Sends one request under the budget and classifies the answer; `Ok` holds a `2xx` status
    /// and body.
    async fn execute(
        &self,
        call: Call,
        url: Url,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), TrackError> {
        let admission = self.inner.budget.admit().await;
        let started = Instant::now();
        let answer = self.exchange(url, body).await;
        let took = started.elapsed();
        drop(admission);

        let status = answer.as_ref().ok().map(|a| a.status);
        telemetry::request_finished(call.label(), status, took);
        tracing::debug!(
            upstream = "customerio",
            call = call.label(),
            status = status.map(|s| s.as_u16()),
            took_ms = took.as_millis() as u64,
            "upstream request finished"
        );

        match answer {
            Ok(answer) => self.classify(call, answer),
            Err(error) => Err(TrackError::Transient {
                status: None,
                message: format!("{}: {}", call.label(), self.describe(error)),
            }),
        }
    }

    async fn exchange(&self, url: Url, body: Vec<u8>) -> Result<Answer, reqwest::Error> {
        let response = self
            .inner
            .http
            .post(url)
            .basic_auth(&self.inner.site_id, Some(self.inner.api_key.expose()))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn classify(&self, call: Call, answer: Answer) -> Result<(StatusCode, Bytes), TrackError> {
        let status = answer.status;
        let body = match answer.body {
            // A single event answered 200 has been taken, even if the body was cut off.
            Err(_) if status == StatusCode::OK && call == Call::Event => Bytes::new(),
            Err(error) if status.is_success() => {
                return Err(TrackError::Transient {
                    status: Some(status.as_u16()),
                    message: format!(
                        "{}: {} answer cut off: {}",
                        call.label(),
                        status.as_u16(),
                        self.describe(error)
                    ),
                });
            }
            Err(_) => Bytes::new(),
            Ok(body) => body,
        };
        if status.is_success() {
            return Ok((status, body));
        }

        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.rate_limited(call, &answer.headers));
        }

        let reason = status.canonical_reason().unwrap_or("no reason given");
        let message = format!(
            "{}: {} {}",
            call.label(),
            status.as_u16(),
            answer::error_message(&body, reason)
        );
        if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            Err(TrackError::Transient {
                status: Some(status.as_u16()),
                message,
            })
        } else {
            Err(TrackError::Permanent {
                status: status.as_u16(),
                message,
            })
        }
    }

    /// Pauses the whole client for the stated wait (capped) and reports it.
    fn rate_limited(&self, call: Call, headers: &HeaderMap) -> TrackError {
        let stated = answer::retry_after(headers);
        let wait = stated
            .unwrap_or(DEFAULT_RATE_LIMIT_WAIT)
            .max(MIN_RATE_LIMIT_WAIT)
            .min(self.inner.max_wait);
        let extended = self.inner.budget.pause(wait);
        telemetry::rate_limited();
        if extended {
            tracing::warn!(
                upstream = "customerio",
                call = call.label(),
                wait_ms = wait.as_millis() as u64,
                stated = stated.is_some(),
                "upstream rate limited the client; pausing every request"
            );
        }
        TrackError::RateLimited { wait }
    }

    /// A transport error as text without the URL (which names the person): the cause chain
    /// says what happened.
    fn describe(&self, error: reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("no answer within {:?}", self.inner.timeout);
        }
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// The JSON body of a call.
fn encode(call: Call, body: &impl serde::Serialize) -> Result<Vec<u8>, TrackError> {
    serde_json::to_vec(body)
        .map_err(|e| TrackError::Config(format!("{} body could not be encoded: {e}", call.label())))
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
