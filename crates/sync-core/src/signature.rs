//! Webhook signature verification (DESIGN §3): HMAC-SHA256 over the raw bytes, compared in
//! constant time against every configured key, with a timestamp tolerance.
//!
//! Both providers send the signature as 64 hex digits with no prefix. They send lowercase; this
//! module also accepts uppercase digits, because the case carries no information and refusing it
//! would only turn a proxy that rewrites headers into an outage. Anything else (another length,
//! a `sha256=` prefix, surrounding spaces) is [`SignatureError::Malformed`].
//!
//! The checks run in a fixed order: presence, shape, the HMAC against every key, then the
//! timestamp. Checking the HMAC before the time means [`SignatureError::Stale`] always describes
//! an authentic message that is too old or too far ahead (a replay or a skewed clock), which is
//! what an operator needs to know when reading the logs.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Length of a SHA-256 digest in bytes.
const DIGEST_LEN: usize = 32;

/// Why a signature was refused. Every variant is answered `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    Missing,
    #[error("timestamp missing or unreadable")]
    BadTimestamp,
    #[error("signature is not 64 hex digits")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("signature does not match any configured key")]
    Mismatch,
}

/// The `X-CIO-Signature` value for a body: hex HMAC-SHA256 keyed with `key` over
/// `v0:{timestamp}:{body}`.
pub fn sign_customerio(key: &str, timestamp: &str, body: &[u8]) -> String {
    customerio_mac(key.as_bytes(), timestamp, body)
        .map(hex::encode)
        .unwrap_or_default()
}

/// The `X-Chameleon-Signature` value for a body: hex HMAC-SHA256 keyed with `secret` over the
/// body.
pub fn sign_chameleon(secret: &str, body: &[u8]) -> String {
    chameleon_mac(secret.as_bytes(), body)
        .map(hex::encode)
        .unwrap_or_default()
}

/// Check a Customer.io reporting webhook: `timestamp` is the `X-CIO-Timestamp` header as received
/// (unix seconds), `signature` the `X-CIO-Signature` header. Any one of `keys` matching is enough.
/// A timestamp more than `tolerance_secs` away from `now_secs`, in either direction, is stale.
///
/// With no keys at all nothing can match, so the answer is [`SignatureError::Mismatch`]; the
/// receiver decides beforehand whether signatures are checked.
pub fn verify_customerio(
    keys: &[Secret],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let timestamp = timestamp.ok_or(SignatureError::BadTimestamp)?;
    let sent_secs = parse_unix_secs(timestamp).ok_or(SignatureError::BadTimestamp)?;
    let expected = decode_signature(signature)?;

    let matched = any_key_matches(keys, &expected, |key| customerio_mac(key, timestamp, body));
    if !matched {
        return Err(SignatureError::Mismatch);
    }

    let skew_ms = i128::from(now_secs) * 1000 - i128::from(sent_secs) * 1000;
    within_tolerance(skew_ms, tolerance_secs)
}

/// Check a Chameleon outgoing webhook: `signature` is the `X-Chameleon-Signature` header. Any one
/// of `secrets` matching is enough. The body's `sent_at` (RFC 3339) more than `tolerance_secs`
/// away from `now_secs`, in either direction, is stale; a body without a readable `sent_at` is
/// [`SignatureError::BadTimestamp`].
pub fn verify_chameleon(
    secrets: &[Secret],
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let expected = decode_signature(signature)?;

    let matched = any_key_matches(secrets, &expected, |secret| chameleon_mac(secret, body));
    if !matched {
        return Err(SignatureError::Mismatch);
    }

    // Only the one field is read; the body itself stays as it came.
    let sent_ms = body_sent_at_ms(body).ok_or(SignatureError::BadTimestamp)?;
    let skew_ms = i128::from(now_secs) * 1000 - i128::from(sent_ms);
    within_tolerance(skew_ms, tolerance_secs)
}

/// `None` only if the key were refused, which HMAC never does (it hashes long keys first).
fn customerio_mac(key: &[u8], timestamp: &str, body: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// `None` only if the key were refused, which HMAC never does (it hashes long keys first).
fn chameleon_mac(secret: &[u8], body: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// Compare `expected` with the MAC under every key, without stopping at the first match, so the
/// time taken says nothing about which key matched or how many bytes agreed.
fn any_key_matches(
    keys: &[Secret],
    expected: &[u8; DIGEST_LEN],
    mac: impl Fn(&[u8]) -> Option<[u8; DIGEST_LEN]>,
) -> bool {
    let mut matched = Choice::from(0);
    for key in keys {
        if let Some(computed) = mac(key.expose().as_bytes()) {
            matched |= computed.ct_eq(expected);
        }
    }
    matched.into()
}

fn decode_signature(signature: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let mut digest = [0u8; DIGEST_LEN];
    hex::decode_to_slice(signature, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// Unix seconds written as plain ASCII digits, as Customer.io sends them.
fn parse_unix_secs(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn body_sent_at_ms(body: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct SentAt {
        sent_at: Option<String>,
    }
    let parsed: SentAt = serde_json::from_slice(body).ok()?;
    crate::time::parse_rfc3339_ms(parsed.sent_at.as_deref()?)
}

fn within_tolerance(skew_ms: i128, tolerance_secs: u64) -> Result<(), SignatureError> {
    if skew_ms.unsigned_abs() > u128::from(tolerance_secs) * 1000 {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIO_KEY: &str = "test-signing-key";
    const CIO_TS: &str = "1733140805";
    const CIO_NOW: i64 = 1_733_140_805;

    /// API-NOTES §1.5.
    const CIO_NOTES_BODY: &[u8] =
        br#"{"event_id":"01JD4M9X2Q8W7E5R3T1Y6V0J9A","object_type":"email","metric":"opened"}"#;
    const CIO_NOTES_SIG: &str = "0bcec49876eb05c0b015e89d5bb4299a4b478e276687cb804308520fe8dc6332";

    /// fixtures/README.md, inline vector.
    const CIO_INLINE_BODY: &[u8] = br#"{"event_id":"01JD4M9X2Q8W7E5R3T1Y6U0I9A","object_type":"email","metric":"opened","timestamp":1733140800,"data":{"identifiers":{"id":"u1"}}}"#;
    const CIO_INLINE_SIG: &str = "2e046830ecc5d7da4c68b66dbe4ba0725371b4af8412c3f48e9a125158f4ef10";

    /// fixtures/README.md, file vector.
    const CIO_FILE_BODY: &[u8] =
        include_bytes!("../../../examples/payloads/customerio/reporting-email-opened.json");
    const CIO_FILE_SIG: &str = "b132c10367b65b22270163abdae3e1fc6895720c0e4cec437f028554556f47d0";

    const CHAM_SECRET: &str = "test-webhook-secret";

    /// API-NOTES §5.1; `sent_at` is 2026-12-02T11:59:00Z.
    const CHAM_NOTES_BODY: &[u8] = br#"{"id":"6750a1b2c3d4e5f6a7b8cc00","kind":"ping","sent_at":"2026-12-02T11:59:00.000Z","data":{}}"#;
    const CHAM_NOTES_SIG: &str = "1f74e42e29ff21a1718e25a605ca0d1248c184d25da247c8c5e4610dffb311dd";
    const CHAM_NOTES_NOW: i64 = 1_796_212_740;

    /// fixtures/README.md, file vector; `sent_at` is 2026-12-02T12:00:05.120Z.
    const CHAM_FILE_BODY: &[u8] =
        include_bytes!("../../../examples/payloads/chameleon/tour-started.json");
    const CHAM_FILE_SIG: &str = "9561cbf8cf19b22579e96c3448b554827368a1873eb67ac24c19e9c9a4b31063";
    const CHAM_FILE_NOW: i64 = 1_796_212_805;

    fn keys(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| Secret::new(*v)).collect()
    }

    fn cio(
        keys_: &[&str],
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify_customerio(&keys(keys_), ts, sig, body, now, 300)
    }

    #[test]
    fn customerio_vectors_sign_as_documented() {
        assert_eq!(
            sign_customerio(CIO_KEY, CIO_TS, CIO_NOTES_BODY),
            CIO_NOTES_SIG
        );
        assert_eq!(
            sign_customerio(CIO_KEY, CIO_TS, CIO_INLINE_BODY),
            CIO_INLINE_SIG
        );
        assert_eq!(
            sign_customerio(CIO_KEY, CIO_TS, CIO_FILE_BODY),
            CIO_FILE_SIG
        );
    }

    #[test]
    fn customerio_vectors_verify() {
        for (body, sig) in [
            (CIO_NOTES_BODY, CIO_NOTES_SIG),
            (CIO_INLINE_BODY, CIO_INLINE_SIG),
            (CIO_FILE_BODY, CIO_FILE_SIG),
        ] {
            assert_eq!(
                cio(&[CIO_KEY], Some(CIO_TS), Some(sig), body, CIO_NOW),
                Ok(())
            );
        }
    }

    #[test]
    fn chameleon_vectors_sign_and_verify() {
        assert_eq!(sign_chameleon(CHAM_SECRET, CHAM_NOTES_BODY), CHAM_NOTES_SIG);
        assert_eq!(sign_chameleon(CHAM_SECRET, CHAM_FILE_BODY), CHAM_FILE_SIG);
        let secrets = keys(&[CHAM_SECRET]);
        assert_eq!(
            verify_chameleon(
                &secrets,
                Some(CHAM_NOTES_SIG),
                CHAM_NOTES_BODY,
                CHAM_NOTES_NOW,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify_chameleon(
                &secrets,
                Some(CHAM_FILE_SIG),
                CHAM_FILE_BODY,
                CHAM_FILE_NOW,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn the_signed_bytes_are_the_raw_body() {
        // The same JSON with other whitespace is a different message.
        let reformatted = br#"{"event_id": "01JD4M9X2Q8W7E5R3T1Y6V0J9A", "object_type": "email", "metric": "opened"}"#;
        assert_eq!(
            cio(
                &[CIO_KEY],
                Some(CIO_TS),
                Some(CIO_NOTES_SIG),
                reformatted,
                CIO_NOW
            ),
            Err(SignatureError::Mismatch)
        );
        let mut trimmed = CHAM_FILE_BODY.to_vec();
        trimmed.pop();
        assert_eq!(
            verify_chameleon(
                &keys(&[CHAM_SECRET]),
                Some(CHAM_FILE_SIG),
                &trimmed,
                CHAM_FILE_NOW,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_timestamp_is_part_of_the_customerio_signature() {
        assert_eq!(
            cio(
                &[CIO_KEY],
                Some("1733140806"),
                Some(CIO_NOTES_SIG),
                CIO_NOTES_BODY,
                CIO_NOW
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wrong_key_is_a_mismatch() {
        assert_eq!(
            cio(
                &["other-key"],
                Some(CIO_TS),
                Some(CIO_NOTES_SIG),
                CIO_NOTES_BODY,
                CIO_NOW
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_chameleon(
                &keys(&["nope"]),
                Some(CHAM_NOTES_SIG),
                CHAM_NOTES_BODY,
                CHAM_NOTES_NOW,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_keys_match_nothing() {
        assert_eq!(
            cio(
                &[],
                Some(CIO_TS),
                Some(CIO_NOTES_SIG),
                CIO_NOTES_BODY,
                CIO_NOW
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_chameleon(
                &[],
                Some(CHAM_NOTES_SIG),
                CHAM_NOTES_BODY,
                CHAM_NOTES_NOW,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_rotated_key_may_match() {
        for order in [["old-key", CIO_KEY], [CIO_KEY, "old-key"]] {
            assert_eq!(
                cio(
                    &order,
                    Some(CIO_TS),
                    Some(CIO_NOTES_SIG),
                    CIO_NOTES_BODY,
                    CIO_NOW
                ),
                Ok(())
            );
        }
        let secrets = keys(&["retired-secret", CHAM_SECRET]);
        assert_eq!(
            verify_chameleon(
                &secrets,
                Some(CHAM_FILE_SIG),
                CHAM_FILE_BODY,
                CHAM_FILE_NOW,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn customerio_timestamps_outside_the_tolerance_are_stale() {
        let sig = CIO_NOTES_SIG;
        let body = CIO_NOTES_BODY;
        assert_eq!(
            cio(&[CIO_KEY], Some(CIO_TS), Some(sig), body, CIO_NOW + 300),
            Ok(())
        );
        assert_eq!(
            cio(&[CIO_KEY], Some(CIO_TS), Some(sig), body, CIO_NOW - 300),
            Ok(())
        );
        assert_eq!(
            cio(&[CIO_KEY], Some(CIO_TS), Some(sig), body, CIO_NOW + 301),
            Err(SignatureError::Stale)
        );
        // A timestamp from the future is as suspect as an old one.
        assert_eq!(
            cio(&[CIO_KEY], Some(CIO_TS), Some(sig), body, CIO_NOW - 301),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn chameleon_sent_at_outside_the_tolerance_is_stale() {
        // sent_at carries milliseconds: 12:00:05.120.
        let check = |now, tolerance| {
            verify_chameleon(
                &keys(&[CHAM_SECRET]),
                Some(CHAM_FILE_SIG),
                CHAM_FILE_BODY,
                now,
                tolerance,
            )
        };
        assert_eq!(check(CHAM_FILE_NOW + 300, 300), Ok(()));
        assert_eq!(check(CHAM_FILE_NOW + 301, 300), Err(SignatureError::Stale));
        assert_eq!(check(CHAM_FILE_NOW - 299, 300), Ok(()));
        assert_eq!(check(CHAM_FILE_NOW - 300, 300), Err(SignatureError::Stale));
        assert_eq!(
            check(CHAM_FILE_NOW + 86_400, 300),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn chameleon_body_without_sent_at_has_a_bad_timestamp() {
        for body in [
            &br#"{"id":"x","kind":"ping","data":{}}"#[..],
            br#"{"id":"x","kind":"ping","sent_at":"yesterday"}"#,
            br#"{"id":"x","kind":"ping","sent_at":1796212740}"#,
            b"not json",
        ] {
            let sig = sign_chameleon(CHAM_SECRET, body);
            assert_eq!(
                verify_chameleon(&keys(&[CHAM_SECRET]), Some(&sig), body, CHAM_NOTES_NOW, 300),
                Err(SignatureError::BadTimestamp),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn missing_headers_are_refused() {
        assert_eq!(
            cio(&[CIO_KEY], Some(CIO_TS), None, CIO_NOTES_BODY, CIO_NOW),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            cio(
                &[CIO_KEY],
                None,
                Some(CIO_NOTES_SIG),
                CIO_NOTES_BODY,
                CIO_NOW
            ),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_chameleon(
                &keys(&[CHAM_SECRET]),
                None,
                CHAM_NOTES_BODY,
                CHAM_NOTES_NOW,
                300
            ),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn unreadable_customerio_timestamps_are_refused() {
        for ts in [
            "",
            "abc",
            "1733140805.5",
            "-1733140805",
            " 1733140805",
            "99999999999999999999",
        ] {
            let sig = sign_customerio(CIO_KEY, ts, CIO_NOTES_BODY);
            assert_eq!(
                cio(&[CIO_KEY], Some(ts), Some(&sig), CIO_NOTES_BODY, CIO_NOW),
                Err(SignatureError::BadTimestamp),
                "{ts:?}"
            );
        }
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let too_short = &CIO_NOTES_SIG[..62];
        let too_long = format!("{CIO_NOTES_SIG}00");
        let prefixed = format!("sha256={CIO_NOTES_SIG}");
        let spaced = format!(" {CIO_NOTES_SIG}");
        let not_hex = format!("zz{}", &CIO_NOTES_SIG[2..]);
        for sig in ["", too_short, &too_long, &prefixed, &spaced, &not_hex] {
            assert_eq!(
                cio(&[CIO_KEY], Some(CIO_TS), Some(sig), CIO_NOTES_BODY, CIO_NOW),
                Err(SignatureError::Malformed),
                "{sig:?}"
            );
            assert_eq!(
                verify_chameleon(
                    &keys(&[CHAM_SECRET]),
                    Some(sig),
                    CHAM_NOTES_BODY,
                    CHAM_NOTES_NOW,
                    300
                ),
                Err(SignatureError::Malformed),
                "{sig:?}"
            );
        }
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let upper = CIO_NOTES_SIG.to_ascii_uppercase();
        assert_eq!(
            cio(
                &[CIO_KEY],
                Some(CIO_TS),
                Some(&upper),
                CIO_NOTES_BODY,
                CIO_NOW
            ),
            Ok(())
        );
        let upper = CHAM_NOTES_SIG.to_ascii_uppercase();
        assert_eq!(
            verify_chameleon(
                &keys(&[CHAM_SECRET]),
                Some(&upper),
                CHAM_NOTES_BODY,
                CHAM_NOTES_NOW,
                300
            ),
            Ok(())
        );
    }

    #[test]
    fn a_bad_signature_is_a_mismatch_even_when_stale() {
        // The HMAC is checked first, so `Stale` is only ever said of an authentic message.
        assert_eq!(
            cio(
                &["other-key"],
                Some(CIO_TS),
                Some(CIO_NOTES_SIG),
                CIO_NOTES_BODY,
                CIO_NOW + 9_999
            ),
            Err(SignatureError::Mismatch)
        );
    }
}
