//! What Customer.io's answers mean: the failed operations of a v2 `207`, and the message of an
//! error answer (v1 `{"meta":{"errors":[..]}}`, v2 `{"errors":[{reason, field, message}]}`, or
//! whatever text came back). Pure functions over bytes. The wait a `429` states in `Retry-After`
//! is read by `upstream_http`.

use std::collections::BTreeMap;

use serde_json::Value;
use upstream_http::answer::json_index;

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

/// Reads the `errors` of a `207` answer, keeping only indexes inside a batch of `ops`. Several
/// errors for one operation are merged into one entry. `None` when the answer is not JSON with
/// an `errors` list.
pub(crate) fn parse_partial_failure(body: &[u8], ops: usize) -> Option<BatchResult> {
    let answer = serde_json::from_slice::<Value>(body).ok()?;
    let listed = answer.get("errors")?.as_array()?;
    let mut failed: BTreeMap<usize, OpError> = BTreeMap::new();
    for entry in listed {
        let index = entry.get("batch_index").and_then(json_index);
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
    upstream_http::answer::error_message(body, reason, structured_message)
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

#[cfg(test)]
mod tests {
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
}
