//! The receiver's settings, already validated by the binary.

use std::time::Duration;

use sync_core::Secret;

/// What the receiver needs to know; the binary builds it from the configuration file.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Largest accepted request body; larger ones are answered `413`.
    pub max_body_bytes: usize,
    /// A request (body included) that takes longer is answered `408`.
    pub request_timeout: Duration,
    /// How long the receiver waits for the queue's confirmation before answering `503`; shorter
    /// than `request_timeout`, so a slow queue is reported as unavailable, not as a timeout.
    pub publish_timeout: Duration,
    /// Requests handled at once; more are answered `503` with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// JSON nested deeper than this is answered `400`.
    pub max_json_depth: usize,
    /// The path segment that authenticates Customer.io's requests.
    pub customerio_endpoint_token: Secret,
    /// Reporting webhook signing keys; empty means signatures are not checked.
    pub customerio_signing_keys: Vec<Secret>,
    pub customerio_signature_tolerance_secs: u64,
    /// Chameleon webhook secrets; empty disables the Chameleon route (`404`).
    pub chameleon_webhook_secrets: Vec<Secret>,
    pub chameleon_signature_tolerance_secs: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            max_concurrent_requests: 1024,
            max_json_depth: 32,
            customerio_endpoint_token: Secret::default(),
            customerio_signing_keys: Vec::new(),
            customerio_signature_tolerance_secs: 300,
            chameleon_webhook_secrets: Vec::new(),
            chameleon_signature_tolerance_secs: 300,
        }
    }
}
