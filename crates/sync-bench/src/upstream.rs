//! The upstream benchmark: delivery under the providers' rate limits, measured on the real
//! daemon binary. It starts `cio-chameleon-sync sandbox` with Chameleon's and Customer.io's
//! limits emulated, preloads the daemon's queues on RabbitMQ (workflow profile updates spread
//! over a set of uids, and Chameleon `tour.completed` webhooks) exactly as the receiver would
//! have queued them, then starts `cio-chameleon-sync serve` and watches its `/metrics` until
//! every message is settled. It reports delivered profile updates per second (coalesced ones
//! included, as `ccsync_outcomes_total` counts each delivery), Customer.io events per second,
//! the daemon's peak resident memory (`VmHWM`), and what the sandbox saw (requests, `429`s, the
//! largest batch).
//!
//! Preloading first keeps the publisher's own speed out of the figures: the daemon starts with
//! full queues, so the rates are its delivery rates.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use sync_core::{Direction, Envelope, Source};
use sync_queue::Queue;
use sync_queue::amqp::{AmqpConfig, AmqpQueue, Topology};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend;
use crate::cli::UpstreamArgs;
use crate::cpu;
use crate::machine::Machine;
use crate::metrics_text;
use crate::payload;
use crate::process::{self, Process};
use crate::scratch::Scratch;

/// Credentials the sandbox expects and the daemon is configured with.
const ACCOUNT_SECRET: &str = "bench-account-secret";
const SITE_ID: &str = "bench-site";
const API_KEY: &str = "bench-api-key";

/// Targets of `docs/benchmarks.md`.
pub const TARGET_PROFILE_UPDATES_PER_SEC: f64 = 5_000.0;
pub const TARGET_EVENTS_PER_SEC: f64 = 5_000.0;
pub const TARGET_PEAK_RSS_MIB: f64 = 64.0;

/// How often `/metrics` is read while the daemon delivers.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The daemon is taken as stuck when no message is settled for this long.
const STALL: Duration = Duration::from_secs(60);

/// Everything one `upstream` command measured.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamReport {
    pub machine: Machine,
    pub settings: Settings,
    /// Messages preloaded per second (informational: the daemon was not running).
    pub preload_per_sec: f64,
    /// From starting the daemon to `/readyz` answering 200.
    pub startup_secs: f64,
    /// Workflow profile updates, inbound.
    pub profiles: Delivered,
    /// Customer.io events from Chameleon webhooks, outbound.
    pub events: Delivered,
    /// `ccsync_updates_coalesced_total`: updates merged into another item of their batch.
    pub coalesced: f64,
    /// The daemon's peak resident memory (`VmHWM`) before it was stopped, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Average cores busy while the daemon delivered.
    pub cpu: ProcessesCpu,
    pub chameleon: Calls,
    pub customerio: Calls,
    /// Whether the daemon exited 0 on SIGTERM.
    pub clean_exit: bool,
    /// `[seconds since ready, profile updates delivered, events delivered]` at every read of
    /// `/metrics` (every 100 ms): the slope between two reads is the rate at that moment.
    pub timeline: Vec<[f64; 3]>,
}

/// The settings of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub profile_updates: usize,
    pub uids: usize,
    pub webhooks: usize,
    pub seed: u64,
    pub chameleon_requests_per_minute: u32,
    pub customerio_requests_per_second: u32,
    pub chameleon_batch_size: usize,
    pub chameleon_batch_linger_secs: f64,
    pub customerio_batch_size: usize,
    pub prefetch: u16,
    /// Extra environment of the daemon process (`--daemon-env`).
    pub daemon_env: Vec<String>,
}

/// One direction's outcome, from the daemon's `ccsync_outcomes_total`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delivered {
    pub queued: usize,
    pub delivered: f64,
    pub dead_lettered: f64,
    pub retried: f64,
    pub filtered: f64,
    /// Whether every queued message was settled before the timeout.
    pub finished: bool,
    /// From the daemon being ready to the last settlement (or the timeout).
    pub secs: f64,
    /// Delivered per second over `secs`.
    pub per_second: f64,
}

/// Average cores each process kept busy from the daemon being ready to the end of delivery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessesCpu {
    pub daemon: Option<f64>,
    pub sandbox: Option<f64>,
    pub broker: Option<f64>,
    /// Everything on the machine, other users included.
    pub machine: Option<f64>,
}

/// CPU counters of the three processes and the machine at one instant.
struct CpuMark {
    at: Instant,
    daemon: Option<u64>,
    sandbox: Option<u64>,
    broker: Option<u64>,
    machine: Option<(u64, u64)>,
}

impl CpuMark {
    fn take(daemon: &Process, sandbox: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            daemon: daemon.id().and_then(cpu::process_ticks_of),
            sandbox: sandbox.and_then(cpu::process_ticks_of),
            broker: cpu::broker_ticks(),
            machine: cpu::machine_ticks_now(),
        }
    }

    fn until(&self, later: &CpuMark) -> ProcessesCpu {
        let secs = (later.at - self.at).as_secs_f64();
        let cores = |before: Option<u64>, after: Option<u64>| {
            before
                .zip(after)
                .map(|(b, a)| cpu::ticks_to_cores(a.saturating_sub(b), secs))
        };
        let machine = self
            .machine
            .zip(later.machine)
            .map(|(before, after)| cpu::machine_cores_busy(before, after));
        ProcessesCpu {
            daemon: cores(self.daemon, later.daemon),
            sandbox: cores(self.sandbox, later.sandbox),
            broker: cores(self.broker, later.broker),
            machine,
        }
    }
}

/// What one stand-in of the sandbox received.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Calls {
    pub requests: usize,
    /// Answered 2xx.
    pub accepted: usize,
    /// Answered 429.
    pub rate_limited: usize,
    /// Items in the accepted batch requests.
    pub items: usize,
    pub largest_batch_items: usize,
    /// Largest batch body as JSON, in bytes.
    pub largest_batch_bytes: usize,
    /// `[seconds since the daemon was ready, items]` of every accepted batch, in arrival order.
    pub batches: Vec<(f64, usize)>,
}

/// Run the benchmark.
pub async fn run(args: &UpstreamArgs) -> anyhow::Result<UpstreamReport> {
    let mut machine = Machine::at_start();
    backend::require_broker(&args.amqp_url).await?;
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => sibling_binary()?,
    };
    if !args.no_build {
        build_daemon().await?;
    }
    let mut scratch = Scratch::new("upstream")?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    // The sandbox plays both upstreams, with their limits.
    let sandbox_address = process::free_address()?;
    let sandbox_url = format!("http://{sandbox_address}");
    let mut sandbox = Process::spawn(
        "sandbox",
        &binary,
        &sandbox_args(args, &sandbox_address.to_string()),
        &[("RUST_LOG", "warn")],
        scratch.path().join("sandbox.log"),
    )?;
    sandbox
        .wait_ready(
            &http,
            &format!("{sandbox_url}/_sandbox/healthz"),
            Duration::from_secs(30),
        )
        .await?;

    // Everything on the broker lives under this prefix, deleted whatever the outcome.
    let prefix = backend::unique_prefix("upstream");
    let outcome = measure(
        args,
        &binary,
        &scratch,
        &http,
        (&sandbox_url, &mut sandbox),
        &prefix,
    )
    .await;

    let stopped = sandbox.stop("INT", Duration::from_secs(10)).await;
    let deleted = backend::delete_prefix(&args.amqp_url, &topology(&args.amqp_url, &prefix)).await;
    if outcome.is_err() {
        scratch.keep();
        eprintln!("logs kept in {}", scratch.path().display());
    }
    let measured = outcome?;
    stopped?;
    deleted?;

    machine.finish();
    Ok(UpstreamReport {
        machine,
        settings: Settings {
            profile_updates: args.profile_updates,
            uids: args.uids,
            webhooks: args.webhooks,
            seed: args.seed,
            chameleon_requests_per_minute: args.chameleon_requests_per_minute,
            customerio_requests_per_second: args.customerio_requests_per_second,
            chameleon_batch_size: args.chameleon_batch_size,
            chameleon_batch_linger_secs: args.chameleon_batch_linger.as_secs_f64(),
            customerio_batch_size: args.customerio_batch_size,
            prefetch: args.prefetch,
            daemon_env: args
                .daemon_env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        },
        preload_per_sec: measured.preload_per_sec,
        startup_secs: measured.startup_secs,
        profiles: measured.profiles,
        events: measured.events,
        coalesced: measured.coalesced,
        peak_rss_mib: measured.peak_rss_mib,
        cpu: measured.cpu,
        chameleon: measured.chameleon,
        customerio: measured.customerio,
        clean_exit: measured.clean_exit,
        timeline: measured.timeline,
    })
}

/// What [`measure`] found.
struct Measured {
    preload_per_sec: f64,
    startup_secs: f64,
    profiles: Delivered,
    events: Delivered,
    coalesced: f64,
    peak_rss_mib: Option<f64>,
    cpu: ProcessesCpu,
    chameleon: Calls,
    customerio: Calls,
    clean_exit: bool,
    timeline: Vec<[f64; 3]>,
}

/// Preload, run the daemon until everything is settled, stop it, and read the sandbox's
/// journal.
async fn measure(
    args: &UpstreamArgs,
    binary: &Path,
    scratch: &Scratch,
    http: &reqwest::Client,
    (sandbox_url, sandbox): (&str, &mut Process),
    prefix: &str,
) -> anyhow::Result<Measured> {
    eprintln!(
        "upstream: preloading {} profile updates over {} uids and {} tour.completed webhooks",
        args.profile_updates, args.uids, args.webhooks
    );
    let preload_per_sec = preload(args, prefix).await?;

    let daemon_address = process::free_address()?;
    let daemon_url = format!("http://{daemon_address}");
    let config = scratch.path().join("daemon.toml");
    std::fs::write(
        &config,
        daemon_config(
            args,
            prefix,
            &daemon_address.to_string(),
            sandbox_url,
            scratch.path(),
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;

    eprintln!("upstream: starting the daemon");
    let env: Vec<(&str, &str)> = args
        .daemon_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let started = Instant::now();
    let mut daemon = Process::spawn(
        "daemon",
        binary,
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ],
        &env,
        scratch.path().join("daemon.log"),
    )?;
    daemon
        .wait_ready(
            http,
            &format!("{daemon_url}/readyz"),
            Duration::from_secs(60),
        )
        .await?;
    let ready = Instant::now();
    let ready_unix_ms = unix_ms();
    let cpu_start = CpuMark::take(&daemon, sandbox.id());

    let watched = watch(args, [&mut daemon, sandbox], http, &daemon_url, ready).await;
    let cpu = cpu_start.until(&CpuMark::take(&daemon, sandbox.id()));
    let peak_rss_mib = daemon.peak_rss_kib().map(|kib| kib as f64 / 1024.0);
    let stopped = daemon.stop("TERM", Duration::from_secs(60)).await;
    let (profiles, events, coalesced, timeline) = watched?;
    let clean_exit = stopped?.success();

    let chameleon = calls(http, sandbox_url, "chameleon", "profiles", ready_unix_ms).await?;
    let customerio = calls(http, sandbox_url, "customerio", "batch", ready_unix_ms).await?;
    Ok(Measured {
        preload_per_sec,
        startup_secs: (ready - started).as_secs_f64(),
        profiles,
        events,
        coalesced,
        peak_rss_mib,
        cpu,
        chameleon,
        customerio,
        clean_exit,
        timeline,
    })
}

/// The topology the daemon declares with its default retry tiers and delivery limit.
fn topology(url: &str, prefix: &str) -> Topology {
    let defaults = AmqpConfig {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        ..AmqpConfig::default()
    };
    Topology::new(prefix, &defaults.retry_tiers, defaults.delivery_limit)
}

/// Queue the profile updates and the webhooks through the queue contract, as the receiver
/// would have; messages per second.
async fn preload(args: &UpstreamArgs, prefix: &str) -> anyhow::Result<f64> {
    let config = AmqpConfig {
        url: args.amqp_url.clone(),
        prefix: prefix.to_owned(),
        ..AmqpConfig::default()
    };
    let queue = AmqpQueue::connect(config)
        .await
        .context("cannot declare the daemon's queues")?;

    // Every envelope is built first, so the timing covers publishing only.
    let sent_at = sync_core::time::format_ms(sync_core::time::now_ms());
    let mut envelopes: Vec<Envelope> =
        payload::profile_updates(args.profile_updates, args.uids, args.seed)
            .into_iter()
            .enumerate()
            .map(|(index, body)| {
                let key = format!("bench-profile-{index}");
                Envelope::new(Source::CustomerioProfiles, Bytes::from(body), Some(key))
            })
            .collect();
    envelopes.extend((0..args.webhooks).map(|index| {
        let body = payload::tour_completed(index, index % args.uids.max(1), &sent_at);
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|value| value["id"].as_str().map(str::to_owned));
        Envelope::new(Source::ChameleonWebhook, Bytes::from(body), id)
    }));
    let total = envelopes.len();
    let envelopes = Arc::new(envelopes);
    let next = Arc::new(AtomicUsize::new(0));
    let queue: Arc<dyn Queue> = Arc::new(queue);

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..args.publishers.max(1) {
        let (queue, envelopes, next) = (queue.clone(), envelopes.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(envelope) = envelopes.get(index) else {
                    return Ok::<_, anyhow::Error>(());
                };
                queue
                    .publish(envelope)
                    .await
                    .context("a preload publish failed")?;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a preload task panicked")??;
    }
    let took = started.elapsed();
    queue.close().await;

    // Nothing may be missing before the daemon starts, or the rates would be wrong.
    let inbound = backend::work_queue_depth(&args.amqp_url, &format!("{prefix}.inbound")).await?;
    let outbound = backend::work_queue_depth(&args.amqp_url, &format!("{prefix}.outbound")).await?;
    if inbound as usize != args.profile_updates || outbound as usize != args.webhooks {
        bail!(
            "preloaded queues hold {inbound} inbound and {outbound} outbound messages, expected \
             {} and {}",
            args.profile_updates,
            args.webhooks
        );
    }
    Ok(total as f64 / took.as_secs_f64().max(f64::EPSILON))
}

/// Read `/metrics` until both directions are settled, the timeout passes, nothing is settled
/// for [`STALL`], or the daemon or the sandbox exits.
async fn watch(
    args: &UpstreamArgs,
    mut children: [&mut Process; 2],
    http: &reqwest::Client,
    daemon_url: &str,
    ready: Instant,
) -> anyhow::Result<(Delivered, Delivered, f64, Vec<[f64; 3]>)> {
    let mut profiles = Delivered {
        queued: args.profile_updates,
        ..Delivered::default()
    };
    let mut events = Delivered {
        queued: args.webhooks,
        ..Delivered::default()
    };
    let deadline = ready + args.timeout;
    let mut last_progress = Instant::now();
    let (mut settled_before, mut settled_at) = (0.0, Instant::now());
    let mut timeline = Vec::new();
    let coalesced = loop {
        let now = Instant::now();
        let page = http
            .get(format!("{daemon_url}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        let text = match page {
            Ok(page) => page.text().await.unwrap_or_default(),
            Err(err) => bail!("cannot read the daemon's /metrics: {err}"),
        };
        for (delivered, direction) in [
            (&mut profiles, Direction::Inbound),
            (&mut events, Direction::Outbound),
        ] {
            if delivered.finished {
                continue;
            }
            update(delivered, &text, direction);
            delivered.secs = (now - ready).as_secs_f64();
            delivered.per_second = delivered.delivered / delivered.secs.max(f64::EPSILON);
            let settled = delivered.delivered + delivered.dead_lettered + delivered.filtered;
            delivered.finished = settled >= delivered.queued as f64;
        }
        let coalesced = metrics_text::sum(&text, "ccsync_updates_coalesced_total", &[]);
        timeline.push([
            (now - ready).as_secs_f64(),
            profiles.delivered,
            events.delivered,
        ]);

        if profiles.finished && events.finished {
            break coalesced;
        }
        for child in &mut children {
            if let Some(status) = child.exited() {
                bail!(
                    "{} exited ({status}) while the daemon delivered; its log ends with:\n{}",
                    child.name(),
                    child.log_tail(20)
                );
            }
        }
        let settled = [&profiles, &events]
            .iter()
            .map(|d| d.delivered + d.dead_lettered + d.retried + d.filtered)
            .sum::<f64>();
        if settled > settled_before {
            (settled_before, settled_at) = (settled, now);
        } else if now - settled_at >= STALL {
            bail!(
                "nothing was settled for {STALL:?}; the daemon's log ends with:\n{}",
                children[0].log_tail(20)
            );
        }
        if now >= deadline {
            eprintln!(
                "upstream: timeout after {:?}, reporting what was delivered",
                args.timeout
            );
            break coalesced;
        }
        if now - last_progress >= Duration::from_secs(5) {
            last_progress = now;
            eprintln!(
                "upstream: {:.0} of {} profile updates and {:.0} of {} events delivered, rss {} KiB",
                profiles.delivered,
                profiles.queued,
                events.delivered,
                events.queued,
                children[0].rss_kib().unwrap_or(0)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    Ok((profiles, events, coalesced, timeline))
}

/// Read a direction's settled counts from a `/metrics` page.
fn update(delivered: &mut Delivered, page: &str, direction: Direction) {
    let count = |outcome: &str| {
        metrics_text::sum(
            page,
            "ccsync_outcomes_total",
            &[("direction", direction.as_str()), ("outcome", outcome)],
        )
    };
    delivered.delivered = count("delivered");
    delivered.dead_lettered = count("dead_lettered");
    delivered.retried = count("retried");
    delivered.filtered = count("filtered");
}

/// Summarise the sandbox's journal of one upstream; `batch_key` names the array of items in a
/// batch body (`profiles` for Chameleon, `batch` for Customer.io).
async fn calls(
    http: &reqwest::Client,
    sandbox_url: &str,
    upstream: &str,
    batch_key: &str,
    ready_unix_ms: i64,
) -> anyhow::Result<Calls> {
    let journal: Vec<Value> = http
        .get(format!(
            "{sandbox_url}/_sandbox/requests?upstream={upstream}"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("cannot read the sandbox's {upstream} journal"))?;
    let mut calls = Calls::default();
    for request in &journal {
        calls.requests += 1;
        let status = request["status"].as_u64().unwrap_or(0);
        if status == 429 {
            calls.rate_limited += 1;
        }
        if !(200..300).contains(&status) {
            continue;
        }
        calls.accepted += 1;
        if let Some(items) = request["body"][batch_key].as_array() {
            calls.items += items.len();
            let at_ms = request["received_at_ms"].as_i64().unwrap_or(ready_unix_ms);
            calls
                .batches
                .push(((at_ms - ready_unix_ms) as f64 / 1000.0, items.len()));
            calls.largest_batch_items = calls.largest_batch_items.max(items.len());
            let bytes = serde_json::to_vec(&request["body"]).map_or(0, |body| body.len());
            calls.largest_batch_bytes = calls.largest_batch_bytes.max(bytes);
        }
    }
    Ok(calls)
}

/// Now as unix milliseconds, the sandbox journal's clock.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// `cio-chameleon-sync` in the folder of this binary (both are built into `target/release`).
fn sibling_binary() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("cannot locate the sync-bench binary")?;
    let folder = this
        .parent()
        .context("the sync-bench binary has no folder")?;
    Ok(folder.join("cio-chameleon-sync"))
}

/// `cargo build --release -p cio-chameleon-sync`, in this workspace.
async fn build_daemon() -> anyhow::Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("upstream: building the daemon (cargo build --release -p cio-chameleon-sync)");
    let status = tokio::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "cio-chameleon-sync",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .await
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building the daemon failed ({status})");
    }
    Ok(())
}

fn sandbox_args(args: &UpstreamArgs, listen: &str) -> Vec<String> {
    [
        "sandbox",
        "--listen",
        listen,
        "--account-secret",
        ACCOUNT_SECRET,
        "--site-id",
        SITE_ID,
        "--api-key",
        API_KEY,
        "--chameleon-requests-per-minute",
        &args.chameleon_requests_per_minute.to_string(),
        "--customerio-requests-per-second",
        &args.customerio_requests_per_second.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The daemon's configuration file: RabbitMQ under `prefix`, both upstreams at the sandbox, the
/// budgets equal to the sandbox's limits, and the batch and prefetch sizes of the arguments.
pub fn daemon_config(
    args: &UpstreamArgs,
    prefix: &str,
    listen: &str,
    sandbox_url: &str,
    scratch: &Path,
) -> String {
    let path = |name: &str| toml_string(&scratch.join(name).display().to_string());
    format!(
        r#"# Written by `sync-bench upstream` for one run.
[server]
listen = {listen}
shutdown_grace = "30s"

[queue]
backend = "amqp"
amqp_url = {amqp_url}
prefix = {prefix}
prefetch = {prefetch}
path = {queue_path}

[customerio]
endpoint_token = "bench-endpoint-token-0001"
track_url = {sandbox}
site_id = {site_id}
api_key = {api_key}
requests_per_second = {rps}
batch_size = {cio_batch}

[chameleon]
api_url = {sandbox}
account_secret = {account_secret}
webhook_secrets = ["bench-webhook-secret"]
requests_per_minute = {rpm}
batch_size = {chameleon_batch}
batch_linger = "{linger_ms}ms"

[dedupe]
path = {seen_path}

[log]
level = "info"
"#,
        listen = toml_string(listen),
        amqp_url = toml_string(&args.amqp_url),
        prefix = toml_string(prefix),
        prefetch = args.prefetch,
        queue_path = path("queue.sqlite3"),
        sandbox = toml_string(sandbox_url),
        site_id = toml_string(SITE_ID),
        api_key = toml_string(API_KEY),
        rps = args.customerio_requests_per_second,
        cio_batch = args.customerio_batch_size,
        account_secret = toml_string(ACCOUNT_SECRET),
        rpm = args.chameleon_requests_per_minute,
        chameleon_batch = args.chameleon_batch_size,
        linger_ms = args.chameleon_batch_linger.as_millis(),
        seen_path = path("seen.sqlite3"),
    )
}

/// A TOML basic string (JSON string escapes are valid TOML ones).
fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

impl ProcessesCpu {
    /// `daemon 0.81, sandbox 0.40, broker 0.52, machine 1.90 cores busy`.
    fn line(&self) -> String {
        let parts: Vec<String> = [
            ("daemon", self.daemon),
            ("sandbox", self.sandbox),
            ("broker", self.broker),
            ("machine", self.machine),
        ]
        .into_iter()
        .filter_map(|(name, cores)| cores.map(|cores| format!("{name} {cores:.2}")))
        .collect();
        format!("{} cores busy", parts.join(", "))
    }
}

impl UpstreamReport {
    /// The readable summary.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let verdict = |met: bool| if met { "target met" } else { "below target" };
        let rss = self
            .peak_rss_mib
            .map_or_else(|| "unknown".to_owned(), |mib| format!("{mib:.1} MiB"));
        let rss_met = self
            .peak_rss_mib
            .is_some_and(|mib| mib <= TARGET_PEAK_RSS_MIB);
        let direction = |name: &str, d: &Delivered| {
            format!(
                "  {name}: {:.0} of {} delivered in {:.1} s = {:.0}/s{}; {} dead-lettered, {} \
                 retried, {} filtered",
                d.delivered,
                d.queued,
                d.secs,
                d.per_second,
                if d.finished { "" } else { " (timed out)" },
                d.dead_lettered,
                d.retried,
                d.filtered
            )
        };
        let calls = |name: &str, c: &Calls| {
            format!(
                "  sandbox {name}: {} requests, {} accepted, {} answered 429, {} items, largest \
                 batch {} items / {} bytes",
                c.requests,
                c.accepted,
                c.rate_limited,
                c.items,
                c.largest_batch_items,
                c.largest_batch_bytes
            )
        };
        [
            format!(
                "upstream benchmark: {} profile updates over {} uids, {} tour.completed webhooks; \
                 chameleon {}/min, customer.io {}/s; chameleon batch {} (linger {} s), \
                 customer.io batch {}, prefetch {}",
                s.profile_updates,
                s.uids,
                s.webhooks,
                s.chameleon_requests_per_minute,
                s.customerio_requests_per_second,
                s.chameleon_batch_size,
                s.chameleon_batch_linger_secs,
                s.customerio_batch_size,
                s.prefetch
            ),
            format!("  machine: {}", self.machine.summary()),
            format!(
                "  daemon environment: {}",
                if s.daemon_env.is_empty() {
                    "as inherited, less SYNC_* and RUST_LOG".to_owned()
                } else {
                    s.daemon_env.join(" ")
                }
            ),
            format!(
                "  preloaded at {:.0} msg/s; daemon ready after {:.2} s",
                self.preload_per_sec, self.startup_secs
            ),
            direction("profile updates", &self.profiles),
            format!(
                "    {} (>= {TARGET_PROFILE_UPDATES_PER_SEC}/s); {:.0} coalesced",
                verdict(self.profiles.per_second >= TARGET_PROFILE_UPDATES_PER_SEC),
                self.coalesced
            ),
            direction("customer.io events", &self.events),
            format!(
                "    {} (>= {TARGET_EVENTS_PER_SEC}/s)",
                verdict(self.events.per_second >= TARGET_EVENTS_PER_SEC)
            ),
            format!(
                "  daemon peak RSS (VmHWM): {rss}, {} (<= {TARGET_PEAK_RSS_MIB} MiB)",
                verdict(rss_met)
            ),
            format!("  cpu while delivering: {}", self.cpu.line()),
            calls("chameleon", &self.chameleon),
            calls("customer.io", &self.customerio),
            format!(
                "  daemon stopped {}",
                if self.clean_exit {
                    "cleanly on SIGTERM"
                } else {
                    "with a failure status"
                }
            ),
        ]
        .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_are_quoted_and_escaped() {
        assert_eq!(toml_string("a\"b\\c"), r#""a\"b\\c""#);
    }
}
