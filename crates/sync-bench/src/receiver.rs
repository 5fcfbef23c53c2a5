//! The receiver benchmark: [`sync_receiver::router`] served in-process on a loopback port over a
//! real queue with no consumer, and concurrent keep-alive HTTP clients posting signed Customer.io
//! reporting events, each with its own `event_id` (a ULID, as Customer.io sends), for a warm-up
//! and then a measured period. It runs once without the dedupe claim store and once with it, and
//! beside them the bare lapin loop of [`crate::bare`] on the same broker, so that the ratio
//! receiver/bare says how much of the broker's speed the receiver keeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sync_core::signature::sign_customerio;
use sync_core::{Direction, Readiness, Secret};
use sync_queue::claims::ClaimStore;
use sync_receiver::{AppState, ReceiverConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::RunQueue;
use crate::bare;
use crate::cli::{Backend, ReceiverArgs};
use crate::cpu::{self, CpuUse};
use crate::load::{self, Tally, Throughput, Window};
use crate::machine::Machine;
use crate::payload::ReportingBodies;
use crate::scratch::Scratch;

/// The endpoint token of the benchmark's receiver.
pub const ENDPOINT_TOKEN: &str = "bench-endpoint-token-0001";
/// The reporting webhook signing key of the benchmark's receiver.
pub const SIGNING_KEY: &str = "bench-signing-key";

/// The speed the receiver should keep, as a share of the bare broker's.
pub const TARGET_RATIO: f64 = 0.8;

/// People the events are spread over (it changes nothing in the receiver; it keeps bodies
/// realistic).
const PEOPLE: usize = 5_000;

/// Everything one `receiver` command measured.
#[derive(Clone, Debug, Serialize)]
pub struct ReceiverReport {
    pub machine: Machine,
    pub backend: Backend,
    pub clients: usize,
    pub body_bytes: usize,
    /// Warm-up and measured period of each round.
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub rounds: usize,
    /// The bare lapin publish loop (RabbitMQ only).
    pub bare: Option<Baseline>,
    pub runs: Vec<ReceiverRun>,
}

/// The bare lapin loop's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub publishers: usize,
    /// Confirm channels the publishers share.
    pub channels: usize,
    /// Confirmed messages, all rounds together.
    pub published: Throughput,
    pub per_second_by_round: Vec<f64>,
    /// Where the CPU went during the measured period.
    pub cpu: CpuUse,
    /// CPU microseconds per confirmed message, by component.
    pub cpu_micros_per_message: BTreeMap<String, f64>,
}

/// One receiver run.
#[derive(Clone, Debug, Serialize)]
pub struct ReceiverRun {
    /// Whether the dedupe claim store was on.
    pub claims: bool,
    /// Accepted (`202`) requests, all rounds together.
    pub accepted: Throughput,
    pub per_second_by_round: Vec<f64>,
    /// Messages in the work queue after each round, added up (RabbitMQ only); equals
    /// `accepted.total` when nothing was lost or queued twice.
    pub queued: Option<u32>,
    /// Accepted requests/s over the bare loop's messages/s, all rounds together.
    pub ratio_to_bare: Option<f64>,
    /// The same ratio in each round, against that round's bare loop.
    pub ratio_by_round: Option<Vec<f64>>,
    /// Where the CPU went during the measured period.
    pub cpu: CpuUse,
    /// CPU microseconds per accepted request, by component.
    pub cpu_micros_per_request: BTreeMap<String, f64>,
}

/// Run the benchmark as the arguments say: `rounds` times the bare loop, then each receiver run,
/// every one on a fresh queue, with the figures of each kind of run added up over the rounds.
pub async fn run(args: &ReceiverArgs) -> anyhow::Result<ReceiverReport> {
    let mut machine = Machine::at_start();
    let window = || Window::starting_now(args.warmup, args.duration);
    let rounds = args.rounds.max(1);
    let bare_publishers = args.bare_publishers.unwrap_or(args.clients).max(1);
    let bare_channels = args
        .bare_channels
        .unwrap_or(bare_publishers)
        .clamp(1, bare_publishers);
    let with_bare = args.backend == Backend::Amqp && !args.no_bare;
    let claim_runs = args.claims.runs();

    let mut bare_rounds = Rounds::default();
    let mut receiver_rounds: Vec<Rounds> = claim_runs.iter().map(|_| Rounds::default()).collect();
    for round in 1..=rounds {
        let timing = format!(
            "{} s warm-up, {} s measured",
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
        // The baseline first, on a prefix of its own.
        if with_bare {
            eprintln!(
                "round {round}/{rounds}: bare lapin loop, {bare_publishers} publishers on \
                 {}, {timing}",
                channels(bare_channels)
            );
            let run_queue = RunQueue::open(Backend::Amqp, &args.amqp_url, "bare").await?;
            let topology = run_queue
                .topology()
                .cloned()
                .context("the amqp backend has a topology")?;
            let measured = bare::run(
                &args.amqp_url,
                &topology,
                bare_publishers,
                bare_channels,
                args.body_bytes,
                window,
            )
            .await;
            run_queue.remove().await?;
            let (tally, cpu) = measured?;
            bare_rounds.add(tally, cpu, args.duration);
        }
        for (claims, so_far) in claim_runs.iter().zip(&mut receiver_rounds) {
            eprintln!(
                "round {round}/{rounds}: receiver on {}, claim store {}, {} clients, {timing}",
                args.backend.as_str(),
                if *claims { "on" } else { "off" },
                args.clients,
            );
            let (tally, cpu, queued) = run_once(args, *claims, window).await?;
            so_far.add(tally, cpu, args.duration);
            so_far.add_queued(queued);
        }
    }

    let bare = with_bare.then(|| {
        let per_second_by_round = bare_rounds.rates.clone();
        let (published, cpu, _) = bare_rounds.total();
        Baseline {
            publishers: bare_publishers,
            channels: bare_channels,
            cpu_micros_per_message: cpu.micros_per(published.measured),
            published,
            per_second_by_round,
            cpu,
        }
    });
    let runs = claim_runs
        .iter()
        .zip(receiver_rounds)
        .map(|(claims, rounds)| {
            let per_second_by_round = rounds.rates.clone();
            let ratio_by_round = bare.as_ref().map(|bare| {
                per_second_by_round
                    .iter()
                    .zip(&bare.per_second_by_round)
                    .map(|(receiver, bare)| receiver / bare.max(f64::EPSILON))
                    .collect()
            });
            let (accepted, cpu, queued) = rounds.total();
            let ratio_to_bare = bare
                .as_ref()
                .filter(|bare| bare.published.per_second > 0.0)
                .map(|bare| accepted.per_second / bare.published.per_second);
            ReceiverRun {
                claims: *claims,
                cpu_micros_per_request: cpu.micros_per(accepted.measured),
                accepted,
                per_second_by_round,
                queued,
                ratio_to_bare,
                ratio_by_round,
                cpu,
            }
        })
        .collect();

    machine.finish();
    Ok(ReceiverReport {
        machine,
        backend: args.backend,
        clients: args.clients,
        body_bytes: args.body_bytes,
        warmup_secs: args.warmup.as_secs_f64(),
        duration_secs: args.duration.as_secs_f64(),
        rounds,
        bare,
        runs,
    })
}

/// The rounds of one kind of run so far.
struct Rounds {
    tally: Tally,
    cpu: Vec<CpuUse>,
    measured: Duration,
    /// Messages each round left in its queue, added up; `None` once a round could not tell.
    queued: Option<u32>,
    /// Successes per second of each round.
    rates: Vec<f64>,
}

impl Default for Rounds {
    fn default() -> Self {
        Self {
            tally: Tally::default(),
            cpu: Vec::new(),
            measured: Duration::ZERO,
            queued: Some(0),
            rates: Vec::new(),
        }
    }
}

impl Rounds {
    fn add(&mut self, tally: Tally, cpu: CpuUse, measured: Duration) {
        let seconds = measured.as_secs_f64().max(f64::EPSILON);
        self.rates.push(tally.measured_ok as f64 / seconds);
        self.tally.merge(tally);
        self.cpu.push(cpu);
        self.measured += measured;
    }

    fn add_queued(&mut self, queued: Option<u32>) {
        self.queued = self.queued.zip(queued).map(|(so_far, more)| so_far + more);
    }

    /// Every round's successes over their summed measured time, their CPU, and what they queued.
    fn total(self) -> (Throughput, CpuUse, Option<u32>) {
        (
            self.tally.summary(self.measured),
            CpuUse::combine(&self.cpu),
            self.queued,
        )
    }
}

/// One receiver run on a fresh queue: the accepted requests, the CPU used, and the work
/// queue's depth after.
async fn run_once(
    args: &ReceiverArgs,
    claims: bool,
    window_of: impl FnOnce() -> Window,
) -> anyhow::Result<(Tally, CpuUse, Option<u32>)> {
    // The receiver gets a runtime of its own, as in the daemon, with one worker per core; the
    // load tasks stay on the benchmark's runtime, so their CPU can be told apart. The queue is
    // opened on the receiver's runtime, so the tasks its client spawns run there too.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.receiver_threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder
        .thread_name(cpu::RECEIVER_THREAD)
        .enable_all()
        .build()
        .context("cannot start the receiver's runtime")?;
    let (backend, url) = (args.backend, args.amqp_url.clone());
    let run_queue = runtime
        .spawn(async move { RunQueue::open(backend, &url, "receiver").await })
        .await
        .context("opening the queue panicked")??;

    // The claim file lives as long as this run; the folder goes when `claim_dir` drops.
    let claim_dir = if claims {
        Some(Scratch::new("claims")?)
    } else {
        None
    };
    let claims = match &claim_dir {
        Some(dir) => Some(
            ClaimStore::open(
                &dir.path().join("seen.sqlite3"),
                "bench",
                Duration::from_secs(7 * 24 * 3600),
            )
            .context("cannot open the claim store")?,
        ),
        None => None,
    };
    let state = AppState {
        config: Arc::new(receiver_config()),
        queue: run_queue.queue.clone(),
        readiness: Arc::new(Readiness::new()),
        metrics: None,
        claims,
    };

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let stop = CancellationToken::new();
    // Served as the daemon serves it: HTTP/1.1 with the request timeout as header timeout.
    let header_timeout = state.config.request_timeout;
    let server = runtime.spawn({
        let stop = stop.clone();
        let app = sync_receiver::router(state);
        async move {
            let listener = TcpListener::from_std(listener)?;
            sync_receiver::serve(listener, app, header_timeout, async move {
                stop.cancelled().await
            })
            .await;
            std::io::Result::Ok(())
        }
    });

    let loaded = load(args, address, window_of).await;

    stop.cancel();
    let served = server.await;
    let queued = run_queue.depth(Direction::Inbound).await;
    let removed = run_queue.remove().await;
    runtime.shutdown_background();
    served
        .context("the receiver task panicked")?
        .context("the receiver stopped serving")?;
    removed?;
    let (accepted, cpu) = loaded?;
    Ok((accepted, cpu, queued?))
}

/// The receiver's settings: defaults, the benchmark's token and signing key.
pub fn receiver_config() -> ReceiverConfig {
    ReceiverConfig {
        customerio_endpoint_token: Secret::new(ENDPOINT_TOKEN),
        customerio_signing_keys: vec![Secret::new(SIGNING_KEY)],
        ..ReceiverConfig::default()
    }
}

/// Post from `args.clients` keep-alive clients until the window ends.
async fn load(
    args: &ReceiverArgs,
    address: SocketAddr,
    window_of: impl FnOnce() -> Window,
) -> anyhow::Result<(Tally, CpuUse)> {
    let uri: Uri = format!("/v1/customerio/{ENDPOINT_TOKEN}/reporting")
        .parse()
        .context("the reporting path is a valid URI")?;
    let host = HeaderValue::from_str(&address.to_string()).context("an address is a valid host")?;
    // Customer.io's event ids are ULIDs: time-ordered, so the claim store's table grows at one
    // end, as it does in production.
    let id_len = ulid::Ulid::nil().to_string().len();

    let clients: Vec<Client> = (0..args.clients.max(1))
        .map(|task| Client {
            address,
            uri: uri.clone(),
            host: host.clone(),
            task,
            seq: 0,
            bodies: ReportingBodies::new(id_len, args.body_bytes),
        })
        .collect();

    let window = window_of();
    let (tally, cpu) = load::on_load_thread(window, move || async move {
        let mut tasks = JoinSet::new();
        for client in clients {
            tasks.spawn(client.post_until(window));
        }
        let mut tally = Tally::default();
        while let Some(joined) = tasks.join_next().await {
            tally.merge(joined.context("an HTTP client task panicked")?);
        }
        anyhow::Ok(tally)
    })
    .await?;
    let tally = tally?;
    if tally.total_ok == 0 {
        bail!("the receiver accepted nothing: {:?}", tally.errors);
    }
    Ok((tally, cpu))
}

/// One load task: a keep-alive HTTP/1.1 connection (hyper's connection-level client, driven in
/// the task itself) that posts one request at a time, and opens a new connection if the old one
/// breaks. A pooled client such as `reqwest` would spend several times more CPU per request, on
/// the cores the receiver and the broker need.
struct Client {
    address: SocketAddr,
    uri: Uri,
    host: HeaderValue,
    task: usize,
    /// Requests made so far; numbers each event.
    seq: u64,
    bodies: ReportingBodies,
}

impl Client {
    async fn post_until(mut self, window: Window) -> Tally {
        let mut tally = Tally::default();
        while window.running() {
            let connected = async {
                let stream = TcpStream::connect(self.address).await?;
                stream.set_nodelay(true)?;
                let handshake = http1::handshake(TokioIo::new(stream)).await;
                handshake.map_err(std::io::Error::other)
            };
            let (sender, connection) = match connected.await {
                Ok(connected) => connected,
                Err(_) => {
                    tally.error("connect");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // The connection makes progress only when polled, so it runs beside the requests in
            // this task; it ends once the requests stop and drop their sender.
            let requests = self.post_on(sender, &window, &mut tally);
            let (posted, _closed) = tokio::join!(requests, connection);
            if posted.is_err() {
                tally.error("transport");
            }
        }
        tally
    }

    /// Post on one connection until the window ends, or the connection fails.
    async fn post_on(
        &mut self,
        mut sender: http1::SendRequest<Full<Bytes>>,
        window: &Window,
        tally: &mut Tally,
    ) -> Result<(), hyper::Error> {
        while window.running() {
            sender.ready().await?;
            let request = self.next_request();
            let started = Instant::now();
            let answer = sender.send_request(request).await?;
            let status = answer.status().as_u16();
            // The answer is read to its end before the next request on this connection.
            let mut body = answer.into_body();
            while body.frame().await.transpose()?.is_some() {}
            match status {
                202 => tally.ok(window, started, Instant::now()),
                status => tally.error(format!("status {status}")),
            }
        }
        Ok(())
    }

    /// The next signed reporting event.
    fn next_request(&mut self) -> Request<Full<Bytes>> {
        self.seq += 1;
        let event_id = ulid::Ulid::new().to_string();
        let person = (self.task * 7_919 + self.seq as usize) % PEOPLE;
        let body = self.bodies.render(&event_id, person);
        let timestamp = (sync_core::time::now_ms() / 1000).to_string();
        let signature = sign_customerio(SIGNING_KEY, &timestamp, &body);

        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(header::HOST, self.host.clone());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in [
            ("x-cio-timestamp", timestamp),
            ("x-cio-signature", signature),
        ] {
            // Digits and hex digits are always valid header values.
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        }
        request
    }
}

impl ReceiverReport {
    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut lines = vec![
            format!(
                "receiver benchmark on {} ({} clients, {} B bodies, {} rounds of {} s warm-up and {} s measured)",
                self.backend.as_str(),
                self.clients,
                self.body_bytes,
                self.rounds,
                self.warmup_secs,
                self.duration_secs
            ),
            format!("  machine: {}", self.machine.summary()),
        ];
        if let Some(bare) = &self.bare {
            lines.push(format!(
                "  bare lapin loop ({} publishers, {}): {}",
                bare.publishers,
                channels(bare.channels),
                bare.published.line("messages")
            ));
            lines.push(format!(
                "    by round: {}",
                rates_line(&bare.per_second_by_round)
            ));
            lines.push(format!("    cpu: {}", bare.cpu.line()));
            lines.push(format!(
                "    cpu per message: {}",
                micros_line(&bare.cpu_micros_per_message)
            ));
        }
        for run in &self.runs {
            let label = if run.claims {
                "receiver, claims on: "
            } else {
                "receiver, claims off:"
            };
            lines.push(format!("  {label} {}", run.accepted.line("requests")));
            lines.push(format!(
                "    by round: {}",
                rates_line(&run.per_second_by_round)
            ));
            lines.push(format!("    cpu: {}", run.cpu.line()));
            lines.push(format!(
                "    cpu per request: {}",
                micros_line(&run.cpu_micros_per_request)
            ));
            if let Some(queued) = run.queued {
                lines.push(format!(
                    "    queued afterwards: {queued} (accepted in all: {})",
                    run.accepted.total
                ));
            }
            if let Some(ratio) = run.ratio_to_bare {
                let verdict = if ratio >= TARGET_RATIO {
                    "target met"
                } else {
                    "below target"
                };
                lines.push(format!(
                    "    ratio receiver/bare: {ratio:.2} ({verdict}: >= {TARGET_RATIO})"
                ));
                if let Some(by_round) = &run.ratio_by_round {
                    let ratios: Vec<String> =
                        by_round.iter().map(|ratio| format!("{ratio:.2}")).collect();
                    lines.push(format!("    ratio by round: {}", ratios.join(", ")));
                }
            }
        }
        lines.join("\n")
    }
}

/// `6012/s, 7410/s, 6530/s`.
fn rates_line(rates: &[f64]) -> String {
    let rates: Vec<String> = rates.iter().map(|rate| format!("{rate:.0}/s")).collect();
    rates.join(", ")
}

/// `broker 95 us, load 60 us, receiver 80 us`.
fn micros_line(micros: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = micros
        .iter()
        .filter(|(_, us)| **us > 0.0)
        .map(|(name, us)| format!("{name} {us:.0} us"))
        .collect();
    parts.join(", ")
}

fn channels(count: usize) -> String {
    match count {
        1 => "1 channel".to_owned(),
        _ => format!("{count} channels"),
    }
}
