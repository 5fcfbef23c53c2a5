//! Logs and metrics. Logs go to standard error, filtered by `RUST_LOG` or `log.level`, as text or
//! JSON lines. Metrics are kept by a Prometheus recorder whose handle renders `/metrics`.

use std::io::IsTerminal;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Install the log subscriber and the metrics recorder; returns the recorder's handle.
pub fn init(log: &LogSettings) -> Option<PrometheusHandle> {
    // HTTP client internals log request details at trace level; keep them out by default.
    // lapin reports an expected channel close at shutdown as an error; the queue backend logs
    // what operators need about the broker itself.
    let default = format!("{},hyper=warn,reqwest=warn,lapin=off,h2=warn", log.level);
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // The AMQP client traces protocol frames, and the connection handshake frame carries the
    // broker credentials; its trace level never reaches the log, whatever `RUST_LOG` says.
    for target in [
        "lapin",
        "amq_protocol",
        "amq_protocol_tcp",
        "amq_protocol_uri",
    ] {
        if let Ok(directive) = format!("{target}=debug").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
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
