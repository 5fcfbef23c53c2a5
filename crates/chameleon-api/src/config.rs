//! The Chameleon client's configuration: where the API lives, the account secret, and the rate
//! budget the client keeps to. The binary parses it; this crate only validates it.

use std::time::Duration;

use sync_core::Secret;
use upstream_http::StatusSet;
use url::Url;

use crate::error::ChameleonError;

/// Chameleon's public API.
pub const DEFAULT_API_URL: &str = "https://api.chameleon.io";

/// How to reach Chameleon's REST API and how hard to use it.
#[derive(Clone, Debug)]
pub struct ChameleonConfig {
    /// Base URL of the API, `https://api.chameleon.io` in production; a path prefix is kept, so a
    /// local stand-in can live under one.
    pub api_url: String,
    /// The account secret (Chameleon settings, Tokens), sent as the `X-Account-Secret` header.
    pub account_secret: Secret,
    /// Requests per minute for every clone of the client together, spaced evenly (no burst).
    /// Chameleon allows 60 to 120 per account; 60 is the safe default.
    pub requests_per_minute: u32,
    /// Requests on the wire at once, for every clone of the client together.
    pub max_in_flight: usize,
    /// Limit on one request, from sending it to the end of the answer's body.
    pub timeout: Duration,
    /// The longest pause a `429` can impose on the client; longer stated waits are cut to it.
    pub max_wait: Duration,
    /// Error statuses that mean "try later": such an answer is retried with backoff, any other
    /// error status is dead-lettered. A `429` is a rate limit (the client pauses, the message is
    /// retried) whether it is listed or not, and a `2xx` may not be listed. By default `408` and
    /// `500` to `599`.
    pub retryable_statuses: Vec<u16>,
}

impl Default for ChameleonConfig {
    fn default() -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            account_secret: Secret::default(),
            requests_per_minute: 60,
            max_in_flight: 2,
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
            retryable_statuses: StatusSet::default().codes(),
        }
    }
}

impl ChameleonConfig {
    /// Checks every field and returns the base URL without a trailing slash.
    pub(crate) fn validate(&self) -> Result<String, ChameleonError> {
        let base = self.api_url.trim_end_matches('/');
        // The URL is never echoed: a misplaced secret in it must not reach a log line.
        let url = Url::parse(base)
            .map_err(|e| ChameleonError::Config(format!("api_url is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(config("api_url must be an http or https URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config("api_url must not carry a query or fragment"));
        }
        if self.account_secret.is_empty() {
            return Err(config("account_secret is empty"));
        }
        if self.requests_per_minute == 0 {
            return Err(config("requests_per_minute must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(config("max_in_flight must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(config("timeout must be longer than zero"));
        }
        self.retryable_set()?;
        Ok(base.to_owned())
    }

    /// `retryable_statuses` as a set, refusing a code that is not a status or is a `2xx`.
    pub(crate) fn retryable_set(&self) -> Result<StatusSet, ChameleonError> {
        StatusSet::new(self.retryable_statuses.iter().copied())
            .map_err(|e| ChameleonError::Config(format!("retryable_statuses: {e}")))
    }
}

fn config(message: &str) -> ChameleonError {
    ChameleonError::Config(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ChameleonConfig {
        ChameleonConfig {
            account_secret: Secret::new("s3cret"),
            ..ChameleonConfig::default()
        }
    }

    #[test]
    fn defaults_follow_chameleons_documented_limits() {
        let config = ChameleonConfig::default();
        assert_eq!(config.api_url, "https://api.chameleon.io");
        assert_eq!(config.requests_per_minute, 60);
        assert_eq!(config.max_in_flight, 2);
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.max_wait, Duration::from_secs(300));
        let mut retryable = vec![408];
        retryable.extend(500..=599);
        assert_eq!(config.retryable_statuses, retryable);
    }

    #[test]
    fn a_2xx_among_the_retryable_statuses_is_refused_by_name() {
        let config = ChameleonConfig {
            retryable_statuses: vec![409, 200],
            ..valid()
        };
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err(
                "chameleon client misconfigured: retryable_statuses: 200 is a success status; \
                 a 2xx answer is never retried"
                    .to_owned()
            )
        );
    }

    #[test]
    fn keeps_a_path_prefix_and_drops_the_trailing_slash() {
        let config = ChameleonConfig {
            api_url: "http://127.0.0.1:9000/chameleon/".to_owned(),
            ..valid()
        };
        assert_eq!(
            config.validate().ok().as_deref(),
            Some("http://127.0.0.1:9000/chameleon")
        );
    }

    #[test]
    fn rejects_bad_values_without_echoing_the_url() {
        let cases = [
            ChameleonConfig {
                api_url: "ftp://example.org/hooks/s3cret".to_owned(),
                ..valid()
            },
            ChameleonConfig {
                api_url: "not a url s3cret".to_owned(),
                ..valid()
            },
            ChameleonConfig {
                api_url: "https://api.chameleon.io?account_secret=s3cret".to_owned(),
                ..valid()
            },
            ChameleonConfig {
                account_secret: Secret::default(),
                ..valid()
            },
            ChameleonConfig {
                requests_per_minute: 0,
                ..valid()
            },
            ChameleonConfig {
                max_in_flight: 0,
                ..valid()
            },
            ChameleonConfig {
                timeout: Duration::ZERO,
                ..valid()
            },
            ChameleonConfig {
                retryable_statuses: vec![503, 200],
                ..valid()
            },
            ChameleonConfig {
                retryable_statuses: vec![5000],
                ..valid()
            },
        ];
        for case in cases {
            match case.validate() {
                Err(ChameleonError::Config(message)) => assert!(!message.contains("s3cret")),
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }
}
