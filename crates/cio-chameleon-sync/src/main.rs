//! The `cio-chameleon-sync` executable: parse the command line, load the configuration, run the
//! command. Everything it runs is in the library half of this crate (`lib.rs`).

use std::process::ExitCode;

use cio_chameleon_sync::cli::{Cli, Command, ConfigCommand};
use cio_chameleon_sync::settings::Settings;
use cio_chameleon_sync::{demo, dlq, serve, telemetry};
use clap::Parser;

/// Exit status for an unusable configuration (sysexits `EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();

    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("cio-chameleon-sync: {err:#}");
            print_ignored_environment();
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if let Command::Config {
        command: ConfigCommand::Check,
    } = &cli.command
    {
        print_ignored_environment();
        return match settings.redacted_toml() {
            Ok(text) => {
                println!("# configuration is valid\n{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cio-chameleon-sync: {err:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }

    // Operator commands print their results; their logs are only for warnings.
    let mut log = settings.log.clone();
    if matches!(cli.command, Command::Dlq { .. }) {
        log.level = "warn".into();
    }
    let metrics = telemetry::init(&log);
    for variable in cio_chameleon_sync::settings::ignored_environment() {
        tracing::warn!(
            %variable,
            "environment variable ignored: overrides are written SYNC__SECTION__KEY, with double \
             underscores"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cio-chameleon-sync: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(settings, serve::Roles::ALL, metrics).await,
            Command::Receive => serve::run(settings, serve::Roles::RECEIVER, metrics).await,
            Command::Work => serve::run(settings, serve::Roles::WORKER, metrics).await,
            Command::Relay => serve::run(settings, serve::Roles::RELAY, metrics).await,
            Command::Dlq { command } => dlq::run(settings, command).await,
            Command::Sandbox(args) => demo::sandbox(args).await,
            Command::Demo(args) => demo::run(settings, args, metrics).await,
            Command::Config { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cio-chameleon-sync: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Before logging is set up (or where there is none): name the variables a reader may have meant
/// as overrides but that are not read.
fn print_ignored_environment() {
    for variable in cio_chameleon_sync::settings::ignored_environment() {
        eprintln!(
            "cio-chameleon-sync: warning: {variable} is ignored: overrides are written \
             SYNC__SECTION__KEY, with double underscores"
        );
    }
}
