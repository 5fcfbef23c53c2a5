//! The command line: one subcommand per benchmark, every size and duration a flag with the
//! default that `docs/benchmarks.md` reports.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The broker every AMQP benchmark uses unless told otherwise.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Throughput benchmarks of cio-chameleon-sync (loopback only; each run stops by itself).
#[derive(Debug, Parser)]
#[command(name = "sync-bench", version, about)]
pub struct Cli {
    /// Print one JSON object instead of the readable summary.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receiver requests/s and latency over a real queue, next to a bare lapin publish loop.
    Receiver(ReceiverArgs),
    /// Preload a work queue, then consume and ack it; both backends side by side.
    Drain(DrainArgs),
    /// The daemon binary against the rate-limited sandbox: delivered/s and peak memory.
    Upstream(UpstreamArgs),
}

/// Which queue backend a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// RabbitMQ (quorum queues, publisher confirms).
    Amqp,
    /// The embedded SQLite queue in a temporary folder.
    Embedded,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Amqp => "amqp",
            Backend::Embedded => "embedded",
        }
    }
}

/// Whether the receiver runs with the dedupe claim store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Claims {
    Off,
    On,
    /// One run without, then one with.
    Both,
}

impl Claims {
    /// The runs this choice asks for, as "claim store on?" flags.
    pub fn runs(self) -> Vec<bool> {
        match self {
            Claims::Off => vec![false],
            Claims::On => vec![true],
            Claims::Both => vec![false, true],
        }
    }
}

#[derive(Clone, Debug, Args)]
pub struct ReceiverArgs {
    /// Queue behind the receiver.
    #[arg(long, value_enum, default_value = "amqp")]
    pub backend: Backend,
    /// RabbitMQ URL (loopback); every run uses a fresh prefix, deleted afterwards.
    #[arg(long, default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Concurrent keep-alive HTTP clients (and bare publishers).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Size of every request body in bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Load before each round's measured period, not counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Measured period of each round.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Rounds, each running the bare loop and every receiver run once, in turn; the figures
    /// add up the rounds. Interleaving keeps a drift in what the machine gives (other users,
    /// the hypervisor) from favouring whichever side ran first.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Run without the dedupe claim store, with it, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub claims: Claims,
    /// Skip the bare lapin baseline (always skipped on the embedded backend).
    #[arg(long)]
    pub no_bare: bool,
    /// Publishers of the bare baseline; `--clients` when not given.
    #[arg(long)]
    pub bare_publishers: Option<usize>,
    /// Channels the bare publishers share, each publisher on channel `index % channels`; one per
    /// publisher when not given.
    #[arg(long)]
    pub bare_channels: Option<usize>,
    /// Worker threads of the receiver's runtime; one per core when not given, as in the daemon.
    #[arg(long)]
    pub receiver_threads: Option<usize>,
}

#[derive(Clone, Debug, Args)]
pub struct DrainArgs {
    /// Backend to measure; both, one after the other, when not given.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// RabbitMQ URL (loopback); the run uses a fresh prefix, deleted afterwards.
    #[arg(long, default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Messages preloaded, then drained.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Unsettled deliveries at once while draining.
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// Concurrent `Queue::publish` calls while preloading.
    #[arg(long, default_value_t = 64)]
    pub publishers: usize,
    /// Size of every message body in bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Settle each delivery before taking the next, instead of settling concurrently.
    #[arg(long)]
    pub sequential_acks: bool,
    /// Give up on a phase after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct UpstreamArgs {
    /// RabbitMQ URL (loopback) the daemon uses; the run uses a fresh prefix, deleted afterwards.
    #[arg(long, default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// The daemon binary; by default `cio-chameleon-sync` beside this one, built first.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Do not run `cargo build --release -p cio-chameleon-sync` first.
    #[arg(long)]
    pub no_build: bool,
    /// Customer.io workflow profile updates queued for the worker.
    #[arg(long, default_value_t = 50_000)]
    pub profile_updates: usize,
    /// Distinct uids the profile updates are spread over.
    #[arg(long, default_value_t = 5_000)]
    pub uids: usize,
    /// Chameleon `tour.completed` webhooks queued for the relay.
    #[arg(long, default_value_t = 50_000)]
    pub webhooks: usize,
    /// Seed of the update generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Rate limit the sandbox emulates for Chameleon, and the daemon's budget.
    #[arg(long, default_value_t = 60)]
    pub chameleon_requests_per_minute: u32,
    /// Rate limit the sandbox emulates for Customer.io, and the daemon's budget.
    #[arg(long, default_value_t = 100)]
    pub customerio_requests_per_second: u32,
    /// `chameleon.batch_size` of the daemon.
    #[arg(long, default_value_t = 10_000)]
    pub chameleon_batch_size: usize,
    /// `chameleon.batch_linger` of the daemon.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub chameleon_batch_linger: Duration,
    /// `customerio.batch_size` of the daemon.
    #[arg(long, default_value_t = 250)]
    pub customerio_batch_size: usize,
    /// `queue.prefetch` of the daemon. The worker takes at least `chameleon.batch_size`
    /// whatever this says, so it applies to the relay (which takes at least its batch size).
    #[arg(long, default_value_t = 1_000)]
    pub prefetch: u16,
    /// Concurrent publishes while preloading the queues.
    #[arg(long, default_value_t = 64)]
    pub publishers: usize,
    /// Give up waiting for delivery after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// An environment variable for the daemon process, as `NAME=VALUE` (repeatable), for
    /// experiments such as `MALLOC_ARENA_MAX=2`.
    #[arg(long = "daemon-env", value_parser = parse_env)]
    pub daemon_env: Vec<(String, String)>,
}

/// `NAME=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}
