//! A spawned sandbox with a client that speaks to each stand-in with the right credentials.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use sync_sandbox::{Sandbox, SandboxConfig};

pub const ACCOUNT_SECRET: &str = "acct-secret-7f3a";
pub const SITE_ID: &str = "site-19c2";
pub const API_KEY: &str = "track-key-5d81";

pub fn config() -> SandboxConfig {
    SandboxConfig {
        chameleon_account_secret: ACCOUNT_SECRET.into(),
        customerio_site_id: SITE_ID.into(),
        customerio_api_key: API_KEY.into(),
        chameleon_requests_per_minute: None,
        customerio_requests_per_second: None,
    }
}

/// An answer, with the body as JSON when it is JSON and as a string otherwise.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The error messages of a Chameleon `{"code","messages"}` answer.
    pub fn messages(&self) -> Vec<String> {
        self.body["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages in {}", self.body))
            .iter()
            .map(|message| message.as_str().expect("string message").to_owned())
            .collect()
    }
}

pub struct Harness {
    pub sandbox: Sandbox,
    pub base: String,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(config()).await
    }

    pub async fn start_with(config: SandboxConfig) -> Self {
        let (sandbox, address) = Sandbox::spawn(config)
            .await
            .expect("sandbox binds loopback");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client builds");
        Self {
            sandbox,
            base: format!("http://{address}"),
            http,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A Chameleon call with the right secret.
    pub async fn chameleon(&self, path: &str, body: Value) -> Answer {
        send(
            self.request(Method::POST, path)
                .header("X-Account-Secret", ACCOUNT_SECRET)
                .json(&body),
        )
        .await
    }

    /// A Customer.io call with the right Basic credentials.
    pub async fn customerio(&self, method: Method, path: &str, body: Value) -> Answer {
        send(
            self.request(method, path)
                .basic_auth(SITE_ID, Some(API_KEY))
                .json(&body),
        )
        .await
    }
}

pub async fn send(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("sandbox answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("answer body reads");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}
