//! Guards that every request passes before a handler trusts its body: content type, nesting
//! depth, a declared body size over the limit, and the cap on requests handled at once; and the
//! JSON body of the error answers made outside the handlers. Body size while reading and request
//! time are enforced by axum's body limit and tower-http's timeout, set up in
//! [`crate::routes::router`].

use std::sync::Arc;
use std::time::Duration;

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

/// The limits the framework enforces, for the answers that name them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// Answers `413` at once when the declared `Content-Length` is over the limit, rather than after
/// reading (or waiting for) a body that cannot be accepted.
pub async fn declared_size(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limits.max_body_bytes as u64 => too_large(limits),
        _ => next.run(request).await,
    }
}

fn too_large(limits: Limits) -> Response {
    error(StatusCode::PAYLOAD_TOO_LARGE, too_large_problem(limits))
}

fn too_large_problem(limits: Limits) -> String {
    format!(
        "body is larger than server.max_body_bytes ({} bytes)",
        limits.max_body_bytes
    )
}

fn error(status: StatusCode, problem: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": problem }))).into_response()
}

/// Error answers made outside the handlers (a body over the limit found while reading it, a
/// request that took too long, a method a route does not take) get the same JSON
/// `{"error": ...}` body as the handlers' own, instead of plain text or nothing.
pub async fn json_errors(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        return response;
    }
    // Headers such as `Allow` on a 405 stay; only the body and its type change.
    let (mut parts, body) = response.into_parts();
    let problem = match status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large_problem(limits),
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request took longer than server.request_timeout ({} ms)",
            limits.request_timeout.as_millis()
        ),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        other => {
            // Framework rejections are short plain text; keep what they say.
            let text = axum::body::to_bytes(body, 4096)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
                .unwrap_or_default();
            if text.is_empty() {
                other
                    .canonical_reason()
                    .unwrap_or("request refused")
                    .to_lowercase()
            } else {
                text
            }
        }
    };
    let json = serde_json::json!({ "error": problem }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(json))
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
