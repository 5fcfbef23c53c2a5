//! [`ChameleonClient`]: the five observe-hook calls, each sent under the shared rate budget, and
//! the rules that turn Chameleon's answer into a result: `2xx` accepted, `429` pauses the client,
//! `408` and `5xx` transient, any other status permanent.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::answer::{self, BatchAnswer};
use crate::budget::Budget;
use crate::config::ChameleonConfig;
use crate::error::ChameleonError;
use crate::{MAX_BATCH_BYTES, telemetry};

/// The wait assumed when a `429` states none.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The shortest pause a `429` causes, so that a stated wait of zero cannot make a busy loop.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// One Chameleon endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Profile,
    Company,
    Event,
    ProfileBatch,
    CompanyBatch,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Profile => "/v3/observe/hooks/profiles",
            Call::Company => "/v3/observe/hooks/companies",
            Call::Event => "/v3/observe/hooks/events",
            Call::ProfileBatch => "/v3/observe/hooks/profiles/batch",
            Call::CompanyBatch => "/v3/observe/hooks/companies/batch",
        }
    }

    /// The `call` label of the metrics.
    fn label(self) -> &'static str {
        match self {
            Call::Profile => "profile",
            Call::Company => "company",
            Call::Event => "event",
            Call::ProfileBatch => "profile_batch",
            Call::CompanyBatch => "company_batch",
        }
    }

    /// How error messages name the call.
    fn name(self) -> &'static str {
        match self {
            Call::Profile => "profile upsert",
            Call::Company => "company upsert",
            Call::Event => "event",
            Call::ProfileBatch => "profile batch",
            Call::CompanyBatch => "company batch",
        }
    }

    fn is_batch(self) -> bool {
        matches!(self, Call::ProfileBatch | Call::CompanyBatch)
    }
}

/// A client for Chameleon's REST API. Clones share one connection pool and one rate budget.
#[derive(Clone)]
pub struct ChameleonClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    endpoints: Endpoints,
    budget: Budget,
    timeout: Duration,
    max_wait: Duration,
}

/// The URL of every call, built once from the configured base.
struct Endpoints {
    profile: Url,
    company: Url,
    event: Url,
    profile_batch: Url,
    company_batch: Url,
}

impl Endpoints {
    fn new(base: &str) -> Result<Self, ChameleonError> {
        let url = |call: Call| {
            Url::parse(&format!("{base}{}", call.path())).map_err(|e| {
                ChameleonError::Config(format!("api_url gives no valid {} URL ({e})", call.name()))
            })
        };
        Ok(Self {
            profile: url(Call::Profile)?,
            company: url(Call::Company)?,
            event: url(Call::Event)?,
            profile_batch: url(Call::ProfileBatch)?,
            company_batch: url(Call::CompanyBatch)?,
        })
    }

    fn get(&self, call: Call) -> &Url {
        match call {
            Call::Profile => &self.profile,
            Call::Company => &self.company,
            Call::Event => &self.event,
            Call::ProfileBatch => &self.profile_batch,
            Call::CompanyBatch => &self.company_batch,
        }
    }
}

/// What came back from one request.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Bytes, reqwest::Error>,
}

impl fmt::Debug for ChameleonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChameleonClient")
            .field("timeout", &self.inner.timeout)
            .field("max_wait", &self.inner.max_wait)
            .finish_non_exhaustive()
    }
}

impl ChameleonClient {
    /// Validates the configuration and builds the client; no request is sent.
    pub fn new(config: ChameleonConfig) -> Result<Self, ChameleonError> {
        let base = config.validate()?;
        let endpoints = Endpoints::new(&base)?;

        let mut secret = HeaderValue::from_str(config.account_secret.expose()).map_err(|_| {
            ChameleonError::Config("account_secret is not a valid header value".to_owned())
        })?;
        secret.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("x-account-secret", secret);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

        // Redirects are not followed: the secret header must never travel to another host.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cio-chameleon-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChameleonError::Config(format!("http client: {e}")))?;

        let requests = NonZeroU32::new(config.requests_per_minute).unwrap_or(NonZeroU32::MIN);
        let budget = Budget::new(
            Duration::from_secs(60),
            requests,
            Some(config.max_in_flight),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                budget,
                timeout: config.timeout,
                max_wait: config.max_wait,
            }),
        })
    }

    /// Creates or updates one profile: `POST /v3/observe/hooks/profiles`.
    pub async fn upsert_profile(&self, body: &Map<String, Value>) -> Result<(), ChameleonError> {
        self.send_one(Call::Profile, body).await
    }

    /// Creates or updates one company: `POST /v3/observe/hooks/companies`.
    pub async fn upsert_company(&self, body: &Map<String, Value>) -> Result<(), ChameleonError> {
        self.send_one(Call::Company, body).await
    }

    /// Logs one user event: `POST /v3/observe/hooks/events`.
    pub async fn send_event(&self, body: &Map<String, Value>) -> Result<(), ChameleonError> {
        self.send_one(Call::Event, body).await
    }

    /// Creates or updates many profiles: `POST /v3/observe/hooks/profiles/batch` with
    /// `{"profiles": [...]}`. The answer lists the items Chameleon refused.
    pub async fn profile_batch(
        &self,
        items: &[Map<String, Value>],
    ) -> Result<BatchAnswer, ChameleonError> {
        self.send_batch(Call::ProfileBatch, "profiles", items).await
    }

    /// Creates or updates many companies: `POST /v3/observe/hooks/companies/batch` with
    /// `{"companies": [...]}`. The answer lists the items Chameleon refused.
    pub async fn company_batch(
        &self,
        items: &[Map<String, Value>],
    ) -> Result<BatchAnswer, ChameleonError> {
        self.send_batch(Call::CompanyBatch, "companies", items)
            .await
    }

    /// How long the whole client stays paused by a `429`, if it is.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.inner.budget.pause_remaining()
    }

    async fn send_one(&self, call: Call, body: &Map<String, Value>) -> Result<(), ChameleonError> {
        let body = encode(call, body)?;
        self.execute(call, body).await.map(drop)
    }

    async fn send_batch(
        &self,
        call: Call,
        key: &'static str,
        items: &[Map<String, Value>],
    ) -> Result<BatchAnswer, ChameleonError> {
        if items.is_empty() {
            return Ok(BatchAnswer::default());
        }

        let body = encode(call, &HashMap::from([(key, items)]))?;
        if body.len() >= MAX_BATCH_BYTES {
            // Sending it would only earn Chameleon's own 413 and spend a request of the budget.
            return Err(ChameleonError::Permanent {
                status: 413,
                message: format!(
                    "{}: 413 body of {} bytes is not under the {MAX_BATCH_BYTES}-byte limit \
                     (not sent)",
                    call.name(),
                    body.len()
                ),
            });
        }

        let answer = self.execute(call, body).await?;
        Ok(answer::parse_batch_answer(&answer, items.len()))
    }

    /// Sends one request under the budget and classifies the answer; `Ok` holds a `2xx` body.
    async fn execute(&self, call: Call, body: Vec<u8>) -> Result<Bytes, ChameleonError> {
        let admission = self.inner.budget.admit().await;
        let started = Instant::now();
        let answer = self.exchange(call, body).await;
        let took = started.elapsed();
        drop(admission);

        let status = answer.as_ref().ok().map(|a| a.status);
        telemetry::request_finished(call.label(), status, took);
        tracing::debug!(
            upstream = "chameleon",
            call = call.label(),
            status = status.map(|s| s.as_u16()),
            took_ms = took.as_millis() as u64,
            "upstream request finished"
        );

        match answer {
            Ok(answer) => self.classify(call, answer),
            Err(error) => Err(ChameleonError::Transient {
                status: None,
                message: format!("{}: {}", call.name(), self.describe(error)),
            }),
        }
    }

    async fn exchange(&self, call: Call, body: Vec<u8>) -> Result<Answer, reqwest::Error> {
        let url = self.inner.endpoints.get(call).clone();
        let response = self
            .inner
            .http
            .post(url)
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

    fn classify(&self, call: Call, answer: Answer) -> Result<Bytes, ChameleonError> {
        let status = answer.status;
        let body = match answer.body {
            Ok(body) => body,
            // A single call that was answered 2xx has been taken, even if the body was cut off.
            Err(_) if status.is_success() && !call.is_batch() => Bytes::new(),
            Err(error) if status.is_success() => {
                return Err(ChameleonError::Transient {
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
            return Ok(body);
        }

        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(self.rate_limited(call, &body, &answer.headers));
        }

        let reason = status.canonical_reason().unwrap_or("no reason given");
        let message = format!(
            "{}: {} {}",
            call.name(),
            status.as_u16(),
            answer::error_message(&body, reason)
        );
        if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            Err(ChameleonError::Transient {
                status: Some(status.as_u16()),
                message,
            })
        } else {
            Err(ChameleonError::Permanent {
                status: status.as_u16(),
                message,
            })
        }
    }

    /// Pauses the whole client for the stated wait (capped) and reports it.
    fn rate_limited(&self, call: Call, body: &[u8], headers: &HeaderMap) -> ChameleonError {
        let stated = answer::stated_wait(body, headers);
        let wait = stated
            .unwrap_or(DEFAULT_RATE_LIMIT_WAIT)
            .max(MIN_RATE_LIMIT_WAIT)
            .min(self.inner.max_wait);
        let extended = self.inner.budget.pause(wait);
        telemetry::rate_limited();
        if extended {
            tracing::warn!(
                upstream = "chameleon",
                call = call.label(),
                wait_ms = wait.as_millis() as u64,
                stated = stated.is_some(),
                "upstream rate limited the client; pausing every request"
            );
        }
        ChameleonError::RateLimited { wait }
    }

    /// A transport error as text without the URL: the cause chain says what happened.
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
fn encode(call: Call, body: &impl serde::Serialize) -> Result<Vec<u8>, ChameleonError> {
    serde_json::to_vec(body).map_err(|e| {
        ChameleonError::Config(format!("{} body could not be encoded: {e}", call.name()))
    })
}
