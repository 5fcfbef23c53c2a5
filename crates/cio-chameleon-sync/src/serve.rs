//! The long-running roles and their lifecycle. `serve` runs all three in one process; `receive`,
//! `work` and `relay` run one each so they can be scaled apart. On SIGTERM or SIGINT the process
//! drains: `/readyz` turns 503, the receiver stops accepting and finishes its requests, the
//! consumers stop taking deliveries and settle what they hold, all within
//! `server.shutdown_grace`; whatever is still unsettled then goes back to the queue.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sync_core::Readiness;
use sync_receiver::AppState;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::settings::Settings;
use crate::wiring;

/// Which roles a process runs.
#[derive(Clone, Copy, Debug)]
pub struct Roles {
    pub receiver: bool,
    pub worker: bool,
    pub relay: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        receiver: true,
        worker: true,
        relay: true,
    };
    pub const RECEIVER: Roles = Roles {
        receiver: true,
        worker: false,
        relay: false,
    };
    pub const WORKER: Roles = Roles {
        receiver: false,
        worker: true,
        relay: false,
    };
    pub const RELAY: Roles = Roles {
        receiver: false,
        worker: false,
        relay: true,
    };
}

/// Run the chosen roles until a signal, then drain and return.
pub async fn run(
    settings: Settings,
    roles: Roles,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(wait_for_signal(shutdown.clone()));
    let result = run_until(settings, roles, metrics, shutdown).await;
    signals.abort();
    result
}

/// Run the chosen roles until `shutdown` fires (tests and the demo fire it themselves).
pub async fn run_until(
    settings: Settings,
    roles: Roles,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Missing credentials are all named at once, before the port or the queue is touched.
    let missing = settings.missing_for(roles);
    if !missing.is_empty() {
        anyhow::bail!("the configuration is incomplete: {}", missing.join("; "));
    }
    // Every role serves /healthz, /readyz and /metrics; only the receiver role takes webhooks.
    // The port comes first: a start that cannot listen touches nothing on the broker.
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen, or SYNC__SERVER__LISTEN)",
                settings.server.listen
            )
        })?;
    run_on(listener, settings, roles, metrics, shutdown).await
}

/// As [`run_until`], serving on a listener the caller already bound (`server.listen` is not
/// used).
pub async fn run_on(
    listener: tokio::net::TcpListener,
    settings: Settings,
    roles: Roles,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = wiring::queue(&settings).await?;
    let readiness = Arc::new(Readiness::new());
    let mut tasks = JoinSet::new();
    // Seen provider ids (receiver) and delivered events (worker) share one store.
    let claims = if roles.receiver || roles.worker {
        Some(wiring::claims(&settings)?)
    } else {
        None
    };

    if roles.worker {
        let client = wiring::chameleon_client(&settings)?;
        let config = wiring::worker_config(&settings);
        let run = sync_worker::run(
            queue.clone(),
            client,
            config,
            claims.clone(),
            readiness.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            run.await;
            Ok::<_, anyhow::Error>("worker")
        });
    }
    if roles.relay {
        let client = wiring::track_client(&settings)?;
        let config = wiring::relay_config(&settings);
        let run = sync_relay::run(
            queue.clone(),
            client,
            config,
            readiness.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            run.await;
            Ok("relay")
        });
    }

    let mut receiver_config = wiring::receiver_config(&settings);
    if roles.receiver {
        for note in settings.receiver_notes() {
            tracing::warn!("{note}");
        }
    }
    if !roles.receiver {
        receiver_config.customerio_endpoint_token = Default::default();
        receiver_config.chameleon_webhook_secrets.clear();
    }
    let state = AppState {
        config: Arc::new(receiver_config),
        queue: queue.clone(),
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        claims: claims.filter(|_| roles.receiver),
    };
    tracing::info!(
        listen = %settings.server.listen,
        receiver = roles.receiver,
        worker = roles.worker,
        relay = roles.relay,
        "started"
    );
    let http_shutdown = shutdown.clone();
    let app = sync_receiver::router(state);
    let header_timeout = settings.server.request_timeout;
    tasks.spawn(async move {
        sync_receiver::serve(listener, app, header_timeout, async move {
            http_shutdown.cancelled().await;
        })
        .await;
        Ok("receiver")
    });
    if let Some(handle) = metrics {
        let upkeep_shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = upkeep_shutdown.cancelled() => return Ok("metrics"),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => handle.run_upkeep(),
                }
            }
        });
    }

    // A role that stops on its own is a failure; stop the others and report it.
    let mut failure = None;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(joined) = tasks.join_next() => {
            // Roles end on their own only when shutdown began; anything else is a failure.
            if !shutdown.is_cancelled() {
                failure = Some(match joined {
                    Ok(Ok(role)) => anyhow::anyhow!("{role} stopped unexpectedly"),
                    Ok(Err(err)) => err,
                    Err(err) => anyhow::anyhow!("a role panicked: {err}"),
                });
                shutdown.cancel();
            }
        }
    }

    readiness.start_draining();
    tracing::info!(grace = ?settings.server.shutdown_grace, "draining");
    let drained = tokio::time::timeout(settings.server.shutdown_grace, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(err)) = joined {
                tracing::warn!(cause = %format!("{err:#}"), "role ended with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; unsettled messages go back to the queue");
        tasks.abort_all();
    }
    queue.close().await;
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// Cancel `shutdown` on SIGTERM or SIGINT.
pub async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                }
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot watch SIGTERM; only Ctrl-C stops the process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    shutdown.cancel();
}
