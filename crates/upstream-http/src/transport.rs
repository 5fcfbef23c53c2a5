//! [`Transport`]: the send step both clients share. One request goes out under the budget, is
//! timed, counted and logged, and its answer becomes a result by one set of rules: `2xx`
//! accepted, `429` pauses the whole client, a status in the configured retryable set (by
//! default `408` and `5xx`) transient, any other status (redirects included) permanent, no
//! answer transient. A request that could not even connect is first tried again in-process on
//! the [`Reconnect`] schedule.

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
use crate::reconnect::{self, Reconnect};
use crate::statuses::StatusSet;
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
    /// Error statuses that mean "try later" (transient); any other error status is permanent.
    /// A `429` is a rate limit whether it is in the set or not.
    pub retryable_statuses: StatusSet,
    /// How a request that could not connect is tried again before the call gives up.
    pub reconnect: Reconnect,
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
    retryable_statuses: StatusSet,
    reconnect: Reconnect,
    upstream: PhantomData<fn() -> U>,
}

/// What came back from one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, reqwest::Error>,
}

/// A call that got no status back, after `tries` requests.
struct NoAnswer {
    error: reqwest::Error,
    tries: usize,
}

impl<U> fmt::Debug for Transport<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("timeout", &self.timeout)
            .field("max_wait", &self.max_wait)
            .field("default_wait", &self.default_wait)
            .field("retryable_statuses", &self.retryable_statuses)
            .field("reconnect", &self.reconnect)
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
            retryable_statuses: config.retryable_statuses,
            reconnect: config.reconnect,
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
    /// pauses every clone of the client before this returns. A request that could not connect
    /// is sent again on the [`Reconnect`] schedule first, each try admitted anew.
    pub async fn send(
        &self,
        call: impl ApiCall,
        request: RequestBuilder,
    ) -> Result<Accepted, UpstreamError<U>> {
        match self.exchange_reconnecting(call, request).await {
            Ok(answer) => self.classify(call, answer),
            Err(NoAnswer { error, tries }) => {
                let mut message = format!("{}: {}", call.name(), self.describe(error));
                if tries > 1 {
                    message.push_str(&format!(" ({tries} tries)"));
                }
                Err(UpstreamError::Transient {
                    status: None,
                    message,
                })
            }
        }
    }

    /// Sends `request` until a status comes back, a failure other than a connection failure
    /// happens, or the reconnect schedule is spent.
    async fn exchange_reconnecting(
        &self,
        call: impl ApiCall,
        request: RequestBuilder,
    ) -> Result<Answer, NoAnswer> {
        let mut waits = self.reconnect.waits();
        let mut request = request;
        let mut tries = 0;
        loop {
            // A streamed body cannot be sent twice; such a request gets this one try only.
            let spare = request.try_clone();
            tries += 1;
            let error = match self.exchange_admitted(call, request).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };

            let wait = if reconnect::never_sent(&error) {
                waits.next()
            } else {
                None
            };
            let (Some(spare), Some(wait)) = (spare, wait) else {
                return Err(NoAnswer { error, tries });
            };
            telemetry::reconnecting(U::LABEL);
            tracing::debug!(
                upstream = U::LABEL,
                call = call.label(),
                attempt = tries,
                wait_ms = wait.as_millis() as u64,
                cause = %self.describe(error),
                "upstream connection failed; trying again"
            );

            // The admission was given back with the failed try: a sleeping retry must not hold
            // an in-flight slot other requests could use, and it must honour a `429` pause set
            // meanwhile. The price is a paced slot spent on a request the upstream never saw.
            tokio::time::sleep(wait).await;
            request = spare;
        }
    }

    /// Sends one request once the budget admits it; timed, counted and logged.
    async fn exchange_admitted(
        &self,
        call: impl ApiCall,
        request: RequestBuilder,
    ) -> Result<Answer, reqwest::Error> {
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
        answer
    }

    /// Waits until the budget would admit a request at once, without taking the turn (see
    /// [`Budget::ready`]).
    pub async fn ready(&self) {
        self.budget.ready().await;
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

    /// The error statuses this transport treats as transient.
    pub fn retryable_statuses(&self) -> StatusSet {
        self.retryable_statuses
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
        if self.retryable_statuses.contains(status) {
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
