//! Guards that every request passes before a handler trusts its body: content type, nesting
//! depth, and the cap on requests handled at once. Body size and request time are enforced by
//! axum's body limit and tower-http's timeout, set up in [`crate::routes::router`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

/// Whether the request says its body is JSON. A missing content type is accepted, since some
/// senders omit it; anything else must be `application/json` or a `+json` type.
pub fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether JSON text nests arrays or objects deeper than `max`. Scans bytes without parsing, so
/// a hostile body cannot exhaust the stack; strings (and escapes in them) are skipped.
pub fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Answers `503` with `Retry-After` instead of queueing when too many requests are in progress,
/// so a flood cannot grow memory without bound.
pub async fn concurrency_cap(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("ccsync_receiver_overloaded_total").increment(1);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({"error": "too many requests in progress"})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn content_types() {
        let mut headers = HeaderMap::new();
        assert!(is_json_content_type(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_content_type(&headers), ok, "{value}");
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert!(!nesting_exceeds(br#"{"a":{"b":[1,2]}}"#, 3));
        assert!(nesting_exceeds(br#"{"a":{"b":[1,2]}}"#, 2));
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[\"{{{{"}"#, 1));
        let deep = "[".repeat(100_000);
        assert!(nesting_exceeds(deep.as_bytes(), 32));
    }
}
