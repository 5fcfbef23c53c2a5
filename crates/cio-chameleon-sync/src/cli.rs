//! The command line (DESIGN §7).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps Customer.io and Chameleon in step, both ways, through a durable queue.
#[derive(Debug, Parser)]
#[command(name = "cio-chameleon-sync", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without one, defaults and `SYNC__SECTION__KEY` variables apply.
    #[arg(long, short = 'c', global = true, env = "SYNC_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the receiver, the worker and the relay in one process.
    Serve,
    /// Run only the HTTP receiver.
    Receive,
    /// Run only the worker (Customer.io -> Chameleon).
    Work,
    /// Run only the relay (Chameleon -> Customer.io).
    Relay,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect, replay and purge dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run local stand-ins for the Chameleon and Customer.io APIs.
    Sandbox(SandboxArgs),
    /// Run the sandbox and the daemon together, post the sample payloads, and show what each
    /// upstream received.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration, print it with secrets redacted, and name every credential
    /// `serve` would lack (exit status 78 if any).
    Check,
}

/// Which dead-letter queue.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QueueName {
    Inbound,
    Outbound,
}

impl From<QueueName> for sync_core::Direction {
    fn from(value: QueueName) -> Self {
        match value {
            QueueName::Inbound => sync_core::Direction::Inbound,
            QueueName::Outbound => sync_core::Direction::Outbound,
        }
    }
}

/// Which dead letters.
#[derive(Clone, Debug, Args)]
pub struct Filter {
    /// `inbound` (Customer.io -> Chameleon) or `outbound` (Chameleon -> Customer.io).
    #[arg(long, value_enum)]
    pub queue: QueueName,
    /// Every dead letter (required when no other filter is given, for replay and purge).
    #[arg(long)]
    pub all: bool,
    /// Only these message ids (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Only this dead-letter reason, such as `upstream_rejected` or `no_identity`.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this source, such as `customerio.reporting` or `chameleon.webhook`.
    #[arg(long)]
    pub source: Option<String>,
    /// Only dead-lettered at or after this instant (RFC 3339) or this long ago (`2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only dead-lettered before this instant (RFC 3339) or this long ago (`30m`).
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters as a table, or as a JSON array with `--json`.
    List {
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: headers and payload.
    Show {
        /// The message id.
        id: String,
        #[arg(long, value_enum)]
        queue: QueueName,
    },
    /// Put dead letters back on their work queue (same message id, attempts start over).
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Count what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many per second.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Delete dead letters.
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Count what would be deleted, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub listen: SocketAddr,
    /// Chameleon account secret the sandbox expects.
    #[arg(long, default_value = "sandbox-account-secret")]
    pub account_secret: String,
    /// Customer.io site id the sandbox expects.
    #[arg(long, default_value = "sandbox-site")]
    pub site_id: String,
    /// Customer.io Track API key the sandbox expects.
    #[arg(long, default_value = "sandbox-api-key")]
    pub api_key: String,
    /// Emulate Chameleon's rate limit (requests per minute).
    #[arg(long)]
    pub chameleon_requests_per_minute: Option<u32>,
    /// Emulate a Customer.io rate limit (requests per second).
    #[arg(long)]
    pub customerio_requests_per_second: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the receiver listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the sandbox listens.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub sandbox_listen: SocketAddr,
    /// Folder of sample payloads to post.
    #[arg(long, default_value = "examples/payloads")]
    pub payloads: PathBuf,
    /// Post the samples, show the results, and exit instead of running until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}
