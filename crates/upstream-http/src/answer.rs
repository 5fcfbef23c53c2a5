//! What both upstreams answer alike: waits given in seconds (in headers, in text, in JSON),
//! indexes written as numbers or strings, and the message of an error answer whose body is not
//! in a shape the client reads. Pure functions over bytes, headers and JSON values.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// How much of an unstructured answer body goes into an error message.
pub const MESSAGE_CHARS: usize = 200;

/// The message of an error answer: what `structured` reads from a JSON body when that is not
/// empty, else the start of the body with its whitespace collapsed (at most [`MESSAGE_CHARS`]
/// characters), else `reason`, the status's reason phrase.
pub fn error_message(
    body: &[u8],
    reason: &str,
    structured: impl FnOnce(&Value) -> String,
) -> String {
    if let Ok(answer) = serde_json::from_slice::<Value>(body) {
        let message = structured(&answer);
        if !message.is_empty() {
            return message;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return reason.to_owned();
    }
    text.chars().take(MESSAGE_CHARS).collect()
}

/// The wait stated by the first of the headers `names` (in that order) that holds a number of
/// seconds, uncapped.
pub fn header_wait(headers: &HeaderMap, names: &[&str]) -> Option<Duration> {
    // Limitation: a wait given as an HTTP date is not understood; the default wait applies.
    names
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok().and_then(seconds_in_text))
}

/// A non-negative number of seconds written as a JSON number or string.
pub fn seconds_in_json(value: &Value) -> Option<Duration> {
    match value {
        Value::Number(n) => n.as_f64().and_then(seconds),
        Value::String(s) => seconds_in_text(s),
        _ => None,
    }
}

/// A non-negative number of seconds written as text, fractions allowed: `30`, ` 2.5 `.
pub fn seconds_in_text(text: &str) -> Option<Duration> {
    text.trim().parse::<f64>().ok().and_then(seconds)
}

/// A non-negative integer written as a JSON number or string, as answers give item indexes.
pub fn json_index(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn seconds(value: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(value).ok()
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let entry = |(name, value): &(&'static str, &'static str)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        };
        pairs.iter().map(entry).collect()
    }

    fn nothing(_: &Value) -> String {
        String::new()
    }

    #[test]
    fn a_structured_message_wins_over_the_body() {
        let body = br#"{"error":"slow down"}"#;
        let read = |answer: &Value| {
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(error_message(body, "Bad Request", read), "slow down");
    }

    #[test]
    fn an_unread_body_is_collapsed_and_cut_else_the_reason_is_used() {
        let html = format!("<html>\n  <body>{}</body></html>", "x".repeat(400));
        let message = error_message(html.as_bytes(), "Service Unavailable", nothing);
        assert!(message.starts_with("<html> <body>xxx"), "{message}");
        assert_eq!(message.chars().count(), MESSAGE_CHARS);

        assert_eq!(error_message(b"", "Bad Gateway", nothing), "Bad Gateway");
        assert_eq!(
            error_message(b" \n\t", "Bad Gateway", nothing),
            "Bad Gateway"
        );
        // JSON that says nothing the client reads is shown as it came.
        assert_eq!(
            error_message(br#"{"code":404}"#, "Not Found", nothing),
            r#"{"code":404}"#
        );
        // Characters, not bytes, are counted, so a cut never splits one.
        let accents = "é".repeat(300);
        let message = error_message(accents.as_bytes(), "Bad Request", nothing);
        assert_eq!(message.chars().count(), MESSAGE_CHARS);
    }

    #[test]
    fn the_first_named_header_with_seconds_wins() {
        let names = ["x-ratelimit-wait", "x-retry-after", "retry-after"];
        let cases = [
            (vec![("x-ratelimit-wait", "12"), ("retry-after", "3")], 12.0),
            (vec![("x-retry-after", "19"), ("retry-after", "3")], 19.0),
            (vec![("retry-after", "7")], 7.0),
            (vec![("retry-after", " 2.5 ")], 2.5),
            // A header that holds no number of seconds gives way to the next one.
            (
                vec![("x-ratelimit-wait", "soon"), ("retry-after", "4")],
                4.0,
            ),
        ];
        for (pairs, expected) in cases {
            let wait = header_wait(&headers(&pairs), &names);
            assert_eq!(wait, Some(Duration::from_secs_f64(expected)), "{pairs:?}");
        }
    }

    #[test]
    fn no_usable_header_is_no_wait() {
        let names = ["retry-after"];
        assert_eq!(header_wait(&HeaderMap::new(), &names), None);
        let date = headers(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")]);
        assert_eq!(header_wait(&date, &names), None);
        assert_eq!(
            header_wait(&headers(&[("retry-after", "-3")]), &names),
            None
        );
        // Only the named headers count.
        assert_eq!(header_wait(&headers(&[("x-wait", "5")]), &names), None);
    }

    #[test]
    fn seconds_come_as_numbers_or_text_and_never_negative() {
        assert_eq!(seconds_in_json(&json!(12)), Some(Duration::from_secs(12)));
        assert_eq!(
            seconds_in_json(&json!("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(seconds_in_json(&json!(-3)), None);
        assert_eq!(seconds_in_json(&json!(null)), None);
        assert_eq!(seconds_in_text("abc"), None);
        assert_eq!(seconds_in_text("NaN"), None);
    }

    #[test]
    fn indexes_come_as_numbers_or_text() {
        assert_eq!(json_index(&json!(4)), Some(4));
        assert_eq!(json_index(&json!(" 1 ")), Some(1));
        assert_eq!(json_index(&json!(-1)), None);
        assert_eq!(json_index(&json!(2.5)), None);
        assert_eq!(json_index(&json!([1])), None);
    }
}
