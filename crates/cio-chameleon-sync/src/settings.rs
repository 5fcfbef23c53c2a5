//! The configuration file (DESIGN §6): typed sections with a documented default for every key,
//! loaded from one TOML file and then from `SYNC__SECTION__KEY` environment variables, with
//! unknown keys refused. Secrets may also be read from files (`*_file` keys) so that systemd
//! credentials and Kubernetes secrets never have to sit in the file itself.
//!
//! The doc comment of each field is the configuration reference (`docs/configuration.md`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sync_core::Secret;

use crate::serve::Roles;

mod statuses;

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub queue: QueueSettings,
    pub customerio: CustomerioSettings,
    pub chameleon: ChameleonSettings,
    pub delivery: DeliverySettings,
    pub dedupe: DedupeSettings,
    pub log: LogSettings,
}

/// `[server]`: the receiver's HTTP listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on. Put `/metrics` behind a private address or a proxy.
    pub listen: SocketAddr,
    /// Largest accepted request body in bytes; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Time allowed for one request, body included; slower ones get `408`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests handled at once; beyond it the receiver answers `503` with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// JSON nested deeper than this gets `400`.
    pub max_json_depth: usize,
    /// On SIGTERM, how long in-flight work may take before the process exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 262_144,
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 1024,
            max_json_depth: 32,
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

/// Which queue backend holds messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Backend {
    /// RabbitMQ, for production and several replicas.
    Amqp,
    /// One SQLite file, for a single machine with no broker.
    Embedded,
}

impl TryFrom<String> for Backend {
    type Error = String;

    fn try_from(word: String) -> Result<Self, String> {
        from_word(
            &word,
            &[("amqp", Backend::Amqp), ("embedded", Backend::Embedded)],
        )
    }
}

/// `[queue]`: where accepted messages wait.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// `amqp` or `embedded`; when absent, `amqp` if `amqp_url` is set, else `embedded`.
    pub backend: Option<Backend>,
    /// RabbitMQ URL, for example `amqp://guest:guest@127.0.0.1:5672/%2f`. Its password is
    /// redacted in `config check`.
    pub amqp_url: Option<Secret>,
    /// Prefix of every exchange and queue name, so deployments can share a broker.
    pub prefix: String,
    /// SQLite file of the embedded backend.
    pub path: PathBuf,
    /// Delay tiers of the retry queues (one RabbitMQ queue per tier and direction), such as
    /// `["5s", "30s", "2m", "10m", "1h"]`.
    pub retry_tiers: Vec<humantime_serde::Serde<Duration>>,
    /// Deliveries without settlement (consumer crashes) before a message is dead-lettered.
    pub delivery_limit: u32,
    /// Unsettled messages per consumer. The worker raises it to `chameleon.batch_size` and the
    /// relay to `customerio.batch_size` when those are larger, so that a batch can fill.
    pub prefetch: u16,
    /// Embedded backend: after a crash, how long the messages the process held wait before they
    /// are offered again. A running process renews its leases every third of this, for up to 30
    /// minutes per message, so slow deliveries keep their messages.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Time allowed for each broker operation; the receiver answers `503` when a publish takes
    /// longer (or three quarters of `server.request_timeout`, if that is shorter).
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            backend: None,
            amqp_url: None,
            prefix: "ccsync".into(),
            path: PathBuf::from("data/queue.sqlite3"),
            retry_tiers: [5, 30, 120, 600, 3600]
                .into_iter()
                .map(|secs| Duration::from_secs(secs).into())
                .collect(),
            delivery_limit: 10,
            prefetch: 64,
            lease: Duration::from_secs(180),
            operation_timeout: Duration::from_secs(5),
        }
    }
}

impl QueueSettings {
    /// The retry tiers as plain durations, shortest first.
    pub fn retry_tiers(&self) -> Vec<Duration> {
        let mut tiers: Vec<Duration> = self.retry_tiers.iter().map(|t| **t).collect();
        tiers.sort();
        tiers.dedup();
        tiers
    }

    /// The backend in effect.
    pub fn effective_backend(&self) -> Backend {
        self.backend.unwrap_or(if self.amqp_url.is_some() {
            Backend::Amqp
        } else {
            Backend::Embedded
        })
    }
}

/// Customer.io's data centre, which picks the Track API host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Region {
    Us,
    Eu,
}

impl TryFrom<String> for Region {
    type Error = String;

    fn try_from(word: String) -> Result<Self, String> {
        from_word(&word, &[("us", Region::Us), ("eu", Region::Eu)])
    }
}

/// `[customerio]`: the inbound webhooks and the Track API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomerioSettings {
    /// Path segment of the inbound URLs (`/v1/customerio/{token}/...`); treat it as a secret.
    pub endpoint_token: Secret,
    /// File holding the endpoint token (overrides `endpoint_token`).
    pub endpoint_token_file: Option<PathBuf>,
    /// Reporting webhook signing keys; several during a rotation; empty = not checked.
    pub signing_keys: Vec<Secret>,
    /// File with one signing key per line (added to `signing_keys`).
    pub signing_keys_file: Option<PathBuf>,
    /// Largest accepted difference between `X-CIO-Timestamp` and now, in seconds.
    pub signature_tolerance_secs: u64,
    /// `us` or `eu`; picks the Track API host unless `track_url` is set.
    pub region: Region,
    /// Track API base URL, overriding `region` (for the sandbox or a proxy).
    pub track_url: Option<String>,
    /// Track API site id.
    pub site_id: String,
    /// Track API key.
    pub api_key: Secret,
    /// File holding the Track API key (overrides `api_key`).
    pub api_key_file: Option<PathBuf>,
    /// Track API requests per second, across the process.
    pub requests_per_second: u32,
    /// Relay: identify a person by `profile.email` when the webhook has no `profile.uid`.
    pub allow_email_identity: bool,
    /// Relay: Chameleon topics to relay (`tour.completed`, ...); empty = all but `ping`.
    pub topics: Vec<String>,
    /// Relay: Chameleon topics never relayed.
    pub exclude_topics: Vec<String>,
    /// Relay: events sent in one Track v2 batch request.
    pub batch_size: usize,
}

impl Default for CustomerioSettings {
    fn default() -> Self {
        Self {
            endpoint_token: Secret::default(),
            endpoint_token_file: None,
            signing_keys: Vec::new(),
            signing_keys_file: None,
            signature_tolerance_secs: 300,
            region: Region::Us,
            track_url: None,
            site_id: String::new(),
            api_key: Secret::default(),
            api_key_file: None,
            requests_per_second: 100,
            allow_email_identity: false,
            topics: Vec::new(),
            exclude_topics: Vec::new(),
            batch_size: 100,
        }
    }
}

/// How the worker treats Chameleon's reserved attribute names in workflow bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ReservedNames {
    /// Send them as `cio_<name>`.
    Rename,
    /// Dead-letter the message with reason `reserved_name`.
    Reject,
}

impl TryFrom<String> for ReservedNames {
    type Error = String;

    fn try_from(word: String) -> Result<Self, String> {
        from_word(
            &word,
            &[
                ("rename", ReservedNames::Rename),
                ("reject", ReservedNames::Reject),
            ],
        )
    }
}

/// `[chameleon]`: the REST API and the outgoing webhooks.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChameleonSettings {
    /// REST API base URL.
    pub api_url: String,
    /// Account secret, sent in the `X-Account-Secret` header.
    pub account_secret: Secret,
    /// File holding the account secret (overrides `account_secret`).
    pub account_secret_file: Option<PathBuf>,
    /// Webhook secrets; several during a rotation; empty disables the Chameleon route.
    pub webhook_secrets: Vec<Secret>,
    /// File with one webhook secret per line (added to `webhook_secrets`).
    pub webhook_secrets_file: Option<PathBuf>,
    /// Largest accepted difference between a webhook's `sent_at` and now, in seconds.
    pub signature_tolerance_secs: u64,
    /// REST requests per minute, across the process (Chameleon allows 60 to 120).
    pub requests_per_minute: u32,
    /// REST requests in flight at once.
    pub max_in_flight: usize,
    /// Worker: `rename` reserved attribute names with a `cio_` prefix, or `reject` the message.
    pub reserved_names: ReservedNames,
    /// Worker: reporting metrics forwarded, as `object_type.metric` patterns with `*`
    /// (`email.opened`, `email.*`, `*.clicked`); empty = all.
    pub forward_metrics: Vec<String>,
    /// Worker: profile and company updates sent in one batch request.
    pub batch_size: usize,
    /// Worker: how long the first item of a batch may wait for others.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
}

impl Default for ChameleonSettings {
    fn default() -> Self {
        Self {
            api_url: "https://api.chameleon.io".into(),
            account_secret: Secret::default(),
            account_secret_file: None,
            webhook_secrets: Vec::new(),
            webhook_secrets_file: None,
            signature_tolerance_secs: 300,
            requests_per_minute: 60,
            max_in_flight: 2,
            reserved_names: ReservedNames::Rename,
            forward_metrics: Vec::new(),
            batch_size: 500,
            batch_linger: Duration::from_secs(1),
        }
    }
}

/// `[delivery]`: retries, in both directions.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempts in all before a transiently failing message is dead-lettered.
    pub max_attempts: u32,
    /// Age after which a failing message is dead-lettered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Fraction of each delay drawn at random.
    pub jitter: f64,
    /// Time allowed for one upstream request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest pause obeyed when an upstream answers `429` with a wait.
    #[serde(with = "humantime_serde")]
    pub max_rate_limit_wait: Duration,
    /// Upstream error statuses retried with backoff; any other error status is dead-lettered.
    /// By default `408` and `500` to `599`. A `429` is always a rate limit (the client pauses and
    /// the message is retried), listed or not; a `2xx` may not be listed. Items are codes or
    /// inclusive ranges: `[408, "500-599"]`, or `408,500-599` in the environment.
    #[serde(with = "statuses")]
    pub retryable_statuses: Vec<u16>,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_age: Duration::from_secs(72 * 3600),
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            jitter: 0.2,
            request_timeout: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(120),
            retryable_statuses: [408].into_iter().chain(500..=599).collect(),
        }
    }
}

/// `[dedupe]`: recognising providers' retries of the same event.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupeSettings {
    /// How long a provider event id is remembered.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// SQLite file of seen ids; defaults to `seen.sqlite3` beside `queue.path`.
    pub path: Option<PathBuf>,
}

impl Default for DedupeSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(7 * 24 * 3600),
            path: None,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    Text,
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(word: String) -> Result<Self, String> {
        from_word(
            &word,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )
    }
}

/// `[log]`: logs go to standard error.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Filter used when `RUST_LOG` is not set, for example `info` or `info,sync_worker=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

// === loading ===

/// Keys whose environment values are comma-separated lists.
const LIST_KEYS: [&str; 7] = [
    "customerio.signing_keys",
    "customerio.topics",
    "customerio.exclude_topics",
    "chameleon.webhook_secrets",
    "chameleon.forward_metrics",
    "queue.retry_tiers",
    "delivery.retryable_statuses",
];

impl Settings {
    /// Load the file (if any), then the process environment, then secret files; then validate.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Settings> {
        Self::load_with_env(path, None)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                bail!("configuration file {} does not exist", path.display());
            }
            if path.is_dir() {
                bail!(
                    "configuration file {} is a directory; --config (or SYNC_CONFIG) names a TOML \
                     file",
                    path.display()
                );
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Environment values are read as written: "00123" stays "00123" (a token, a site id), and
        // numbers are parsed only where the key is a number. Lists are split here, so that one
        // item is a list too; the config crate splits only values that do not parse as numbers.
        let env: HashMap<String, String> = match env {
            Some(env) => env,
            None => std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .collect(),
        };
        let overrides: Vec<String> = env.keys().cloned().collect();
        // An empty variable is most often a template whose value went missing; read as written
        // it would empty the key (for the signing keys: turn signature checks off). Refuse it.
        let mut empty: Vec<&String> = env
            .iter()
            .filter(|(name, value)| name.starts_with("SYNC__") && value.trim().is_empty())
            .map(|(name, _)| name)
            .collect();
        if !empty.is_empty() {
            empty.sort();
            let names: Vec<&str> = empty.iter().map(|name| name.as_str()).collect();
            bail!(
                "invalid configuration: {} set but empty; unset it to keep the file's value or \
                 the default",
                names.join(", ")
            );
        }
        let mut plain = HashMap::new();
        let mut lists = Vec::new();
        for (name, value) in env {
            match key_of(&name) {
                Some(key) if LIST_KEYS.contains(&key.as_str()) => lists.push((key, value)),
                _ => {
                    plain.insert(name, value);
                }
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("SYNC")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(false)
                .source(Some(plain)),
        );
        for (key, value) in lists {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect();
            builder = builder
                .set_override(key.as_str(), items)
                .map_err(|err| anyhow::anyhow!("{err}"))
                .context("cannot read the configuration")?;
        }
        let raw = builder
            .build()
            .map_err(|err| anyhow::anyhow!("{err}"))
            .context("cannot read the configuration")?;
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|err| {
                let text = err.to_string();
                match from_environment(&text, &overrides) {
                    Some(name) => {
                        anyhow::anyhow!("{text} (set by the environment variable {name})")
                    }
                    None => anyhow::anyhow!("{text}"),
                }
            })
            .context("invalid configuration")?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    fn read_secret_files(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.customerio.endpoint_token_file {
            self.customerio.endpoint_token = read_secret(path)?;
        }
        if let Some(path) = &self.customerio.api_key_file {
            self.customerio.api_key = read_secret(path)?;
        }
        if let Some(path) = &self.chameleon.account_secret_file {
            self.chameleon.account_secret = read_secret(path)?;
        }
        if let Some(path) = &self.customerio.signing_keys_file {
            self.customerio
                .signing_keys
                .extend(read_secret_lines(path)?);
        }
        if let Some(path) = &self.chameleon.webhook_secrets_file {
            self.chameleon
                .webhook_secrets
                .extend(read_secret_lines(path)?);
        }
        Ok(())
    }

    /// Checks that no single key can catch: combinations and ranges.
    pub fn validate(&self) -> anyhow::Result<()> {
        let prefix = &self.queue.prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!("queue.prefix must be letters, digits, '-', '_' or '.', got {prefix:?}");
        }
        if self.queue.effective_backend() == Backend::Amqp && self.queue.amqp_url.is_none() {
            bail!("queue.backend is \"amqp\" but queue.amqp_url is not set");
        }
        if let Some(url) = &self.queue.amqp_url {
            if !matches!(url.expose().split_once("://"), Some(("amqp" | "amqps", _))) {
                bail!("queue.amqp_url must be an amqp:// or amqps:// URL");
            }
            let amqp = sync_queue::amqp::AmqpConfig {
                url: url.expose().to_owned(),
                ..Default::default()
            };
            if let Err(err) = amqp.validate() {
                bail!("queue.amqp_url: {err}");
            }
        }
        if self.queue.retry_tiers.is_empty() {
            bail!("queue.retry_tiers must name at least one delay");
        }
        if self.queue.prefetch == 0 {
            bail!("queue.prefetch must be at least 1");
        }
        if self.server.max_body_bytes == 0 {
            bail!("server.max_body_bytes must be at least 1");
        }
        if self.chameleon.requests_per_minute == 0 || self.customerio.requests_per_second == 0 {
            bail!("chameleon.requests_per_minute and customerio.requests_per_second must be > 0");
        }
        if self.delivery.max_attempts == 0 {
            bail!("delivery.max_attempts must be at least 1");
        }
        if self.chameleon.max_in_flight == 0 {
            bail!("chameleon.max_in_flight must be at least 1");
        }
        for (key, value) in [
            ("server.request_timeout", self.server.request_timeout),
            ("delivery.request_timeout", self.delivery.request_timeout),
            ("queue.operation_timeout", self.queue.operation_timeout),
        ] {
            if value.is_zero() {
                bail!("{key} must be above zero");
            }
        }
        if !(0.0..=1.0).contains(&self.delivery.jitter) {
            bail!("delivery.jitter must be between 0 and 1");
        }
        for &code in &self.delivery.retryable_statuses {
            if !(100..=599).contains(&code) {
                bail!("delivery.retryable_statuses: {code} is not an HTTP status (100 to 599)");
            }
            if (200..300).contains(&code) {
                bail!(
                    "delivery.retryable_statuses: {code} is a success status; a 2xx answer is \
                     never retried"
                );
            }
        }
        let token = self.customerio.endpoint_token.expose();
        if !token.is_empty() && (token.len() < 16 || token.contains('/')) {
            bail!("customerio.endpoint_token must be at least 16 characters and contain no '/'");
        }
        let inbound = sync_core::inbound::InboundOptions {
            forward_metrics: self.chameleon.forward_metrics.clone(),
            ..Default::default()
        };
        inbound
            .validate()
            .map_err(|err| anyhow::anyhow!("chameleon.forward_metrics: {err}"))?;
        if !matches!(
            self.chameleon.api_url.split_once("://"),
            Some(("http" | "https", _))
        ) {
            bail!("chameleon.api_url must be an http(s) URL");
        }
        Ok(())
    }

    /// The store of seen provider event ids: `dedupe.path`, else `seen.sqlite3` beside the
    /// embedded queue file (`data/` by default, RabbitMQ deployments included).
    pub fn dedupe_path(&self) -> PathBuf {
        self.dedupe.path.clone().unwrap_or_else(|| {
            self.queue
                .path
                .parent()
                .map_or_else(|| "seen.sqlite3".into(), |dir| dir.join("seen.sqlite3"))
        })
    }

    /// Everything the given roles need but lack, one sentence each that names the key and the
    /// environment variable setting it. Empty when the roles can start. Only the upstream
    /// credentials are checked here: every other key has a working default, and the `dlq`
    /// commands need nothing beyond `[queue]`.
    ///
    /// The worker needs `chameleon.account_secret`; the relay needs `customerio.site_id` and
    /// `customerio.api_key`. The receiver needs at least one route: an empty
    /// `customerio.endpoint_token` turns off the Customer.io routes and empty
    /// `chameleon.webhook_secrets` the Chameleon route (see [`Settings::receiver_notes`]), and
    /// with both empty it would answer every webhook `404`.
    pub fn missing_for(&self, roles: Roles) -> Vec<String> {
        let customerio = &self.customerio;
        let chameleon = &self.chameleon;
        let mut missing = Vec::new();
        if roles.worker && chameleon.account_secret.is_empty() {
            missing.push(format!(
                "{} is empty: the worker needs it",
                name_secret(
                    "chameleon.account_secret",
                    chameleon.account_secret_file.as_deref()
                )
            ));
        }
        if roles.relay {
            if customerio.site_id.trim().is_empty() {
                missing.push(format!(
                    "{} is empty: the relay needs it",
                    name_key("customerio.site_id")
                ));
            } else if customerio.site_id.contains(':') {
                missing.push(format!(
                    "{} contains ':', which the Track API's Basic auth cannot carry: the relay \
                     needs the workspace's site id",
                    name_key("customerio.site_id")
                ));
            }
            if customerio.api_key.is_empty() {
                missing.push(format!(
                    "{} is empty: the relay needs it",
                    name_secret("customerio.api_key", customerio.api_key_file.as_deref())
                ));
            }
        }
        if roles.receiver
            && customerio.endpoint_token.is_empty()
            && chameleon.webhook_secrets.is_empty()
        {
            missing.push(format!(
                "{} and {} are both empty: the receiver needs at least one of them, or it answers \
                 every webhook 404",
                name_secret(
                    "customerio.endpoint_token",
                    customerio.endpoint_token_file.as_deref()
                ),
                name_secret(
                    "chameleon.webhook_secrets",
                    chameleon.webhook_secrets_file.as_deref()
                ),
            ));
        }
        missing
    }

    /// What the receiver leaves out with these settings: a route turned off, or signatures not
    /// checked. Worth saying, but no reason to refuse to start.
    pub fn receiver_notes(&self) -> Vec<String> {
        let customerio = &self.customerio;
        let chameleon = &self.chameleon;
        let mut notes = Vec::new();
        if customerio.endpoint_token.is_empty() {
            notes.push(format!(
                "{} is empty: the Customer.io routes answer 404",
                name_secret(
                    "customerio.endpoint_token",
                    customerio.endpoint_token_file.as_deref()
                )
            ));
        } else if customerio.signing_keys.is_empty() {
            notes.push(format!(
                "{} is empty: reporting webhooks are accepted unsigned (the endpoint token alone \
                 authenticates them)",
                name_secret(
                    "customerio.signing_keys",
                    customerio.signing_keys_file.as_deref()
                )
            ));
        }
        if chameleon.webhook_secrets.is_empty() {
            notes.push(format!(
                "{} is empty: the Chameleon route answers 404",
                name_secret(
                    "chameleon.webhook_secrets",
                    chameleon.webhook_secrets_file.as_deref()
                )
            ));
        }
        notes
    }

    /// The effective configuration as TOML, every secret redacted.
    pub fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut copy = self.clone();
        copy.dedupe.path = Some(self.dedupe_path());
        copy.queue.backend = Some(self.queue.effective_backend());
        if let Some(url) = &copy.queue.amqp_url {
            copy.queue.amqp_url = Some(Secret::new(redact_url_password(url.expose())));
        }
        let text = toml::to_string_pretty(&RedactedView(&copy))?;
        Ok(text)
    }
}

/// Serialises settings with the AMQP URL shown (password already masked) and every other
/// secret printed as `[redacted]`.
struct RedactedView<'a>(&'a Settings);

impl Serialize for RedactedView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
        if let Some(url) = &self.0.queue.amqp_url {
            value["queue"]["amqp_url"] = serde_json::Value::String(url.expose().to_owned());
        }
        strip_nulls(&mut value);
        value.serialize(serializer)
    }
}

/// TOML has no null: leave unset optional keys out.
fn strip_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

/// `amqp://user:pass@host/vhost` -> `amqp://user:[redacted]@host/vhost`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let mut out = format!("{scheme}://{user}:{}@{host}", sync_core::secret::REDACTED);
    if let Some(path) = path {
        out.push('/');
        out.push_str(path);
    }
    out
}

/// One of `words`, or an error that lists them all (serde's own says only that there is no such
/// variant).
fn from_word<T: Copy>(word: &str, words: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, value)) = words.iter().find(|(name, _)| *name == word) {
        return Ok(*value);
    }
    let names: Vec<String> = words.iter().map(|(name, _)| format!("`{name}`")).collect();
    let expected = names.join(", ");
    Err(format!("unknown value {word:?} (accepted: {expected})"))
}

/// The environment variable of a dotted key: `chameleon.account_secret` ->
/// `SYNC__CHAMELEON__ACCOUNT_SECRET`.
fn variable_of(key: &str) -> String {
    format!("SYNC__{}", key.to_uppercase().replace('.', "__"))
}

/// The dotted key an override variable sets: `SYNC__CHAMELEON__ACCOUNT_SECRET` ->
/// `chameleon.account_secret`; `None` for other variables.
fn key_of(variable: &str) -> Option<String> {
    let key = variable.strip_prefix("SYNC__")?;
    Some(key.to_lowercase().replace("__", "."))
}

/// `customerio.site_id (SYNC__CUSTOMERIO__SITE_ID)`.
fn name_key(key: &str) -> String {
    format!("{key} ({})", variable_of(key))
}

/// A secret key with its variable and its `_file` key, or the file it was read from.
fn name_secret(key: &str, file: Option<&Path>) -> String {
    match file {
        Some(path) => format!("{key} (read from {key}_file, {})", path.display()),
        None => format!("{key} ({}, or {key}_file)", variable_of(key)),
    }
}

/// The `SYNC__...` variable whose key an error message names, if one does: a typo in the
/// environment reads like a typo in the file otherwise. The config crate names the key as
/// "unknown field `F`" (with "for key `P`" when the field is under `P`) or, for a bad value, "for
/// key `K`"; a variable is named only when its own key matches, so an error in the file is not
/// blamed on a variable that happens to share a word with it.
fn from_environment<'a>(error: &str, names: &'a [String]) -> Option<&'a str> {
    let quoted_after = |marker: &str| {
        let rest = &error[error.find(marker)? + marker.len()..];
        rest.split('`').next()
    };
    let parent = quoted_after("for key `").filter(|key| !key.is_empty());
    let culprit = |key: &str| match quoted_after("unknown field `") {
        // The variable names the unknown field itself, under the parent the error names.
        Some(field) => {
            let (above, last) = key.rsplit_once('.').unwrap_or(("", key));
            last == field && parent.unwrap_or("") == above
                // A misspelt section: the field is the variable's first part.
                || (parent.is_none() && key.split('.').next() == Some(field))
        }
        // A bad value: the key the error names, or a key below it.
        None => {
            parent.is_some_and(|parent| key == parent || key.starts_with(&format!("{parent}.")))
        }
    };
    names
        .iter()
        .filter_map(|name| Some((name, key_of(name)?)))
        .find(|(_, key)| culprit(key))
        .map(|(name, _)| name.as_str())
}

/// Environment variables that look meant for the configuration but are not read: overrides are
/// `SYNC__SECTION__KEY`, with double underscores (`SYNC_CONFIG` names the file).
pub fn ignored_environment() -> Vec<String> {
    let mut ignored: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| is_ignored_override(name))
        .collect();
    ignored.sort();
    ignored
}

fn is_ignored_override(name: &str) -> bool {
    name.starts_with("SYNC_") && !name.starts_with("SYNC__") && name != "SYNC_CONFIG"
}

fn read_secret(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read secret file {}", path.display()))?;
    Ok(Secret::new(text.trim()))
}

fn read_secret_lines(path: &Path) -> anyhow::Result<Vec<Secret>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read secret file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Secret::new)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_run_embedded() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(settings.queue.effective_backend(), Backend::Embedded);
        assert_eq!(settings.queue.prefix, "ccsync");
        assert_eq!(settings.chameleon.requests_per_minute, 60);
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "c.toml",
            "[chameleon]\naccount_secret = \"from-file\"\nrequests_per_minute = 90\n",
        );
        let settings = Settings::load_with_env(
            Some(&file),
            env(&[
                ("SYNC__CHAMELEON__ACCOUNT_SECRET", "from-env"),
                ("SYNC__CUSTOMERIO__SIGNING_KEYS", "k1,k2"),
                (
                    "SYNC__QUEUE__AMQP_URL",
                    "amqp://guest:guest@127.0.0.1:5672/%2f",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(settings.chameleon.account_secret.expose(), "from-env");
        assert_eq!(settings.chameleon.requests_per_minute, 90);
        assert_eq!(settings.customerio.signing_keys.len(), 2);
        assert_eq!(settings.queue.effective_backend(), Backend::Amqp);
    }

    #[test]
    fn environment_values_are_taken_as_written() {
        let settings = Settings::load_with_env(
            None,
            env(&[
                ("SYNC__CUSTOMERIO__SITE_ID", "00123"),
                ("SYNC__CUSTOMERIO__ENDPOINT_TOKEN", "00001234567890123456"),
                ("SYNC__QUEUE__PREFIX", "007"),
                ("SYNC__CHAMELEON__ACCOUNT_SECRET", "1e3"),
                ("SYNC__CHAMELEON__REQUESTS_PER_MINUTE", "90"),
                ("SYNC__DELIVERY__JITTER", "0.10"),
                ("SYNC__DELIVERY__RETRYABLE_STATUSES", "503"),
                ("SYNC__CUSTOMERIO__SIGNING_KEYS", "12345"),
                ("SYNC__CHAMELEON__WEBHOOK_SECRETS", " true , 1e5 "),
            ]),
        )
        .unwrap();
        assert_eq!(settings.customerio.site_id, "00123");
        assert_eq!(
            settings.customerio.endpoint_token.expose(),
            "00001234567890123456"
        );
        assert_eq!(settings.queue.prefix, "007");
        assert_eq!(settings.chameleon.account_secret.expose(), "1e3");
        assert_eq!(settings.chameleon.requests_per_minute, 90);
        assert!((settings.delivery.jitter - 0.1).abs() < f64::EPSILON);
        assert_eq!(settings.delivery.retryable_statuses, vec![503]);
        let keys: Vec<&str> = settings
            .customerio
            .signing_keys
            .iter()
            .map(|key| key.expose())
            .collect();
        assert_eq!(keys, ["12345"]);
        let secrets: Vec<&str> = settings
            .chameleon
            .webhook_secrets
            .iter()
            .map(|secret| secret.expose())
            .collect();
        assert_eq!(secrets, ["true", "1e5"]);

        let err = Settings::load_with_env(
            None,
            env(&[("SYNC__CHAMELEON__REQUESTS_PER_MINUTE", "ninety")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("SYNC__CHAMELEON__REQUESTS_PER_MINUTE"),
            "{err:#}"
        );
    }

    #[test]
    fn errors_name_the_variable_only_when_it_is_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "c.toml", "[queue]\nbatch_size = 5\n");
        let err =
            Settings::load_with_env(Some(&file), env(&[("SYNC__CHAMELEON__BATCH_SIZE", "10")]))
                .unwrap_err();
        assert!(format!("{err:#}").contains("batch_size"), "{err:#}");
        assert!(!format!("{err:#}").contains("SYNC__"), "{err:#}");

        let err =
            Settings::load_with_env(None, env(&[("SYNC__SERVER__LISTEN__PORT", "1")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("SYNC__SERVER__LISTEN__PORT"),
            "{err:#}"
        );
    }

    #[test]
    fn empty_variables_are_refused_by_name() {
        let err = Settings::load_with_env(
            None,
            env(&[
                ("SYNC__CUSTOMERIO__SIGNING_KEYS", ""),
                ("SYNC__CHAMELEON__WEBHOOK_SECRETS", " "),
            ]),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(
                "SYNC__CHAMELEON__WEBHOOK_SECRETS, SYNC__CUSTOMERIO__SIGNING_KEYS set but empty"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unparsable_broker_url_is_a_configuration_error() {
        let err = Settings::load_with_env(
            None,
            env(&[(
                "SYNC__QUEUE__AMQP_URL",
                "amqp://guest:guest@127.0.0.1:notaport/%2f",
            )]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("queue.amqp_url"), "{err:#}");
    }

    #[test]
    fn zero_timeouts_and_no_requests_in_flight_are_refused() {
        for (variable, value, key) in [
            (
                "SYNC__SERVER__REQUEST_TIMEOUT",
                "0s",
                "server.request_timeout",
            ),
            (
                "SYNC__DELIVERY__REQUEST_TIMEOUT",
                "0s",
                "delivery.request_timeout",
            ),
            (
                "SYNC__QUEUE__OPERATION_TIMEOUT",
                "0s",
                "queue.operation_timeout",
            ),
            (
                "SYNC__CHAMELEON__MAX_IN_FLIGHT",
                "0",
                "chameleon.max_in_flight",
            ),
        ] {
            let err = Settings::load_with_env(None, env(&[(variable, value)])).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{variable}: {err:#}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "c.toml",
            "[chameleon]\naccount_secrte = \"x\"\n",
        );
        let err = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("account_secrte"), "{err:#}");
        assert!(!format!("{err:#}").contains("environment"), "{err:#}");
        let err = Settings::load_with_env(None, env(&[("SYNC__QUEUE__PERFIX", "x")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("perfix")
                && format!("{err:#}").contains("the environment variable SYNC__QUEUE__PERFIX"),
            "{err:#}"
        );
        let err = Settings::load_with_env(
            None,
            env(&[("SYNC__QUEUE__PREFIX", "x"), ("SYNC__SERVR__LISTEN", "x")]),
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("the environment variable SYNC__SERVR__LISTEN"),
            "{err:#}"
        );
    }

    #[test]
    fn single_underscore_variables_are_named_as_ignored() {
        assert!(is_ignored_override("SYNC_SERVER_LISTEN"));
        assert!(!is_ignored_override("SYNC__SERVER__LISTEN"));
        assert!(!is_ignored_override("SYNC_CONFIG"));
        assert!(!is_ignored_override("SYNCHRONY"));
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let key = write(dir.path(), "key", "cio-api-key-value\n");
        let secrets = write(dir.path(), "hooks", "whsec-one\n\nwhsec-two\n");
        let file = write(
            dir.path(),
            "c.toml",
            &format!(
                "[customerio]\nendpoint_token = \"tok-0123456789abcdef\"\napi_key_file = {:?}\n\
                 [chameleon]\nwebhook_secrets_file = {:?}\naccount_secret = \"acct-secret\"\n\
                 [queue]\namqp_url = \"amqp://guest:brokerpass@127.0.0.1:5672/%2f\"\n",
                key.display().to_string(),
                secrets.display().to_string()
            ),
        );
        let settings = Settings::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(settings.customerio.api_key.expose(), "cio-api-key-value");
        assert_eq!(settings.chameleon.webhook_secrets.len(), 2);
        let shown = settings.redacted_toml().unwrap();
        for secret in [
            "cio-api-key-value",
            "whsec-one",
            "whsec-two",
            "acct-secret",
            "tok-0123456789abcdef",
            "brokerpass",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
        }
        assert!(
            shown.contains("amqp://guest:[redacted]@127.0.0.1:5672/%2f"),
            "{shown}"
        );
        assert!(!format!("{settings:?}").contains("acct-secret"));
    }

    #[test]
    fn bad_combinations_are_explained() {
        let err =
            Settings::load_with_env(None, env(&[("SYNC__QUEUE__BACKEND", "amqp")])).unwrap_err();
        assert!(format!("{err:#}").contains("amqp_url"), "{err:#}");
        let err =
            Settings::load_with_env(None, env(&[("SYNC__QUEUE__PREFIX", "a b")])).unwrap_err();
        assert!(format!("{err:#}").contains("queue.prefix"), "{err:#}");
    }

    #[test]
    fn retryable_statuses_default_to_the_clients_and_refuse_a_2xx() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let statuses = &settings.delivery.retryable_statuses;
        assert_eq!(
            statuses,
            &chameleon_api::ChameleonConfig::default().retryable_statuses
        );
        assert_eq!(
            statuses,
            &customerio_api::TrackConfig::default().retryable_statuses
        );

        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "c.toml",
            "[delivery]\nretryable_statuses = [409, 503]\n",
        );
        let settings = Settings::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(settings.delivery.retryable_statuses, vec![409, 503]);
        let settings = Settings::load_with_env(
            None,
            env(&[("SYNC__DELIVERY__RETRYABLE_STATUSES", "502,503,409")]),
        )
        .unwrap();
        assert_eq!(settings.delivery.retryable_statuses, vec![502, 503, 409]);
        let settings = Settings::load_with_env(
            None,
            env(&[("SYNC__DELIVERY__RETRYABLE_STATUSES", "408,500-504")]),
        )
        .unwrap();
        assert_eq!(
            settings.delivery.retryable_statuses,
            vec![408, 500, 501, 502, 503, 504]
        );
        let printed = Settings::load_with_env(None, env(&[]))
            .unwrap()
            .redacted_toml()
            .unwrap();
        let printed: toml::Value = toml::from_str(&printed).unwrap();
        assert_eq!(
            printed["delivery"]["retryable_statuses"],
            toml::Value::try_from((408, "500-599")).unwrap()
        );

        let err = Settings::load_with_env(
            None,
            env(&[("SYNC__DELIVERY__RETRYABLE_STATUSES", "503,204")]),
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "delivery.retryable_statuses: 204 is a success status; a 2xx answer is never retried"
        );
        let file = write(
            dir.path(),
            "bad.toml",
            "[delivery]\nretryable_statuses = [5030]\n",
        );
        let err = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(
            format!("{err:#}").contains("5030 is not an HTTP status"),
            "{err:#}"
        );
    }

    #[test]
    fn missing_credentials_are_listed_by_role_with_their_variables() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        let all = settings.missing_for(Roles::ALL);
        assert_eq!(
            all,
            [
                "chameleon.account_secret (SYNC__CHAMELEON__ACCOUNT_SECRET, or \
                 chameleon.account_secret_file) is empty: the worker needs it",
                "customerio.site_id (SYNC__CUSTOMERIO__SITE_ID) is empty: the relay needs it",
                "customerio.api_key (SYNC__CUSTOMERIO__API_KEY, or customerio.api_key_file) is \
                 empty: the relay needs it",
                "customerio.endpoint_token (SYNC__CUSTOMERIO__ENDPOINT_TOKEN, or \
                 customerio.endpoint_token_file) and chameleon.webhook_secrets \
                 (SYNC__CHAMELEON__WEBHOOK_SECRETS, or chameleon.webhook_secrets_file) are both \
                 empty: the receiver needs at least one of them, or it answers every webhook 404",
            ]
        );
        assert_eq!(settings.missing_for(Roles::WORKER), all[..1]);
        assert_eq!(settings.missing_for(Roles::RELAY), all[1..3]);
        assert_eq!(settings.missing_for(Roles::RECEIVER), all[3..]);

        // One route is enough for the receiver; the other is a note.
        let settings =
            Settings::load_with_env(None, env(&[("SYNC__CHAMELEON__WEBHOOK_SECRETS", "whsec")]))
                .unwrap();
        assert!(settings.missing_for(Roles::RECEIVER).is_empty());
        let notes = settings.receiver_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("SYNC__CUSTOMERIO__ENDPOINT_TOKEN")
                && notes[0].contains("Customer.io routes answer 404"),
            "{notes:?}"
        );

        let complete = Settings::load_with_env(
            None,
            env(&[
                ("SYNC__CHAMELEON__ACCOUNT_SECRET", "acct"),
                ("SYNC__CUSTOMERIO__SITE_ID", "site"),
                ("SYNC__CUSTOMERIO__API_KEY", "key"),
                ("SYNC__CUSTOMERIO__ENDPOINT_TOKEN", "endpoint-token-0001"),
                ("SYNC__CUSTOMERIO__SIGNING_KEYS", "sign"),
                ("SYNC__CHAMELEON__WEBHOOK_SECRETS", "whsec"),
            ]),
        )
        .unwrap();
        assert!(complete.missing_for(Roles::ALL).is_empty());
        assert!(complete.receiver_notes().is_empty());
        let mut colon = complete.clone();
        colon.customerio.site_id = "a:b".into();
        let missing = colon.missing_for(Roles::ALL);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("customerio.site_id (SYNC__CUSTOMERIO__SITE_ID) contains ':'")
        );
    }

    #[test]
    fn an_empty_secret_file_is_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "account-secret", "\n");
        let settings = Settings::load_with_env(
            None,
            env(&[(
                "SYNC__CHAMELEON__ACCOUNT_SECRET_FILE",
                empty.to_str().unwrap(),
            )]),
        )
        .unwrap();
        assert_eq!(
            settings.missing_for(Roles::WORKER),
            [format!(
                "chameleon.account_secret (read from chameleon.account_secret_file, {}) is \
                 empty: the worker needs it",
                empty.display()
            )]
        );
    }

    #[test]
    fn an_unknown_word_lists_the_accepted_ones() {
        let err =
            Settings::load_with_env(None, env(&[("SYNC__QUEUE__BACKEND", "kafka")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains(r#"unknown value "kafka" (accepted: `amqp`, `embedded`)"#)
                && text.contains("queue.backend")
                && text.contains("SYNC__QUEUE__BACKEND"),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "c.toml",
            "[customerio]\nregion = \"EU\"\n[log]\nformat = \"json\"\n",
        );
        let err = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(
            format!("{err:#}").contains(r#"unknown value "EU" (accepted: `us`, `eu`)"#),
            "{err:#}"
        );
        let file = write(
            dir.path(),
            "ok.toml",
            "[customerio]\nregion = \"eu\"\n[chameleon]\nreserved_names = \"reject\"\n",
        );
        let settings = Settings::load_with_env(Some(&file), env(&[])).unwrap();
        assert_eq!(settings.customerio.region, Region::Eu);
        assert_eq!(settings.chameleon.reserved_names, ReservedNames::Reject);
        assert!(
            settings
                .redacted_toml()
                .unwrap()
                .contains("region = \"eu\""),
            "words are written as they are read"
        );
    }

    #[test]
    fn a_directory_is_not_taken_for_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Settings::load_with_env(Some(dir.path()), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            redact_url_password("amqp://u:p@h:5672/%2f"),
            "amqp://u:[redacted]@h:5672/%2f"
        );
        assert_eq!(redact_url_password("amqp://h:5672"), "amqp://h:5672");
    }

    #[test]
    fn every_key_is_in_the_configuration_reference() {
        let reference = include_str!("../../../docs/configuration.md");
        let mut settings = Settings::default();
        settings.queue.amqp_url = Some(Secret::new("amqp://x"));
        settings.queue.backend = Some(Backend::Amqp);
        settings.customerio.track_url = Some("http://x".into());
        let value = serde_json::to_value(&settings).unwrap();
        for (section, keys) in value.as_object().unwrap() {
            let heading = format!("## `[{section}]`");
            let start = reference
                .find(&heading)
                .unwrap_or_else(|| panic!("{heading} missing from docs/configuration.md"));
            let body = &reference[start..];
            let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
            for key in keys.as_object().unwrap().keys() {
                assert!(
                    body.contains(&format!("| `{key}` |")),
                    "[{section}] {key} missing from docs/configuration.md"
                );
            }
        }
    }
}
