//! What Customer.io's answers mean: the failed operations of a v2 `207`, the message of an error
//! answer (v1 `{"meta":{"errors":[..]}}`, v2 `{"errors":[{reason, field, message}]}`, or whatever
//! text came back), and the wait a `Retry-After` header states. Pure functions over bytes and
//! headers.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

/// Customer.io's answer to a v2 batch: the operations it refused. Operations not listed were
/// accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchResult {
    /// At most one entry per operation, in index order.
    pub failed: Vec<OpError>,
}

/// One refused batch operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// Position of the operation in the batch that was sent, from 0.
    pub index: usize,
    /// Customer.io's short reason, for example `required` or `invalid`.
    pub reason: String,
    /// The field at fault, when Customer.io names one.
    pub field: Option<String>,
    pub message: String,
}

/// How much of an unstructured answer body goes into an error message.
const MESSAGE_CHARS: usize = 200;

/// Reads the `errors` of a `207` answer, keeping only indexes inside a batch of `ops`. Several
/// errors for one operation are merged into one entry. `None` when the answer is not JSON with
/// an `errors` list.
pub(crate) fn parse_partial_failure(body: &[u8], ops: usize) -> Option<BatchResult> {
    let answer = serde_json::from_slice::<Value>(body).ok()?;
    let listed = answer.get("errors")?.as_array()?;
    let mut failed: BTreeMap<usize, OpError> = BTreeMap::new();
    for entry in listed {
        let index = entry.get("batch_index").and_then(as_index);
        let Some(index) = index.filter(|i| *i < ops) else {
            tracing::warn!(
                upstream = "customerio",
                ops,
                "batch answer names an operation outside the batch; ignored"
            );
            continue;
        };
        let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
        let error = OpError {
            index,
            reason: text("reason").unwrap_or_default(),
            field: text("field").filter(|f| !f.is_empty()),
            message: text("message").unwrap_or_default(),
        };
        failed
            .entry(index)
            .and_modify(|known| {
                let more = describe_op(&error);
                if !more.is_empty() {
                    known.message = format!("{}; {more}", known.message);
                }
            })
            .or_insert(error);
    }
    Some(BatchResult {
        failed: failed.into_values().collect(),
    })
}

/// The message of an error answer: v1 `meta.errors` or `meta.error`, v2 `errors`, else the
/// start of the body, else the status's reason phrase.
pub(crate) fn error_message(body: &[u8], reason: &str) -> String {
    if let Ok(answer) = serde_json::from_slice::<Value>(body) {
        let message = structured_message(&answer);
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

/// The wait a `Retry-After` header states in seconds, uncapped.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    // Limitation: a Retry-After given as an HTTP date is not understood; the default wait applies.
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let seconds = text.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn structured_message(answer: &Value) -> String {
    let meta = answer.get("meta");
    let meta_errors = meta.and_then(|m| m.get("errors")).and_then(Value::as_array);
    let mut parts: Vec<String> = meta_errors
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect();
    if let Some(error) = meta.and_then(|m| m.get("error")).and_then(Value::as_str) {
        parts.push(error.to_owned());
    }
    for entry in answer
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match entry {
            Value::String(message) => parts.push(message.clone()),
            Value::Object(_) => {
                let text = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
                parts.push(describe_op(&OpError {
                    index: 0,
                    reason: text("reason").unwrap_or_default(),
                    field: text("field"),
                    message: text("message").unwrap_or_default(),
                }));
            }
            _ => {}
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

/// `field: message (reason)`, leaving out what is missing.
fn describe_op(error: &OpError) -> String {
    let mut text = String::new();
    if let Some(field) = error.field.as_deref().filter(|f| !f.is_empty()) {
        text.push_str(field);
        text.push_str(": ");
    }
    text.push_str(&error.message);
    if !error.reason.is_empty() {
        if error.message.is_empty() {
            text.push_str(&error.reason);
        } else {
            text.push_str(&format!(" ({})", error.reason));
        }
    }
    text
}

/// A non-negative integer, written as a number or a string.
fn as_index(value: &Value) -> Option<usize> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn reads_the_failed_operations_of_a_207() {
        let body = br#"{"errors":[
            {"batch_index":3,"reason":"invalid","field":"id","message":"must be a ULID"},
            {"batch_index":1,"reason":"required","field":"identifiers","message":"missing"},
            {"batch_index":1,"reason":"invalid","field":"name","message":"too long"},
            {"batch_index":9,"reason":"invalid","message":"outside"}]}"#;
        let result = parse_partial_failure(body, 4);
        assert_eq!(
            result.map(|r| r.failed),
            Some(vec![
                OpError {
                    index: 1,
                    reason: "required".to_owned(),
                    field: Some("identifiers".to_owned()),
                    message: "missing; name: too long (invalid)".to_owned()
                },
                OpError {
                    index: 3,
                    reason: "invalid".to_owned(),
                    field: Some("id".to_owned()),
                    message: "must be a ULID".to_owned()
                },
            ])
        );
    }

    #[test]
    fn a_207_without_an_error_list_is_not_understood() {
        assert_eq!(parse_partial_failure(b"", 2), None);
        assert_eq!(parse_partial_failure(b"{}", 2), None);
        assert_eq!(parse_partial_failure(b"multi-status", 2), None);
    }

    #[test]
    fn error_messages_come_from_either_api_version_or_the_body_start() {
        let v1 = br#"{"meta":{"errors":["event name is too long","data is too large"]}}"#;
        assert_eq!(
            error_message(v1, "Bad Request"),
            "event name is too long; data is too large"
        );

        let v2 = br#"{"errors":[{"reason":"invalid","field":"timestamp","message":"bad"}]}"#;
        assert_eq!(error_message(v2, "Bad Request"), "timestamp: bad (invalid)");

        let meta = br#"{"meta":{"error":"Unauthorized request"}}"#;
        assert_eq!(error_message(meta, "Unauthorized"), "Unauthorized request");

        let long = "y".repeat(1000);
        assert_eq!(error_message(long.as_bytes(), "Bad Request").len(), 200);
        assert_eq!(error_message(b"", "Unauthorized"), "Unauthorized");
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("30"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(30)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2026 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
