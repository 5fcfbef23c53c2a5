//! [`ChameleonClient`]: the five observe-hook calls, their paths and names and how Chameleon's
//! answers to them read, each sent through the shared [`Transport`] (rate budget, metrics, and
//! the rules that turn an answer into a result).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};
use upstream_http::{ApiCall, Budget, Reconnect, Transport, TransportConfig};

use crate::MAX_BATCH_BYTES;
use crate::answer::{self, BatchAnswer};
use crate::config::ChameleonConfig;
use crate::error::{Chameleon, ChameleonError};

/// The wait assumed when a `429` states none.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

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
}

impl ApiCall for Call {
    fn label(self) -> &'static str {
        match self {
            Call::Profile => "profile",
            Call::Company => "company",
            Call::Event => "event",
            Call::ProfileBatch => "profile_batch",
            Call::CompanyBatch => "company_batch",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::Profile => "profile upsert",
            Call::Company => "company upsert",
            Call::Event => "event",
            Call::ProfileBatch => "profile batch",
            Call::CompanyBatch => "company batch",
        }
    }

    /// A single call answered 2xx has been taken; a batch answer must be read for item errors.
    fn taken_without_body(self, _status: StatusCode) -> bool {
        !matches!(self, Call::ProfileBatch | Call::CompanyBatch)
    }

    fn error_message(self, body: &[u8], reason: &str) -> String {
        answer::error_message(body, reason)
    }

    fn stated_wait(self, body: &[u8], headers: &HeaderMap) -> Option<Duration> {
        answer::stated_wait(body, headers)
    }
}

/// A client for Chameleon's REST API. Clones share one connection pool and one rate budget.
#[derive(Clone)]
pub struct ChameleonClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport<Chameleon>,
    endpoints: Endpoints,
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

impl fmt::Debug for ChameleonClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChameleonClient")
            .field("transport", &self.inner.transport)
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

        let requests = NonZeroU32::new(config.requests_per_minute).unwrap_or(NonZeroU32::MIN);
        let budget = Budget::new(
            Duration::from_secs(60),
            requests,
            Some(config.max_in_flight),
        );
        let transport = Transport::new(TransportConfig {
            headers,
            budget,
            timeout: config.timeout,
            max_wait: config.max_wait,
            default_wait: DEFAULT_RATE_LIMIT_WAIT,
            retryable_statuses: config.retryable_set()?,
            reconnect: Reconnect::default(),
        })?;
        let inner = Inner {
            transport,
            endpoints,
        };
        Ok(Self {
            inner: Arc::new(inner),
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

    /// Waits until the rate budget would admit a request at once, without taking the turn, so
    /// that a batch built afterwards carries everything gathered while the budget was spent.
    pub async fn ready(&self) {
        self.inner.transport.ready().await;
    }

    /// How long the whole client stays paused by a `429`, if it is.
    pub fn pause_remaining(&self) -> Option<Duration> {
        self.inner.transport.pause_remaining()
    }

    async fn send_one(&self, call: Call, body: &Map<String, Value>) -> Result<(), ChameleonError> {
        let body = self.inner.transport.json_body(call, body)?;
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

        let body = HashMap::from([(key, items)]);
        let body = self.inner.transport.json_body(call, &body)?;
        if body.len() >= MAX_BATCH_BYTES {
            // Sending it would only earn Chameleon's own 413 and spend a request of the budget.
            return Err(ChameleonError::too_large(call, body.len(), MAX_BATCH_BYTES));
        }

        let answer = self.execute(call, body).await?;
        Ok(answer::parse_batch_answer(&answer, items.len()))
    }

    /// Sends one request through the transport; `Ok` holds a `2xx` body.
    async fn execute(&self, call: Call, body: Vec<u8>) -> Result<Bytes, ChameleonError> {
        let transport = &self.inner.transport;
        let url = self.inner.endpoints.get(call).clone();
        let accepted = transport.send(call, transport.post_json(url, body)).await?;
        Ok(accepted.body)
    }
}
