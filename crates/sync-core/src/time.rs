//! Clock helpers: the daemon keeps instants as unix milliseconds and prints them as RFC 3339.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Unix seconds as RFC 3339 (UTC).
pub fn format_secs(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// An RFC 3339 instant as unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let ms = 1_733_140_805_123;
        assert_eq!(format_ms(ms), "2024-12-02T12:00:05.123Z");
        assert_eq!(parse_rfc3339_ms(&format_ms(ms)), Some(ms));
        assert_eq!(
            format_secs(1_733_140_800).as_deref(),
            Some("2024-12-02T12:00:00Z")
        );
    }
}
