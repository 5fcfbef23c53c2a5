//! What the sandbox expects from its clients: the credentials each stand-in checks and the rate
//! limits it emulates.

use std::fmt;

use serde::Deserialize;

/// The credentials and limits of one sandbox. The credentials are plain strings because the
/// sandbox is a test double; `Debug` still hides them so that a logged configuration never
/// shows them.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The `X-Account-Secret` header every Chameleon call must carry.
    pub chameleon_account_secret: String,
    /// The Customer.io Site ID, the user half of the Track API's HTTP Basic auth.
    pub customerio_site_id: String,
    /// The Customer.io Track API key, the password half of the HTTP Basic auth.
    pub customerio_api_key: String,
    /// Emulate Chameleon's per-account limit: past this many requests in a fixed one-minute
    /// window, answer `429` with `wait` in the body and `X-Ratelimit-Wait`. `None`: no limit.
    pub chameleon_requests_per_minute: Option<u32>,
    /// Emulate a Track API limit: past this many requests in a fixed one-second window, answer
    /// `429` with `Retry-After`. `None`: no limit.
    pub customerio_requests_per_second: Option<u32>,
}

impl SandboxConfig {
    /// The credentials the quickstart demo uses, with no rate limits.
    pub const DEMO_ACCOUNT_SECRET: &'static str = "sandbox-account-secret";
    /// See [`SandboxConfig::DEMO_ACCOUNT_SECRET`].
    pub const DEMO_SITE_ID: &'static str = "sandbox-site-id";
    /// See [`SandboxConfig::DEMO_ACCOUNT_SECRET`].
    pub const DEMO_API_KEY: &'static str = "sandbox-api-key";
}

/// The demo credentials ([`SandboxConfig::DEMO_ACCOUNT_SECRET`] and friends), no rate limits.
impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            chameleon_account_secret: Self::DEMO_ACCOUNT_SECRET.to_owned(),
            customerio_site_id: Self::DEMO_SITE_ID.to_owned(),
            customerio_api_key: Self::DEMO_API_KEY.to_owned(),
            chameleon_requests_per_minute: None,
            customerio_requests_per_second: None,
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("chameleon_account_secret", &sync_core::secret::REDACTED)
            .field("customerio_site_id", &self.customerio_site_id)
            .field("customerio_api_key", &sync_core::secret::REDACTED)
            .field(
                "chameleon_requests_per_minute",
                &self.chameleon_requests_per_minute,
            )
            .field(
                "customerio_requests_per_second",
                &self.customerio_requests_per_second,
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_credentials() {
        let config = SandboxConfig {
            chameleon_account_secret: "acct-s3cret".into(),
            customerio_api_key: "track-k3y".into(),
            ..SandboxConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("acct-s3cret"), "{printed}");
        assert!(!printed.contains("track-k3y"), "{printed}");
        assert!(printed.contains("sandbox-site-id"), "{printed}");
    }
}
