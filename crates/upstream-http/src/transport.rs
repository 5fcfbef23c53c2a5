//! [`Transport`]: the send step both clients share. One request goes out under the budget, is
//! timed, counted and logged, and its answer becomes a result by one set of rules: `2xx`
//! accepted, `429` pauses the whole client, `408` and `5xx` transient, any other status
//! (redirects included) permanent, no answer transient.

use std::error::Error as _;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::Serialize;
use tokio::time::Instant;

use crate::budget::Budget;
use crate::error::UpstreamError;
use crate::telemetry;
use crate::upstream::{ApiCall, Upstream};

/// The shortest pause a `429` causes, so that a stated wait of zero cannot make a busy loop.
pub const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// What a [`Transport`] is built from; the client fills it from its own configuration.
#[derive(Debug)]
pub struct TransportConfig {
    /// Headers every request carries besides `Accept: application/json`, such as a credential
    /// header (mark it sensitive).
    pub headers: HeaderMap,
    /// The pace, in-flight cap and pause every request is admitted through.
    pub budget: Budget,
    /// Limit on one request, from sending it to the end of the answer's body.
    pub timeout: Duration,
    /// The longest pause a `429` can impose on the client; longer stated waits are cut to it.
    pub max_wait: Duration,
    /// The pause a `429` causes when it states no wait the client can read.
    pub default_wait: Duration,
}

/// A `2xx` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub status: StatusCode,
    /// Empty when the body was cut off but the call says it was taken anyway.
    pub body: Bytes,
}

/// The HTTP connection pool and rate budget of one client of the upstream `U`. A client keeps it
/// behind the `Arc` its clones share, so they share one pool and one budget.
pub struct Transport<U> {
    http: reqwest::Client,
    budget: Budget,
    timeout: Duration,
    max_wait: Duration,
    default_wait: Duration,
    upstream: PhantomData<fn() -> U>,
}

/// What came back from one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, reqwest::Error>,
}

impl<U> fmt::Debug for Transport<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("timeout", &self.timeout)
            .field("max_wait", &self.max_wait)
            .field("default_wait", &self.default_wait)
            .finish_non_exhaustive()
    }
}

impl<U: Upstream> Transport<U> {
    /// Builds the HTTP client; no request is sent.
    pub fn new(config: TransportConfig) -> Result<Self, UpstreamError<U>> {
        let mut headers = config.headers;
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

        // Redirects are not followed: credentials must never travel to another host.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cio-chameleon-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Config(format!("http client: {e}")))?;
        Ok(Self {
            http,
            budget: config.budget,
            timeout: config.timeout,
            max_wait: config.max_wait,
            default_wait: config.default_wait,
            upstream: PhantomData,
        })
    }

    /// The JSON body of `call`.
    pub fn json_body(
        &self,
        call: impl ApiCall,
        body: &impl Serialize,
    ) -> Result<Vec<u8>, UpstreamError<U>> {
        serde_json::to_vec(body).map_err(|e| {
            UpstreamError::Config(format!("{} body could not be encoded: {e}", call.name()))
        })
    }

    /// A `POST` of the JSON `body` to `url`, for the client to finish (credentials) and hand to
    /// [`Transport::send`].
    pub fn post_json(&self, url: Url, body: Vec<u8>) -> RequestBuilder {
        self.http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
    }

    /// Sends `request` once it is admitted by the budget and classifies the answer. A `429`
    /// pauses every clone of the client before this returns.
    pub async fn send(
        &self,
        call: impl ApiCall,
        request: RequestBuilder,
    ) -> Result<Accepted, UpstreamError<U>> {
        let admission = self.budget.admit().await;
        let started = Instant::now();
        let answer = exchange(request).await;
        let took = started.elapsed();
        drop(admission);

        let status = answer.as_ref().ok().map(|a| a.status);
        telemetry::request_finished(U::LABEL, call.label(), status, took);
        tracing::debug!(
            upstream = U::LABEL,
            call = call.label(),
            status = status.map(|s| s.as_u16()),
            took_ms = took.as_millis() as u64,
            "upstream request finished"
        );

        match answer {
            Ok(answer) => self.classify(call, answer),
            Err(error) => Err(UpstreamError::Transient {
                status: None,
                message: format!("{}: {}", call.name(), self.describe(error)),
            }),
        }
    }

    /// How long the whole client stays paused by a `429`, if it is.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.budget.pause_remaining()
    }

    /// Limit on one request, from sending it to the end of the answer's body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest pause a `429` can impose on the client.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    fn classify(&self, call: impl ApiCall, answer: Answer) -> Result<Accepted, UpstreamError<U>> {
        let status = answer.status;
        let body = match answer.body {
            Ok(body) => body,
            Err(_) if status.is_success() && call.taken_without_body(status) => Bytes::new(),
            Err(error) if status.is_success() => {
                return Err(UpstreamError::Transient {
                    status: Some(status.as_u16()),
                    message: format!(
                        "{}: {} answer cut off: {}",
                        call.name(),
                        status.as_u16(),
                        self.describe(error)
                    ),
                });
            }
            Err(_) => Bytes::new(),
        };
        if status.is_success() {
            return Ok(Accepted { status, body });
        }

        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.rate_limited(call, &body, &answer.headers));
        }

        let reason = status.canonical_reason().unwrap_or("no reason given");
        let message = format!(
            "{}: {} {}",
            call.name(),
            status.as_u16(),
            call.error_message(&body, reason)
        );
        if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            Err(UpstreamError::Transient {
                status: Some(status.as_u16()),
                message,
            })
        } else {
            Err(UpstreamError::Permanent {
                status: status.as_u16(),
                message,
            })
        }
    }

    /// Pauses the whole client for the stated wait (capped) and reports it.
    fn rate_limited(
        &self,
        call: impl ApiCall,
        body: &[u8],
        headers: &HeaderMap,
    ) -> UpstreamError<U> {
        let stated = call.stated_wait(body, headers);
        let wait = stated
            .unwrap_or(self.default_wait)
            .max(MIN_RATE_LIMIT_WAIT)
            .min(self.max_wait);
        let extended = self.budget.pause(wait);
        telemetry::rate_limited(U::LABEL);
        if extended {
            tracing::warn!(
                upstream = U::LABEL,
                call = call.label(),
                wait_ms = wait.as_millis() as u64,
                stated = stated.is_some(),
                "upstream rate limited the client; pausing every request"
            );
        }
        UpstreamError::RateLimited { wait }
    }

    /// A transport error as text without the URL (a path can name a person): the cause chain
    /// says what happened.
    fn describe(&self, error: reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
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

/// Sends the request and reads the whole answer; only a failure to get a status is an error.
async fn exchange(request: RequestBuilder) -> Result<Answer, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await;
    Ok(Answer {
        status,
        headers,
        body,
    })
}
