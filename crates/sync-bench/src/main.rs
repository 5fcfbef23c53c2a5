//! The `sync-bench` executable (`just bench <command>`): parse the command line, run one
//! benchmark, print its summary or its JSON object. Everything it runs is in the library half
//! of this crate (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Serialize;
use sync_bench::cli::{Cli, Command};
use sync_bench::{drain, receiver, upstream};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();

    // Quiet by default: the benchmark's own progress goes to standard error without logs.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,lapin=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // The daemon's metrics recorder, so that the receiver's counters cost here what they cost
    // there.
    if let Err(err) = PrometheusBuilder::new().install_recorder() {
        eprintln!("sync-bench: metrics recorder not installed: {err}");
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sync-bench: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let printed = runtime.block_on(async {
        match &cli.command {
            Command::Receiver(args) => {
                let report = receiver::run(args).await?;
                print(cli.json, &report, || report.summary())
            }
            Command::Drain(args) => {
                let report = drain::run(args).await?;
                print(cli.json, &report, || report.summary())
            }
            Command::Upstream(args) => {
                let report = upstream::run(args).await?;
                print(cli.json, &report, || report.summary())
            }
        }
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sync-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One JSON object, or the readable summary.
fn print<T: Serialize>(
    json: bool,
    report: &T,
    summary: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{}", summary());
    }
    Ok(())
}
