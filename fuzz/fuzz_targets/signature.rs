//! Fuzzes webhook signature verification (`sync_core::signature`).
//!
//! The input is four parts separated by the first three newlines: key, timestamp header,
//! signature header, body. The seed corpus holds the documented test vectors in that form. For
//! each input it asserts:
//! - `verify_customerio` and `verify_chameleon` never panic on the headers and body as given,
//!   present or missing, and accept only a signature that is the body's HMAC under the key;
//! - a body signed with the key verifies (also among rotated keys), and fails with `Mismatch`
//!   once one byte of the body, of the timestamp, or of the signature changes, or under another
//!   key; an authentic message outside the tolerance is `Stale`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::Secret;
use sync_core::signature::{
    SignatureError, sign_chameleon, sign_customerio, verify_chameleon, verify_customerio,
};

/// The default tolerance, in seconds (DESIGN §3).
const TOLERANCE: u64 = 300;

/// Used as "now" when the input's timestamp is not a usable time.
const FALLBACK_NOW: i64 = 1_733_140_805;

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LATEST_SECS: i64 = 253_402_300_799;

fuzz_target!(|input: &[u8]| {
    let mut parts = input.splitn(4, |byte| *byte == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let key = text();
    let timestamp = text();
    let signature = text();
    let body = parts.next().unwrap_or_default();

    let now = timestamp
        .parse::<i64>()
        .ok()
        .filter(|secs| (TOLERANCE as i64..=LATEST_SECS).contains(secs))
        .unwrap_or(FALLBACK_NOW);
    // A byte position and a non-zero mask taken from the input, for the one-byte changes.
    let position = input.iter().map(|b| usize::from(*b)).sum::<usize>();
    let mask = input.first().map_or(1, |b| b | 1);

    headers_as_given(&key, &timestamp, &signature, body, now);
    customerio_round_trip(&key, body, now, position, mask);
    chameleon_round_trip(&key, body, now, position, mask);
});

fn keys(key: &str) -> Vec<Secret> {
    vec![Secret::new("a-rotated-out-key"), Secret::new(key)]
}

fn headers_as_given(key: &str, timestamp: &str, signature: &str, body: &[u8], now: i64) {
    let keys = keys(key);
    for (ts, sig) in [
        (Some(timestamp), Some(signature)),
        (None, Some(signature)),
        (Some(timestamp), None),
        (None, None),
    ] {
        if verify_customerio(&keys, ts, sig, body, now, TOLERANCE).is_ok() {
            let expected = sign_customerio(key, timestamp, body);
            assert!(
                signature.eq_ignore_ascii_case(&expected),
                "customer.io accepted {signature:?}, the HMAC is {expected}"
            );
        }
    }

    for sig in [Some(signature), None] {
        if verify_chameleon(&keys, sig, body, now, TOLERANCE).is_ok() {
            let expected = sign_chameleon(key, body);
            assert!(
                signature.eq_ignore_ascii_case(&expected),
                "chameleon accepted {signature:?}, the HMAC is {expected}"
            );
        }
    }
}

fn customerio_round_trip(key: &str, body: &[u8], now: i64, position: usize, mask: u8) {
    let keys = keys(key);
    let timestamp = now.to_string();
    let signature = sign_customerio(key, &timestamp, body);
    assert_eq!(signature.len(), 64, "customer.io signature {signature:?}");
    let verify = |ts: &str, sig: &str, body: &[u8], now: i64| {
        verify_customerio(&keys, Some(ts), Some(sig), body, now, TOLERANCE)
    };

    assert_eq!(
        verify(&timestamp, &signature, body, now),
        Ok(()),
        "signed body refused"
    );
    assert_eq!(
        verify(&timestamp, &signature, body, now + TOLERANCE as i64 + 1),
        Err(SignatureError::Stale)
    );

    if !body.is_empty() {
        let changed = flip(body, position, mask);
        assert_eq!(
            verify(&timestamp, &signature, &changed, now),
            Err(SignatureError::Mismatch),
            "changed body accepted"
        );
    }

    // Another second is another message, even though both are within the tolerance.
    let next_second = (now + 1).to_string();
    assert_eq!(
        verify(&next_second, &signature, body, now),
        Err(SignatureError::Mismatch),
        "signature replayed under another timestamp"
    );

    let changed = change_hex_digit(&signature, position);
    assert_eq!(
        verify(&timestamp, &changed, body, now),
        Err(SignatureError::Mismatch)
    );

    let other_key = vec![Secret::new(format!("{key}-other"))];
    assert_eq!(
        verify_customerio(
            &other_key,
            Some(&timestamp),
            Some(&signature),
            body,
            now,
            TOLERANCE
        ),
        Err(SignatureError::Mismatch),
        "signature accepted under another key"
    );
}

fn chameleon_round_trip(key: &str, body: &[u8], now: i64, position: usize, mask: u8) {
    let keys = keys(key);

    // Chameleon's time travels inside the body, so the fuzzed bytes are wrapped in a webhook
    // whose `sent_at` is now.
    let sent_at = sync_core::time::format_ms(now * 1000);
    let payload = String::from_utf8_lossy(body);
    let Ok(webhook) = serde_json::to_vec(&serde_json::json!({
        "id": "fuzz",
        "kind": "tour.started",
        "sent_at": sent_at,
        "data": {"payload": payload},
    })) else {
        return;
    };
    let signature = sign_chameleon(key, &webhook);
    assert_eq!(signature.len(), 64, "chameleon signature {signature:?}");
    let verify =
        |sig: &str, body: &[u8], now: i64| verify_chameleon(&keys, Some(sig), body, now, TOLERANCE);

    assert_eq!(
        verify(&signature, &webhook, now),
        Ok(()),
        "signed webhook refused"
    );
    assert_eq!(
        verify(&signature, &webhook, now + TOLERANCE as i64 + 1),
        Err(SignatureError::Stale)
    );

    let changed = flip(&webhook, position, mask);
    assert_eq!(
        verify(&signature, &changed, now),
        Err(SignatureError::Mismatch),
        "changed webhook accepted"
    );

    let changed = change_hex_digit(&signature, position);
    assert_eq!(
        verify(&changed, &webhook, now),
        Err(SignatureError::Mismatch)
    );

    let other_key = vec![Secret::new(format!("{key}-other"))];
    assert_eq!(
        verify_chameleon(&other_key, Some(&signature), &webhook, now, TOLERANCE),
        Err(SignatureError::Mismatch),
        "webhook accepted under another key"
    );
}

/// `bytes` with the byte at `position` (wrapped to the length) XORed with a non-zero `mask`.
fn flip(bytes: &[u8], position: usize, mask: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    let at = position % changed.len();
    changed[at] ^= mask;
    changed
}

/// `signature` with one hex digit replaced by a different digit value.
fn change_hex_digit(signature: &str, position: usize) -> String {
    let at = position % signature.len();
    signature
        .char_indices()
        .map(|(i, c)| match (i == at, c) {
            (false, c) => c,
            (true, '0') => '1',
            (true, _) => '0',
        })
        .collect()
}
