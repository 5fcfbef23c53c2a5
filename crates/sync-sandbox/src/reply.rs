//! An answer of a stand-in before it becomes an HTTP response: status, extra headers and a JSON
//! (or, for injected faults, verbatim) body.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tracing::warn;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: ReplyBody,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ReplyBody {
    Json(Value),
    /// Sent as is, as `text/plain` unless a header names another content type.
    Verbatim(String),
}

impl Reply {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: ReplyBody::Json(body),
        }
    }

    pub(crate) fn verbatim(status: u16, body: String, headers: Vec<(String, String)>) -> Self {
        Self {
            status,
            headers,
            body: ReplyBody::Verbatim(body),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.to_owned(), value.to_string()));
        self
    }

    /// The JSON body, when there is one (for tests of the answer rules).
    #[cfg(test)]
    pub(crate) fn json_body(&self) -> &Value {
        match &self.body {
            ReplyBody::Json(value) => value,
            ReplyBody::Verbatim(_) => &Value::Null,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status)
            .ok()
            .filter(|status| (200..600).contains(&status.as_u16()))
            .unwrap_or_else(|| {
                warn!(
                    status = self.status,
                    "sandbox cannot answer this status, answering 500"
                );
                StatusCode::INTERNAL_SERVER_ERROR
            });

        let mut response = match self.body {
            ReplyBody::Json(value) => (status, axum::Json(value)).into_response(),
            ReplyBody::Verbatim(text) => (status, text).into_response(),
        };

        // Fault headers come from a test or an operator: skip the ones HTTP cannot carry.
        for (name, value) in self.headers {
            match (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                (Ok(name), Ok(value)) => {
                    response.headers_mut().insert(name, value);
                }
                _ => warn!(header = %name, "sandbox skipped a header that is not valid http"),
            }
        }
        response
    }
}
