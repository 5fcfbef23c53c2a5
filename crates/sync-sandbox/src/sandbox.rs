//! The sandbox itself: shared state, the router of both stand-ins, and the path every upstream
//! request takes (fault, route, method, credentials, rate limit, rules, journal, log line).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::SandboxConfig;
use crate::fault::{Fault, FaultKind, FaultTable};
use crate::journal::{Journal, Recorded, Upstream};
use crate::rate::FixedWindow;
use crate::reply::Reply;
use crate::request::{MAX_READ_BYTES, recorded_body};
use crate::{chameleon, control, customerio};

/// Local stand-ins for the Chameleon and Customer.io APIs. Clones share one state: the journal,
/// the armed faults and the rate windows.
#[derive(Clone, Debug)]
pub struct Sandbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: SandboxConfig,
    /// The whole `Authorization` value the Customer.io credentials make.
    customerio_authorization: String,
    journal: Journal,
    faults: FaultTable,
    chameleon_window: Option<FixedWindow>,
    customerio_window: Option<FixedWindow>,
    directory: chameleon::Directory,
}

/// A call one of the stand-ins serves.
#[derive(Clone, Debug)]
enum Call {
    Chameleon(chameleon::Call),
    Customerio(customerio::Call),
}

impl Call {
    fn method(&self) -> Method {
        match self {
            Self::Customerio(customerio::Call::Identify { .. }) => Method::PUT,
            Self::Chameleon(_) | Self::Customerio(_) => Method::POST,
        }
    }
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Self {
        let chameleon_window = config
            .chameleon_requests_per_minute
            .map(|limit| FixedWindow::new(limit, Duration::from_secs(60)));
        let customerio_window = config
            .customerio_requests_per_second
            .map(|limit| FixedWindow::new(limit, Duration::from_secs(1)));
        let customerio_authorization = customerio::expected_authorization(
            &config.customerio_site_id,
            &config.customerio_api_key,
        );
        Self {
            shared: Arc::new(Shared {
                config,
                customerio_authorization,
                journal: Journal::default(),
                faults: FaultTable::default(),
                chameleon_window,
                customerio_window,
                directory: chameleon::Directory::default(),
            }),
        }
    }

    /// Every route: both stand-ins and the `/_sandbox` control routes.
    pub fn router(&self) -> Router {
        use chameleon::Call as Ch;
        use customerio::Call as Cio;
        let chameleon = |call| fixed(Call::Chameleon(call));
        let customerio = |call| fixed(Call::Customerio(call));

        Router::new()
            .route("/v3/observe/hooks/profiles", chameleon(Ch::Profile))
            .route(
                "/v3/observe/hooks/profiles/batch",
                chameleon(Ch::ProfileBatch),
            )
            .route("/v3/observe/hooks/companies", chameleon(Ch::Company))
            .route(
                "/v3/observe/hooks/companies/batch",
                chameleon(Ch::CompanyBatch),
            )
            .route("/v3/observe/hooks/events", chameleon(Ch::Event))
            .route("/api/v1/customers/{person}", any(identify))
            .route("/api/v1/customers/{person}/events", any(track_event))
            .route("/api/v2/batch", customerio(Cio::Batch))
            .route("/api/v2/entity", customerio(Cio::Entity))
            .fallback(unknown)
            .merge(control::router())
            .with_state(self.clone())
    }

    /// Serves the sandbox on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let address = listener.local_addr()?;
        info!(%address, "sandbox listening");
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts a sandbox on a free loopback port and serves it in the background, for tests.
    // Limitation: the background server stops only when its tokio runtime does.
    pub async fn spawn(config: SandboxConfig) -> std::io::Result<(Sandbox, SocketAddr)> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let sandbox = Sandbox::new(config);
        let server = sandbox.clone();
        tokio::spawn(async move {
            if let Err(error) = server.serve(listener, std::future::pending()).await {
                warn!(%address, %error, "sandbox stopped serving");
            }
        });
        Ok((sandbox, address))
    }

    /// Every upstream request received, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.journal.snapshot()
    }

    /// The requests to `upstream` that were answered 2xx, in arrival order.
    pub fn accepted(&self, upstream: Upstream) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.upstream == upstream && request.is_accepted())
            .collect()
    }

    /// Forgets the recorded requests (a request still in flight is recorded when answered).
    pub fn clear(&self) {
        self.shared.journal.clear();
    }

    /// Arms a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        info!(
            path_prefix = %fault.path_prefix,
            count = fault.count,
            kind = ?fault.kind,
            "sandbox fault armed"
        );
        self.shared.faults.inject(fault);
    }

    /// The faults still armed, with the number of requests each has left.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.faults.armed()
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Waits until `pred` holds for the recorded requests, or `timeout` passes; answers whether
    /// it held. The check runs again on every recorded request, so nothing is missed.
    pub async fn wait_for(&self, pred: impl Fn(&[Recorded]) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Listen before looking, so that a request recorded in between still wakes us.
            let changed = self.shared.journal.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();

            if pred(&self.requests()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return pred(&self.requests());
            }
        }
    }

    /// One upstream request, from arrival to the journal.
    async fn handle(self, call: Option<Call>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let path = self.masked(parts.uri.path());
        let Some(upstream) = Upstream::of_path(&path) else {
            info!(method = %parts.method, %path, status = 404, "sandbox has no such route");
            return axum::http::StatusCode::NOT_FOUND.into_response();
        };
        let seq = self.shared.journal.next_seq();
        let received_at_ms = sync_core::time::now_ms();

        let body = axum::body::to_bytes(body, MAX_READ_BYTES).await.ok();
        let reply = self
            .answer(upstream, call.as_ref(), &parts, &path, body.as_ref())
            .await;

        let recorded = recorded_body(body.as_deref());
        let summary = match &call {
            Some(Call::Chameleon(call)) => chameleon::summary(*call, &recorded),
            Some(Call::Customerio(call)) => customerio::summary(call, &recorded),
            None => String::from("unknown route"),
        };
        info!(
            %upstream,
            method = %parts.method,
            %path,
            status = reply.status,
            %summary,
            "sandbox answered"
        );
        self.shared.journal.push(Recorded {
            seq,
            upstream,
            method: parts.method.to_string(),
            path,
            status: reply.status,
            body: recorded,
            received_at_ms,
        });
        reply.into_response()
    }

    /// The answer to one upstream request, step by step as the real service would decide it.
    async fn answer(
        &self,
        upstream: Upstream,
        call: Option<&Call>,
        parts: &Parts,
        path: &str,
        body: Option<&Bytes>,
    ) -> Reply {
        // Faults first: an outage or a throttle answers before the request is looked at.
        match self.shared.faults.take(parts.uri.path()) {
            Some(FaultKind::Status {
                status,
                body,
                headers,
            }) => return Reply::verbatim(status, body, headers),
            Some(FaultKind::RateLimit { wait_secs }) => {
                return rate_limited(upstream, path, wait_secs);
            }
            Some(FaultKind::Delay { millis }) => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
            }
            None => {}
        }

        let Some(call) = call else {
            return match upstream {
                Upstream::Chameleon => chameleon::error(404, "Not found"),
                Upstream::Customerio => customerio::error(path, 404, "not_found", "Not found"),
            };
        };
        if parts.method != call.method() {
            let message = format!(
                "{} is not allowed here, use {}",
                parts.method,
                call.method()
            );
            return match upstream {
                Upstream::Chameleon => chameleon::error(405, message),
                Upstream::Customerio => customerio::error(path, 405, "invalid", &message),
            };
        }

        let authorized = match upstream {
            Upstream::Chameleon => {
                chameleon::authorized(&parts.headers, &self.shared.config.chameleon_account_secret)
            }
            Upstream::Customerio => {
                customerio::authorized(&parts.headers, &self.shared.customerio_authorization)
            }
        };
        if !authorized {
            return match upstream {
                Upstream::Chameleon => chameleon::forbidden(),
                Upstream::Customerio => customerio::unauthorized(path),
            };
        }

        // The providers count requests per account, so only authenticated ones use the budget.
        let window = match upstream {
            Upstream::Chameleon => self.shared.chameleon_window.as_ref(),
            Upstream::Customerio => self.shared.customerio_window.as_ref(),
        };
        if let Some(Err(wait_secs)) = window.map(|window| window.admit(Instant::now())) {
            return rate_limited(upstream, path, wait_secs);
        }

        let Some(body) = body else {
            return match upstream {
                Upstream::Chameleon => chameleon::too_large(),
                Upstream::Customerio => {
                    customerio::error(path, 400, "too_large", "request body could not be read")
                }
            };
        };
        match call {
            Call::Chameleon(call) => {
                chameleon::answer(*call, &parts.headers, body, &self.shared.directory)
            }
            Call::Customerio(call) => customerio::answer(call, path, &parts.headers, body),
        }
    }

    /// The path as it may be recorded and logged: a credential in it is masked.
    fn masked(&self, path: &str) -> String {
        let config = &self.shared.config;
        [&config.chameleon_account_secret, &config.customerio_api_key]
            .into_iter()
            .filter(|secret| !secret.is_empty())
            .fold(path.to_owned(), |path, secret| {
                path.replace(secret.as_str(), sync_core::secret::REDACTED)
            })
    }
}

/// A route whose call does not depend on the path.
fn fixed(call: Call) -> MethodRouter<Sandbox> {
    any(move |State(sandbox): State<Sandbox>, request: Request| {
        let call = call.clone();
        async move { sandbox.handle(Some(call), request).await }
    })
}

async fn identify(
    State(sandbox): State<Sandbox>,
    Path(person): Path<String>,
    request: Request,
) -> Response {
    let call = Call::Customerio(customerio::Call::Identify { person });
    sandbox.handle(Some(call), request).await
}

async fn track_event(
    State(sandbox): State<Sandbox>,
    Path(person): Path<String>,
    request: Request,
) -> Response {
    let call = Call::Customerio(customerio::Call::Event { person });
    sandbox.handle(Some(call), request).await
}

async fn unknown(State(sandbox): State<Sandbox>, request: Request) -> Response {
    sandbox.handle(None, request).await
}

fn rate_limited(upstream: Upstream, path: &str, wait_secs: u64) -> Reply {
    match upstream {
        Upstream::Chameleon => chameleon::rate_limited(wait_secs),
        Upstream::Customerio => customerio::rate_limited(path, wait_secs),
    }
}
