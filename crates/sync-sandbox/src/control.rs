//! The control routes under `/_sandbox`: read and clear the journal, arm and disarm faults, and
//! a health check. They need no credentials; the sandbox is meant to listen on loopback only.
//!
//! - `GET /_sandbox/requests`, optionally `?upstream=chameleon` or `?upstream=customerio`:
//!   `200` with a JSON array of [`Recorded`], in arrival order.
//! - `DELETE /_sandbox/requests`: `204`.
//! - `POST /_sandbox/faults` with a [`Fault`], for example
//!   `{"path_prefix":"/api/v2/batch","count":2,"kind":{"type":"status","status":503}}`:
//!   `201` with the fault.
//! - `GET /_sandbox/faults`: `200` with the armed faults, each with the requests it has left.
//! - `DELETE /_sandbox/faults`: `204`.
//! - `GET /_sandbox/healthz`: `200 {"status":"ok"}`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::fault::{Fault, FaultKind};
use crate::journal::{Recorded, Upstream};
use crate::sandbox::Sandbox;

pub(crate) fn router() -> Router<Sandbox> {
    Router::new()
        .route(
            "/_sandbox/requests",
            get(list_requests).delete(clear_requests),
        )
        .route(
            "/_sandbox/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/healthz", get(healthz))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestFilter {
    upstream: Option<Upstream>,
}

async fn list_requests(
    State(sandbox): State<Sandbox>,
    Query(filter): Query<RequestFilter>,
) -> Json<Vec<Recorded>> {
    let mut requests = sandbox.requests();
    if let Some(upstream) = filter.upstream {
        requests.retain(|request| request.upstream == upstream);
    }
    Json(requests)
}

async fn clear_requests(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.clear();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(sandbox): State<Sandbox>) -> Json<Vec<Fault>> {
    Json(sandbox.faults())
}

async fn add_fault(State(sandbox): State<Sandbox>, Json(fault): Json<Fault>) -> Response {
    if let FaultKind::Status { status, .. } = fault.kind
        && !(200..600).contains(&status)
    {
        let message = format!("status {status} cannot be answered: use 200 to 599");
        return (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response();
    }
    sandbox.inject(fault.clone());
    (StatusCode::CREATED, Json(fault)).into_response()
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.clear_faults();
    StatusCode::NO_CONTENT
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}
