//! The Track client's configuration: which host (by region, or an explicit URL), the workspace
//! credentials, and the rate budget the client keeps to. The binary parses it; this crate only
//! validates it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync_core::Secret;
use upstream_http::StatusSet;
use url::Url;

use crate::error::TrackError;

/// The data centre a Customer.io workspace lives in; it picks the Track API host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://track.customer.io`.
    #[default]
    Us,
    /// `https://track-eu.customer.io`.
    Eu,
}

impl Region {
    /// The region's Track API base URL.
    pub fn track_url(self) -> &'static str {
        match self {
            Region::Us => "https://track.customer.io",
            Region::Eu => "https://track-eu.customer.io",
        }
    }
}

/// How to reach Customer.io's Track API and how hard to use it.
#[derive(Clone, Debug)]
pub struct TrackConfig {
    /// Base URL of the Track API; when set it wins over `region` (a local stand-in, a proxy). A
    /// path prefix is kept.
    pub track_url: Option<String>,
    /// The workspace's region, used when `track_url` is not set.
    pub region: Region,
    /// The workspace's Site ID: the Basic auth user.
    pub site_id: String,
    /// The workspace's Track API key: the Basic auth password.
    pub api_key: Secret,
    /// Requests per second for every clone of the client together, spaced evenly (no burst).
    pub requests_per_second: u32,
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

impl Default for TrackConfig {
    fn default() -> Self {
        Self {
            track_url: None,
            region: Region::Us,
            site_id: String::new(),
            api_key: Secret::default(),
            requests_per_second: 100,
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
            retryable_statuses: StatusSet::default().codes(),
        }
    }
}

impl TrackConfig {
    /// The Track API base URL in use, without a trailing slash: `track_url` when set, else the
    /// region's host.
    pub fn base_url(&self) -> &str {
        match &self.track_url {
            Some(url) => url.trim_end_matches('/'),
            None => self.region.track_url(),
        }
    }

    /// Checks every field and returns the base URL.
    pub(crate) fn validate(&self) -> Result<String, TrackError> {
        let base = self.base_url();
        // The URL is never echoed: credentials pasted into it must not reach a log line.
        let url = Url::parse(base)
            .map_err(|e| TrackError::Config(format!("track_url is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err(config("track_url must be an http or https URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(config("track_url must not carry a query or fragment"));
        }
        if self.site_id.trim().is_empty() {
            return Err(config("site_id is empty"));
        }
        if self.site_id.contains(':') {
            return Err(config("site_id must not contain ':'"));
        }
        if self.api_key.is_empty() {
            return Err(config("api_key is empty"));
        }
        if self.requests_per_second == 0 {
            return Err(config("requests_per_second must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(config("timeout must be longer than zero"));
        }
        self.retryable_set()?;
        Ok(base.to_owned())
    }

    /// `retryable_statuses` as a set, refusing a code that is not a status or is a `2xx`.
    pub(crate) fn retryable_set(&self) -> Result<StatusSet, TrackError> {
        StatusSet::new(self.retryable_statuses.iter().copied())
            .map_err(|e| TrackError::Config(format!("retryable_statuses: {e}")))
    }
}

fn config(message: &str) -> TrackError {
    TrackError::Config(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> TrackConfig {
        TrackConfig {
            site_id: "site-1".to_owned(),
            api_key: Secret::new("k3y"),
            ..TrackConfig::default()
        }
    }

    #[test]
    fn the_region_picks_the_host() {
        let us = TrackConfig {
            region: Region::Us,
            ..valid()
        };
        let eu = TrackConfig {
            region: Region::Eu,
            ..valid()
        };
        assert_eq!(us.base_url(), "https://track.customer.io");
        assert_eq!(eu.base_url(), "https://track-eu.customer.io");
        assert_eq!(
            eu.validate().ok().as_deref(),
            Some("https://track-eu.customer.io")
        );
    }

    #[test]
    fn an_explicit_track_url_wins_over_the_region() {
        let config = TrackConfig {
            track_url: Some("http://127.0.0.1:9100/cio/".to_owned()),
            region: Region::Eu,
            ..valid()
        };
        assert_eq!(config.base_url(), "http://127.0.0.1:9100/cio");
    }

    #[test]
    fn retryable_statuses_default_to_408_and_every_5xx_and_refuse_a_2xx() {
        let mut expected = vec![408];
        expected.extend(500..=599);
        assert_eq!(TrackConfig::default().retryable_statuses, expected);

        let config = TrackConfig {
            retryable_statuses: vec![409, 201],
            ..valid()
        };
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err(
                "customer.io client misconfigured: retryable_statuses: 201 is a success \
                 status; a 2xx answer is never retried"
                    .to_owned()
            )
        );
    }

    #[test]
    fn regions_read_as_lower_case_words() {
        let region: Result<Region, _> = serde_json::from_str("\"eu\"");
        assert_eq!(region.ok(), Some(Region::Eu));
        assert_eq!(Region::default(), Region::Us);
    }

    #[test]
    fn rejects_bad_values_without_echoing_the_url() {
        let cases = [
            TrackConfig {
                track_url: Some("https://site:k3y@?x".to_owned()),
                ..valid()
            },
            TrackConfig {
                track_url: Some("mailto:k3y@example.org".to_owned()),
                ..valid()
            },
            TrackConfig {
                track_url: Some("https://track.customer.io/?api_key=k3y".to_owned()),
                ..valid()
            },
            TrackConfig {
                site_id: " ".to_owned(),
                ..valid()
            },
            TrackConfig {
                site_id: "a:b".to_owned(),
                ..valid()
            },
            TrackConfig {
                api_key: Secret::default(),
                ..valid()
            },
            TrackConfig {
                requests_per_second: 0,
                ..valid()
            },
            TrackConfig {
                timeout: Duration::ZERO,
                ..valid()
            },
            TrackConfig {
                retryable_statuses: vec![502, 204],
                ..valid()
            },
            TrackConfig {
                retryable_statuses: vec![42],
                ..valid()
            },
        ];
        for case in cases {
            match case.validate() {
                Err(TrackError::Config(message)) => assert!(!message.contains("k3y")),
                other => panic!("expected a config error, got {other:?}"),
            }
        }
    }
}
