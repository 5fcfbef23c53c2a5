//! What the stand-ins need from a raw request before their own rules apply: a JSON object body
//! sent as JSON, and a recordable copy of whatever arrived.

use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// Bodies larger than this are read no further (comfortably above every upstream limit).
pub(crate) const MAX_READ_BYTES: usize = 32 * 1024 * 1024;

/// Bodies larger than this are recorded as a note of their size rather than parsed.
const MAX_RECORDED_BYTES: usize = 16_000_000;

/// The body as a JSON object, or the message of a `400`. Both providers parse JSON only when
/// it is declared, so a missing `Content-Type: application/json` is refused too.
pub(crate) fn json_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, String> {
    let declared_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !declared_json {
        return Err("content-type must be application/json".to_owned());
    }

    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("body must be a JSON object".to_owned()),
        Err(error) => Err(format!("body is not valid JSON: {error}")),
    }
}

/// The body as the journal keeps it: JSON when it parses, else text; `null` when empty.
pub(crate) fn recorded_body(body: Option<&[u8]>) -> Value {
    match body {
        None => Value::String(format!(
            "[body not recorded: it could not be read within {MAX_READ_BYTES} bytes]"
        )),
        Some([]) => Value::Null,
        Some(body) if body.len() > MAX_RECORDED_BYTES => Value::String(format!(
            "[body of {} bytes not recorded: over {MAX_RECORDED_BYTES} bytes]",
            body.len()
        )),
        Some(body) => serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        headers
    }

    #[test]
    fn only_declared_json_objects_pass() {
        let json = headers("application/json; charset=utf-8");
        assert!(json_object(&json, br#"{"uid":"u1"}"#).is_ok());
        assert!(json_object(&json, b"[1]").is_err());
        assert!(json_object(&json, b"uid=u1").is_err());
        assert!(json_object(&headers("text/plain"), br#"{"uid":"u1"}"#).is_err());
        assert!(json_object(&HeaderMap::new(), br#"{"uid":"u1"}"#).is_err());
    }

    #[test]
    fn bodies_are_recorded_as_json_text_or_null() {
        assert_eq!(
            recorded_body(Some(br#"{"a":1}"#)),
            serde_json::json!({"a": 1})
        );
        assert_eq!(recorded_body(Some(b"a=1")), Value::String("a=1".into()));
        assert_eq!(recorded_body(Some(b"")), Value::Null);
        assert!(recorded_body(None).is_string());
    }
}
