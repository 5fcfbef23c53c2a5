//! Logs and metrics. Logs go to standard error, filtered by `RUST_LOG` or `log.level`, as text or
//! JSON lines. Metrics are kept by a Prometheus recorder whose handle renders `/metrics`.

use std::io::IsTerminal;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::settings::{LogFormat, LogSettings};

/// Install the log subscriber and the metrics recorder; returns the recorder's handle.
pub fn init(log: &LogSettings) -> Option<PrometheusHandle> {
    // HTTP client internals log request details at trace level; keep them out by default.
    // lapin reports an expected channel close at shutdown as an error; the queue backend logs
    // what operators need about the broker itself.
    let default = format!("{},hyper=warn,reqwest=warn,lapin=off,h2=warn", log.level);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let output = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let output = match log.format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(
            output
                .with_filter(filter)
                .with_filter(filter_fn(not_amqp_frames)),
        )
        .try_init();
    if let Err(err) = installed {
        eprintln!("cio-chameleon-sync: logs not set up: {err}");
    }

    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(cause = %err, "metrics recorder not installed");
            None
        }
    }
}

/// The AMQP client traces protocol frames, and the connection handshake frame carries the broker
/// credentials: its trace events never reach the log, whatever `RUST_LOG` says.
fn not_amqp_frames(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let amqp_client = target.starts_with("lapin") || target.starts_with("amq_protocol");
    !(amqp_client && *metadata.level() == Level::TRACE)
}
