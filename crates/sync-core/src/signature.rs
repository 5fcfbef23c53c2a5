//! Webhook signature verification (DESIGN §3): HMAC-SHA256 over the raw bytes, compared in
//! constant time against every configured key, with a timestamp tolerance.

use crate::secret::Secret;

/// Why a signature was refused. Every variant is answered `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    Missing,
    #[error("timestamp header missing or not unix seconds")]
    BadTimestamp,
    #[error("signature is not lowercase hex of the right length")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("signature does not match any configured key")]
    Mismatch,
}

/// Placeholder until the verification functions land.
pub fn verify_customerio(
    _keys: &[Secret],
    _timestamp: Option<&str>,
    _signature: Option<&str>,
    _body: &[u8],
    _now_secs: i64,
    _tolerance_secs: u64,
) -> Result<(), SignatureError> {
    Err(SignatureError::Missing)
}
