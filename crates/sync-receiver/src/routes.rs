//! Routes and answers (DESIGN §3). Each webhook handler follows the same steps: authenticate,
//! check the body's top-level shape, wrap the raw bytes in an envelope, publish with
//! confirmation, answer. Bad input gets a 4xx naming the problem; a queue that cannot take the
//! message gets `503`, so the sender retries.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use metrics::Counter;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use sync_core::signature::{self, SignatureError};
use sync_core::{Envelope, Readiness, Source};
use sync_queue::Queue;
use sync_queue::claims::{Claim, ClaimStore};
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::body::{self, NotAnObject};
use crate::config::ReceiverConfig;
use crate::limits;
use crate::redact::mask_path;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ReceiverConfig>,
    pub queue: Arc<dyn Queue>,
    pub readiness: Arc<Readiness>,
    /// Renders `/metrics`; `None` answers an empty page.
    pub metrics: Option<PrometheusHandle>,
    /// Seen provider event ids; `None` queues every copy.
    pub claims: Option<ClaimStore>,
}

/// What every handler shares: the caller's state and the counters of the hot path. Handlers
/// receive it behind one `Arc`, so a request clones one pointer rather than each of the state's.
struct Shared {
    state: AppState,
    counters: Counters,
}

/// The receiver's router: webhook routes behind the guards, and the operational routes.
///
/// The counters of accepted requests are registered here, with the metrics recorder installed
/// at that moment: install the recorder first.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let shared = Arc::new(Shared {
        state,
        counters: Counters::register(),
    });
    let permits = Arc::new(Semaphore::new(config.max_concurrent_requests.max(1)));
    let limits = limits::Limits {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
    };

    let webhooks = Router::new()
        .route("/v1/customerio/{token}/{kind}", post(customerio))
        .route("/v1/chameleon/webhooks", post(chameleon))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            limits,
            limits::declared_size,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            permits,
            limits::concurrency_cap,
        ));

    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .merge(webhooks)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(limits, limits::json_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %mask_path(request.uri().path()),
                    )
                })
                // A 503 from /readyz or a full queue is an answer, not a server fault; the
                // handlers log the cases operators need.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(shared)
}

// === webhook handlers ===

async fn customerio(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = &shared.state.config;
    // A path that does not even decode (invalid UTF-8) is an unknown token like any other.
    let Ok(Path((token, kind))) = path else {
        return not_found().await;
    };

    // Unknown tokens and unknown kinds get the same answer, so tokens cannot be probed.
    let expected = config.customerio_endpoint_token.expose().as_bytes();
    let token_ok = !expected.is_empty() && bool::from(token.as_bytes().ct_eq(expected));
    let source = match kind.as_str() {
        "reporting" => Source::CustomerioReporting,
        "profiles" => Source::CustomerioProfiles,
        "companies" => Source::CustomerioCompanies,
        "events" => Source::CustomerioEvents,
        _ => return not_found().await,
    };
    if !token_ok {
        count_request(source, StatusCode::NOT_FOUND);
        log_refusal(
            source,
            &"the endpoint token in the path is not customerio.endpoint_token",
        );
        return not_found().await;
    }

    if source == Source::CustomerioReporting && !config.customerio_signing_keys.is_empty() {
        let verified = signature::verify_customerio(
            &config.customerio_signing_keys,
            header_str(&headers, "x-cio-timestamp"),
            header_str(&headers, "x-cio-signature"),
            &body,
            now_secs(),
            config.customerio_signature_tolerance_secs,
        );
        if let Err(err) = verified {
            return unauthorized(source, &err, config.customerio_signature_tolerance_secs);
        }
    }

    // Only a reporting event carries its id in the body.
    let wanted: &[&str] = match source {
        Source::CustomerioReporting => &["event_id"],
        _ => &[],
    };
    let members = match parse_object(config, &headers, &body, wanted) {
        Ok(members) => members,
        Err(answer) => return answer.into_response(source),
    };

    // The provider's own id for the event, used to recognise its retries.
    let provider_event_id = match source {
        Source::CustomerioReporting => {
            sync_core::inbound::reporting_event_id(&Value::Object(members))
        }
        _ => header_str(&headers, "x-cio-idempotency-key")
            .or_else(|| header_str(&headers, "x-cio-delivery-id"))
            .map(str::to_owned),
    };
    enqueue(
        &shared,
        Envelope::new(source, body, provider_event_id),
        StatusCode::ACCEPTED,
    )
    .await
}

async fn chameleon(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &shared.state.config;
    let source = Source::ChameleonWebhook;

    // Without a secret nothing can be verified, so the route does not exist.
    if config.chameleon_webhook_secrets.is_empty() {
        return not_found().await;
    }

    let verified = signature::verify_chameleon(
        &config.chameleon_webhook_secrets,
        header_str(&headers, "x-chameleon-signature"),
        &body,
        now_secs(),
        config.chameleon_signature_tolerance_secs,
    );
    match verified {
        Ok(()) => {}
        // Signed with our secret, but `sent_at` cannot be read: a body of the wrong shape is a
        // 400 like on every route; an object without a readable `sent_at` stays a 401.
        Err(SignatureError::BadTimestamp) => {
            if let Err(answer) = parse_object(config, &headers, &body, &[]) {
                return answer.into_response(source);
            }
            return unauthorized(
                source,
                &SignatureError::BadTimestamp,
                config.chameleon_signature_tolerance_secs,
            );
        }
        Err(err) => return unauthorized(source, &err, config.chameleon_signature_tolerance_secs),
    }

    let value = match parse_object(config, &headers, &body, &["id", "kind"]) {
        Ok(members) => Value::Object(members),
        Err(answer) => return answer.into_response(source),
    };
    let Some(webhook_id) = sync_core::outbound::webhook_id(&value) else {
        return BadRequest::new("expected a Chameleon webhook with string `id` and `kind`")
            .into_response(source);
    };

    // A ping only checks the endpoint: answered, counted, not relayed.
    if value.get("kind").and_then(Value::as_str) == Some("ping") {
        metrics::counter!("ccsync_filtered_total", "source" => source.routing_key(), "reason" => "ping")
            .increment(1);
        count_request(source, StatusCode::OK);
        return (StatusCode::OK, Json(json!({"status": "pong"}))).into_response();
    }

    // Chameleon's documents disagree on whether 202 counts as success, so answer 200.
    enqueue(
        &shared,
        Envelope::new(source, body, Some(webhook_id)),
        StatusCode::OK,
    )
    .await
}

/// Claim the provider's event id, publish with confirmation, then answer `success`; a copy
/// already queued is answered `success` too, without queueing it again.
///
/// The claim and the publish run in a task of their own: if the request is abandoned (the
/// client gives up, or the request timeout answers first), they still finish, and the claim is
/// confirmed or released according to what really happened, never left claimed for a message
/// that is not queued.
async fn enqueue(shared: &Arc<Shared>, envelope: Envelope, success: StatusCode) -> Response {
    let source = envelope.source;
    let message_id = envelope.message_id.clone();
    let admission = tokio::spawn(admit(shared.clone(), envelope));

    // Answer 503 before the request timeout does, so the sender is told to retry.
    let publish_timeout = shared.state.config.publish_timeout;
    let answer = match tokio::time::timeout(publish_timeout, admission).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(join)) => Admission::Failed(sync_queue::QueueError::Other(join.to_string())),
        Err(_) => Admission::Failed(sync_queue::QueueError::Unavailable(
            "the queue did not confirm in time".to_owned(),
        )),
    };
    match answer {
        Admission::Queued => {
            shared.counters.queued(source, success);
            tracing::debug!(%message_id, source = %source, "message queued");
            let answer = Accepted {
                status: "queued",
                message_id: &message_id,
            };
            (success, Json(answer)).into_response()
        }
        Admission::Duplicate(first) => {
            shared.counters.duplicate(source, success);
            tracing::debug!(source = %source, message_id = %first, "duplicate of a queued message");
            let answer = Accepted {
                status: "duplicate",
                message_id: &first,
            };
            (success, Json(answer)).into_response()
        }
        Admission::InProgress(first) => {
            count_request(source, StatusCode::SERVICE_UNAVAILABLE);
            tracing::debug!(source = %source, message_id = %first, "a copy is being queued");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                Json(json!({
                    "error": "another copy of this event is being queued, retry later",
                    "message_id": first
                })),
            )
                .into_response()
        }
        Admission::Failed(err) => unavailable(source, &err),
    }
}

/// The answer to a request whose message is queued.
#[derive(Serialize)]
struct Accepted<'a> {
    status: &'static str,
    message_id: &'a str,
}

/// What became of a message the receiver tried to queue.
enum Admission {
    Queued,
    /// Already queued as this message id.
    Duplicate(String),
    /// Another copy, this message id, is being queued now.
    InProgress(String),
    Failed(sync_queue::QueueError),
}

/// Claim, publish, then confirm or release the claim. Runs to completion even when nobody
/// waits for the answer any more.
async fn admit(shared: Arc<Shared>, envelope: Envelope) -> Admission {
    let source = envelope.source;
    let claim_key = shared
        .state
        .claims
        .as_ref()
        .zip(envelope.provider_event_id.as_deref())
        .map(|(claims, id)| (claims, format!("{source}:{id}")));

    if let Some((claims, key)) = &claim_key {
        match claims.claim(key, &envelope.message_id).await {
            Ok(Claim::New) => {}
            Ok(Claim::Duplicate { message_id }) => return Admission::Duplicate(message_id),
            Ok(Claim::Pending { message_id }) => return Admission::InProgress(message_id),
            Err(err) => return Admission::Failed(err),
        }
    }

    let published = shared.state.queue.publish(&envelope).await;

    if let Some((claims, key)) = &claim_key {
        let settled = match &published {
            Ok(()) => claims.confirm(key, &envelope.message_id).await,
            // The provider will retry; its retry must be able to win the claim.
            Err(_) => claims.release(key, &envelope.message_id).await,
        };
        if let Err(err) = settled {
            tracing::warn!(source = %source, cause = %err, "cannot settle a claim");
        }
    }
    match published {
        Ok(()) => Admission::Queued,
        Err(err) => Admission::Failed(err),
    }
}

fn unavailable(source: Source, err: &sync_queue::QueueError) -> Response {
    count_request(source, StatusCode::SERVICE_UNAVAILABLE);
    tracing::warn!(source = %source, cause = %err, "queue did not take the message");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        Json(json!({"error": "queue unavailable, retry later"})),
    )
        .into_response()
}

// === operational routes ===

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let state = &shared.state;
    if let Err(not_ready) = state.readiness.check() {
        let reason = not_ready.to_string();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": reason})),
        )
            .into_response();
    }
    let check = tokio::time::timeout(Duration::from_secs(5), state.queue.check()).await;
    match check {
        Ok(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(err)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": err.to_string()})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": "queue check timed out"})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared
        .state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response()
}

// === answers ===

/// A body that is not JSON of the expected top-level shape.
struct BadRequest(Cow<'static, str>);

impl BadRequest {
    fn new(problem: impl Into<Cow<'static, str>>) -> Self {
        Self(problem.into())
    }

    fn into_response(self, source: Source) -> Response {
        count_request(source, StatusCode::BAD_REQUEST);
        tracing::debug!(source = %source, problem = %self.0, "bad request");
        (StatusCode::BAD_REQUEST, Json(json!({"error": self.0}))).into_response()
    }
}

fn unauthorized(source: Source, err: &SignatureError, tolerance_secs: u64) -> Response {
    count_request(source, StatusCode::UNAUTHORIZED);
    // Which timestamp, for a sender who has to fix it: a header for Customer.io, a body member
    // for Chameleon.
    let timestamp = match source {
        Source::ChameleonWebhook => "the body's sent_at",
        _ => "x-cio-timestamp",
    };
    let header = match source {
        Source::ChameleonWebhook => "x-chameleon-signature",
        _ => "x-cio-signature",
    };
    let problem = match err {
        SignatureError::Missing => format!("the {header} header is missing"),
        SignatureError::Malformed => format!("{header} is not 64 hex digits"),
        SignatureError::Stale => {
            format!("{timestamp} is more than {tolerance_secs} s away from the receiver's clock")
        }
        SignatureError::BadTimestamp => format!("{timestamp} is missing or unreadable"),
        other => other.to_string(),
    };
    log_refusal(source, &format_args!("signature refused: {problem}"));
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": format!("signature refused: {problem}")})),
    )
        .into_response()
}

/// The members named in `wanted` of a body that is one JSON object, or the reason it is not one.
fn parse_object(
    config: &ReceiverConfig,
    headers: &HeaderMap,
    body: &[u8],
    wanted: &[&str],
) -> Result<Map<String, Value>, BadRequest> {
    if !limits::is_json_content_type(headers) {
        return Err(BadRequest::new("content type must be application/json"));
    }
    if limits::nesting_exceeds(body, config.max_json_depth) {
        return Err(BadRequest::new("JSON nested too deeply"));
    }
    body::parse_object(body, wanted).map_err(|problem| match problem {
        NotAnObject::Invalid(why) => BadRequest::new(format!("body is not valid JSON: {why}")),
        NotAnObject::OtherType => BadRequest::new("body must be a JSON object"),
    })
}

/// The counters an accepted request updates, registered for every source.
struct Counters {
    by_source: Vec<SourceCounters>,
}

struct SourceCounters {
    source: Source,
    /// `ccsync_received_total`.
    received: Counter,
    /// `ccsync_duplicates_total`.
    duplicates: Counter,
    /// `ccsync_receiver_requests_total` with status 200.
    ok: Counter,
    /// `ccsync_receiver_requests_total` with status 202.
    accepted: Counter,
}

impl Counters {
    /// Register every source's counters with the installed recorder. `metrics::counter!` with
    /// labels builds and hashes its key on each call; a registered handle only adds.
    fn register() -> Self {
        let requests = |source: Source, status: StatusCode| {
            metrics::counter!(
                "ccsync_receiver_requests_total",
                "source" => source.routing_key(),
                "status" => status.as_str().to_owned()
            )
        };
        let by_source = Source::ALL
            .into_iter()
            .map(|source| SourceCounters {
                source,
                received: metrics::counter!("ccsync_received_total", "source" => source.routing_key()),
                duplicates: metrics::counter!("ccsync_duplicates_total", "source" => source.routing_key()),
                ok: requests(source, StatusCode::OK),
                accepted: requests(source, StatusCode::ACCEPTED),
            })
            .collect();
        Self { by_source }
    }

    /// Count a message queued from `source`, answered `status`.
    fn queued(&self, source: Source, status: StatusCode) {
        match self.of(source) {
            Some(counters) => {
                counters.received.increment(1);
                counters.answered(status);
            }
            None => {
                metrics::counter!("ccsync_received_total", "source" => source.routing_key())
                    .increment(1);
                count_request(source, status);
            }
        }
    }

    /// Count a copy of an already queued message from `source`, answered `status`.
    fn duplicate(&self, source: Source, status: StatusCode) {
        match self.of(source) {
            Some(counters) => {
                counters.duplicates.increment(1);
                counters.answered(status);
            }
            None => {
                metrics::counter!("ccsync_duplicates_total", "source" => source.routing_key())
                    .increment(1);
                count_request(source, status);
            }
        }
    }

    /// The registered counters of `source`; every source has them.
    fn of(&self, source: Source) -> Option<&SourceCounters> {
        self.by_source
            .iter()
            .find(|counters| counters.source == source)
    }
}

impl SourceCounters {
    fn answered(&self, status: StatusCode) {
        match status {
            StatusCode::OK => self.ok.increment(1),
            StatusCode::ACCEPTED => self.accepted.increment(1),
            _ => count_request(self.source, status),
        }
    }
}

/// A webhook refused for its token or signature. Each one is logged at debug, and one a minute
/// at warn, so that a wrong key or token shows in an info-level log while a flood of bad
/// requests cannot flood the log; `ccsync_receiver_requests_total` counts every one.
fn log_refusal(source: Source, cause: &dyn Display) {
    static LAST_WARNED_SECS: AtomicI64 = AtomicI64::new(0);
    let now = now_secs();
    let last = LAST_WARNED_SECS.load(Ordering::Relaxed);
    let warn = now.saturating_sub(last) >= 60
        && LAST_WARNED_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if warn {
        tracing::warn!(
            source = %source,
            %cause,
            "webhook refused (at most one such line a minute; the rest at debug)"
        );
    } else {
        tracing::debug!(source = %source, %cause, "webhook refused");
    }
}

fn count_request(source: Source, status: StatusCode) {
    metrics::counter!(
        "ccsync_receiver_requests_total",
        "source" => source.routing_key(),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_secs() -> i64 {
    sync_core::time::now_ms() / 1000
}
