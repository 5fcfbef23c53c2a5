//! The `cio-chameleon-sync` executable: parse the command line, load the configuration, run the
//! command. Everything it runs is in the library half of this crate (`lib.rs`).

use std::process::ExitCode;

use cio_chameleon_sync::cli::{Cli, Command, ConfigCommand};
use cio_chameleon_sync::serve::Roles;
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
        return config_check(&settings);
    }

    // The long-running commands name everything they lack at once, before binding a port or
    // touching the queue.
    if let Some((name, roles)) = long_running(&cli.command) {
        let missing = settings.missing_for(roles);
        if !missing.is_empty() {
            print_ignored_environment();
            for problem in &missing {
                eprintln!("cio-chameleon-sync: {problem}");
            }
            eprintln!(
                "cio-chameleon-sync: `{name}` does not start until these are set \
                 (`config check` lists them)"
            );
            return ExitCode::from(EXIT_CONFIG);
        }
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
            Command::Serve => serve::run(settings, Roles::ALL, metrics).await,
            Command::Receive => serve::run(settings, Roles::RECEIVER, metrics).await,
            Command::Work => serve::run(settings, Roles::WORKER, metrics).await,
            Command::Relay => serve::run(settings, Roles::RELAY, metrics).await,
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

/// The commands that run roles until stopped, with the roles each runs.
const LONG_RUNNING: [(&str, Roles); 4] = [
    ("serve", Roles::ALL),
    ("receive", Roles::RECEIVER),
    ("work", Roles::WORKER),
    ("relay", Roles::RELAY),
];

fn long_running(command: &Command) -> Option<(&'static str, Roles)> {
    let index = match command {
        Command::Serve => 0,
        Command::Receive => 1,
        Command::Work => 2,
        Command::Relay => 3,
        _ => return None,
    };
    Some(LONG_RUNNING[index])
}

/// `config check`: print the effective configuration, then whatever the long-running commands
/// would lack (exit 78) and what the receiver leaves out (a note only).
fn config_check(settings: &Settings) -> ExitCode {
    let text = match settings.redacted_toml() {
        Ok(text) => text,
        Err(err) => {
            eprintln!("cio-chameleon-sync: {err:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let missing = settings.missing_for(Roles::ALL);
    if missing.is_empty() {
        println!("# configuration is valid\n{text}");
    } else {
        println!(
            "# configuration read, but incomplete: the problems are on standard error\n{text}"
        );
    }
    // With no route at all the receiver's problem below already says so.
    if settings.missing_for(Roles::RECEIVER).is_empty() {
        for note in settings.receiver_notes() {
            eprintln!("cio-chameleon-sync: note: {note}");
        }
    }
    if missing.is_empty() {
        return ExitCode::SUCCESS;
    }
    for problem in &missing {
        eprintln!("cio-chameleon-sync: {problem}");
    }
    let (refused, startable): (Vec<_>, Vec<_>) = LONG_RUNNING
        .iter()
        .partition(|(_, roles)| !settings.missing_for(*roles).is_empty());
    let mut summary = format!(
        "cio-chameleon-sync: {} would refuse to start",
        list_commands(&refused)
    );
    if !startable.is_empty() {
        summary.push_str(&format!("; {} would start", list_commands(&startable)));
    }
    eprintln!("{summary} (the `dlq` commands need only the [queue] settings)");
    ExitCode::from(EXIT_CONFIG)
}

/// "`serve`, `work` and `relay`".
fn list_commands(commands: &[&(&str, Roles)]) -> String {
    let quoted: Vec<String> = commands
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
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
