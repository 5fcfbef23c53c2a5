//! What Chameleon's answers mean: the per-item errors of a `202` batch answer, the message of an
//! error answer (`{"code":..,"messages":[..]}`, or whatever text came back), and the wait a `429`
//! states in its body or headers. Pure functions over bytes and headers.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use upstream_http::answer::{header_wait, json_index, seconds_in_json};

/// Chameleon's answer to a batch: the items it refused. Items not listed were accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchAnswer {
    /// At most one entry per item, in index order.
    pub errors: Vec<ItemError>,
}

/// One refused batch item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemError {
    /// Position of the item in the batch that was sent, from 0.
    pub index: usize,
    /// The HTTP-like status Chameleon gives the item (`422` when it gives none).
    pub code: u16,
    pub message: String,
}

/// The wait assumed for a `max_concurrent` rejection, which states a limit rather than a wait.
pub const CONCURRENCY_WAIT: Duration = Duration::from_secs(4);

/// Reads the `errors` of a batch answer, keeping only indexes inside a batch of `items`.
/// Several errors for one item are merged into one entry.
pub(crate) fn parse_batch_answer(body: &[u8], items: usize) -> BatchAnswer {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        if !body.is_empty() {
            tracing::warn!(
                upstream = "chameleon",
                "batch answer is not json; no item errors read"
            );
        }
        return BatchAnswer::default();
    };
    let listed = answer.get("errors").and_then(Value::as_array);
    if listed.is_none() && answer.get("errors").is_some_and(|errors| !errors.is_null()) {
        tracing::warn!(
            upstream = "chameleon",
            items,
            "batch answer's errors is not a list; no item errors read, every item counts as taken"
        );
    }
    let mut errors: BTreeMap<usize, ItemError> = BTreeMap::new();
    for entry in listed.into_iter().flatten() {
        let index = entry.get("index").and_then(json_index);
        let Some(index) = index.filter(|i| *i < items) else {
            tracing::warn!(
                upstream = "chameleon",
                items,
                "batch answer names an item outside the batch; ignored"
            );
            continue;
        };
        let code = entry
            .get("code")
            .and_then(json_index)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(422);
        let message = entry_message(entry);
        errors
            .entry(index)
            .and_modify(|known| {
                if !message.is_empty() && known.message != message {
                    known.message = format!("{}; {message}", known.message);
                }
            })
            .or_insert(ItemError {
                index,
                code,
                message,
            });
    }
    BatchAnswer {
        errors: errors.into_values().collect(),
    }
}

/// The message of an error answer: Chameleon's `messages` joined, else the start of the body,
/// else the status's reason phrase.
pub(crate) fn error_message(body: &[u8], reason: &str) -> String {
    upstream_http::answer::error_message(body, reason, entry_message)
}

/// The wait a `429` states, uncapped: the body's `wait`, then the `X-Ratelimit-Wait`,
/// `X-Retry-After` and `Retry-After` headers (seconds), then [`CONCURRENCY_WAIT`] for a
/// `max_concurrent` rejection (a `limit` in the body or an `X-Ratelimit-Limit` header).
pub(crate) fn stated_wait(body: &[u8], headers: &HeaderMap) -> Option<Duration> {
    let answer = serde_json::from_slice::<Value>(body).ok();
    let in_body = |key: &str| answer.as_ref().and_then(|a| a.get(key));
    if let Some(wait) = in_body("wait").and_then(seconds_in_json) {
        return Some(wait);
    }

    let from_headers = header_wait(
        headers,
        &["x-ratelimit-wait", "x-retry-after", "retry-after"],
    );
    if from_headers.is_some() {
        return from_headers;
    }

    let concurrency = in_body("limit").is_some() || headers.contains_key("x-ratelimit-limit");
    concurrency.then_some(CONCURRENCY_WAIT)
}

/// `message`, or every string of `messages` joined with `; `.
fn entry_message(entry: &Value) -> String {
    if let Some(message) = entry.get("message").and_then(Value::as_str) {
        return message.to_owned();
    }
    match entry.get("messages") {
        Some(Value::Array(messages)) => messages
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; "),
        Some(Value::String(message)) => message.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn reads_item_errors_in_index_order() {
        let body = br#"{"batch":{"id":"b1"},"errors":[
            {"code":422,"index":4,"message":"no identifier found"},
            {"code":400,"index":"1","messages":["bad value"]}]}"#;
        let answer = parse_batch_answer(body, 5);
        assert_eq!(
            answer.errors,
            vec![
                ItemError {
                    index: 1,
                    code: 400,
                    message: "bad value".to_owned()
                },
                ItemError {
                    index: 4,
                    code: 422,
                    message: "no identifier found".to_owned()
                },
            ]
        );
    }

    #[test]
    fn merges_repeated_indexes_and_drops_unknown_ones() {
        let body = br#"{"errors":[{"index":0,"message":"a"},{"index":0,"message":"b"},
            {"index":7,"message":"outside"},{"message":"no index"}]}"#;
        let answer = parse_batch_answer(body, 2);
        assert_eq!(answer.errors.len(), 1);
        assert_eq!(answer.errors[0].message, "a; b");
        assert_eq!(answer.errors[0].code, 422);
    }

    #[test]
    fn an_answer_without_errors_accepts_every_item() {
        assert_eq!(
            parse_batch_answer(br#"{"batch":{"id":"b1"}}"#, 3),
            BatchAnswer::default()
        );
        assert_eq!(parse_batch_answer(b"", 3), BatchAnswer::default());
        assert_eq!(parse_batch_answer(b"accepted", 3), BatchAnswer::default());
    }

    #[test]
    fn error_messages_come_from_messages_or_the_body_start() {
        let json = br#"{"code":422,"messages":["no identifier found","uid is blank"]}"#;
        assert_eq!(
            error_message(json, "Unprocessable Entity"),
            "no identifier found; uid is blank"
        );

        let html = format!("<html>\n<body>{}</body></html>", "x".repeat(400));
        let message = error_message(html.as_bytes(), "Service Unavailable");
        assert!(message.starts_with("<html> <body>xxx"));
        assert_eq!(message.chars().count(), 200);

        assert_eq!(error_message(b"", "Bad Gateway"), "Bad Gateway");
        assert_eq!(
            error_message(br#"{"code":404}"#, "Not Found"),
            r#"{"code":404}"#
        );
    }

    #[test]
    fn the_body_wait_comes_first() {
        let body = br#"{"code":429,"messages":["Rate Limited"],"wait":12}"#;
        let wait = stated_wait(body, &headers(&[("x-retry-after", "19")]));
        assert_eq!(wait, Some(Duration::from_secs(12)));
    }

    #[test]
    fn each_wait_header_is_read_in_order() {
        let cases = [
            (vec![("x-ratelimit-wait", "12"), ("retry-after", "3")], 12.0),
            (vec![("x-retry-after", "19")], 19.0),
            (vec![("retry-after", "7")], 7.0),
            (vec![("retry-after", "2.5")], 2.5),
        ];
        for (pairs, expected) in cases {
            let wait = stated_wait(b"", &headers(&pairs));
            assert_eq!(wait, Some(Duration::from_secs_f64(expected)), "{pairs:?}");
        }
    }

    #[test]
    fn a_concurrency_limit_is_a_short_wait() {
        let body = br#"{"code":429,"messages":["Rate Limited"],"limit":4}"#;
        assert_eq!(stated_wait(body, &HeaderMap::new()), Some(CONCURRENCY_WAIT));
        let header = headers(&[("x-ratelimit-limit", "4")]);
        assert_eq!(stated_wait(b"", &header), Some(CONCURRENCY_WAIT));
    }

    #[test]
    fn no_usable_wait_is_none() {
        let odd = headers(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")]);
        assert_eq!(stated_wait(b"<html>busy</html>", &odd), None);
        assert_eq!(stated_wait(br#"{"wait":-3}"#, &HeaderMap::new()), None);
    }
}
