//! Test harness: a daemon running in-process on its own queue prefix, the sandbox as both
//! upstreams, signing helpers, and a TCP proxy that can cut the daemon off from the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cio_chameleon_sync::serve::{self, Roles};
use cio_chameleon_sync::settings::{Backend, Settings};
use serde_json::Value;
use sync_core::Secret;
use sync_core::signature::{sign_chameleon, sign_customerio};
use sync_sandbox::{Sandbox, SandboxConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const BROKER: &str = "127.0.0.1:5672";
pub const TOKEN: &str = "test-endpoint-token-0001";
pub const SIGNING_KEY: &str = "test-signing-key";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret";
pub const ACCOUNT_SECRET: &str = "test-account-secret";
pub const SITE_ID: &str = "test-site";
pub const API_KEY: &str = "test-api-key";

/// Tests that use the broker hold a shared guard; the broker-restart test holds it alone, so
/// that stopping RabbitMQ never pulls the rug from under another test in this binary.
static BROKER_USE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub type BrokerGuard = tokio::sync::RwLockReadGuard<'static, ()>;

/// Fail loudly when the broker is missing; hold the guard for the whole test.
pub async fn require_broker() -> BrokerGuard {
    let guard = BROKER_USE.read().await;
    check_broker().await;
    guard
}

/// The broker to oneself, for a test that stops and starts it.
pub async fn exclusive_broker() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    let guard = BROKER_USE.write().await;
    check_broker().await;
    guard
}

async fn check_broker() {
    if TcpStream::connect(BROKER).await.is_err() {
        panic!(
            "RabbitMQ is not reachable at {BROKER}: start it with `rabbitmq-server -detached` \
             (guest/guest on the default vhost)"
        );
    }
}

pub fn unique_prefix() -> String {
    format!(
        "ccsync-test-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

pub fn payload(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/payloads")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// A free loopback port.
pub async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Which queue the daemon uses.
#[derive(Clone, Debug)]
pub enum QueueKind {
    /// RabbitMQ at this address (the broker itself, or a proxy in front of it).
    Amqp(String),
    Embedded(PathBuf),
}

/// The daemon under test and its sandbox.
pub struct Daemon {
    pub base: String,
    pub sandbox: Sandbox,
    pub settings: Settings,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _broker: Option<BrokerGuard>,
}

/// Settings for a test daemon on `queue`, with both upstreams at `sandbox`.
pub fn settings(
    queue: QueueKind,
    prefix: &str,
    sandbox: SocketAddr,
    listen: SocketAddr,
) -> Settings {
    let mut s = Settings::default();
    s.server.listen = listen;
    s.server.shutdown_grace = Duration::from_secs(10);
    match queue {
        QueueKind::Amqp(addr) => {
            s.queue.backend = Some(Backend::Amqp);
            s.queue.amqp_url = Some(Secret::new(format!("amqp://guest:guest@{addr}/%2f")));
        }
        QueueKind::Embedded(path) => {
            s.queue.backend = Some(Backend::Embedded);
            s.queue.path = path;
            s.queue.lease = Duration::from_secs(5);
        }
    }
    s.queue.prefix = prefix.to_owned();
    s.queue.retry_tiers = vec![Duration::from_secs(1).into(), Duration::from_secs(3).into()];
    s.queue.operation_timeout = Duration::from_secs(3);
    s.customerio.endpoint_token = Secret::new(TOKEN);
    s.customerio.signing_keys = vec![Secret::new(SIGNING_KEY)];
    s.customerio.track_url = Some(format!("http://{sandbox}"));
    s.customerio.site_id = SITE_ID.into();
    s.customerio.api_key = Secret::new(API_KEY);
    s.customerio.batch_size = 50;
    s.chameleon.api_url = format!("http://{sandbox}");
    s.chameleon.account_secret = Secret::new(ACCOUNT_SECRET);
    s.chameleon.webhook_secrets = vec![Secret::new(WEBHOOK_SECRET)];
    s.chameleon.requests_per_minute = 6000;
    s.chameleon.max_in_flight = 4;
    s.chameleon.batch_linger = Duration::from_millis(200);
    s.delivery.initial_delay = Duration::from_secs(1);
    s.delivery.max_delay = Duration::from_secs(2);
    s.delivery.jitter = 0.0;
    s.delivery.request_timeout = Duration::from_secs(5);
    s
}

impl Daemon {
    /// A daemon on the real broker with a fresh prefix.
    pub async fn amqp() -> Daemon {
        let broker = require_broker().await;
        let mut daemon = Self::start(QueueKind::Amqp(BROKER.into()), |_| {}).await;
        daemon._broker = Some(broker);
        daemon
    }

    /// A daemon on `queue`; `adjust` may change settings before start. On RabbitMQ the caller
    /// holds [`require_broker`]'s guard.
    pub async fn start(queue: QueueKind, adjust: impl FnOnce(&mut Settings)) -> Daemon {
        let daemon = Self::start_without_waiting(queue, adjust).await;
        daemon.wait_ready().await;
        daemon
    }

    /// As [`Daemon::start`], without waiting for `/readyz`.
    pub async fn start_without_waiting(
        queue: QueueKind,
        adjust: impl FnOnce(&mut Settings),
    ) -> Daemon {
        // `RUST_LOG=...` shows the daemon's logs with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let (sandbox, sandbox_addr) = Sandbox::spawn(SandboxConfig {
            chameleon_account_secret: ACCOUNT_SECRET.into(),
            customerio_site_id: SITE_ID.into(),
            customerio_api_key: API_KEY.into(),
            chameleon_requests_per_minute: None,
            customerio_requests_per_second: None,
        })
        .await
        .unwrap();
        // The daemon's files (embedded queue, seen ids) live in a folder of the test's own.
        let dir = tempfile::tempdir().unwrap();
        let queue = match queue {
            QueueKind::Embedded(path) if path.as_os_str().is_empty() => {
                QueueKind::Embedded(dir.path().join("queue.sqlite3"))
            }
            other => other,
        };
        let listen = free_addr().await;
        let mut settings = settings(queue, &unique_prefix(), sandbox_addr, listen);
        settings.dedupe.path = Some(dir.path().join("seen.sqlite3"));
        adjust(&mut settings);
        let mut daemon = Daemon {
            base: format!("http://{listen}"),
            sandbox,
            settings,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            shutdown: CancellationToken::new(),
            task: None,
            _dir: dir,
            _broker: None,
        };
        daemon.spawn();
        daemon
    }

    fn spawn(&mut self) {
        self.shutdown = CancellationToken::new();
        self.task = Some(tokio::spawn(serve::run_until(
            self.settings.clone(),
            Roles::ALL,
            None,
            self.shutdown.clone(),
        )));
    }

    /// Whether the daemon's task has ended (it failed, or was stopped).
    pub fn has_ended(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    pub async fn wait_ready(&self) {
        let task = self.task.as_ref();
        wait_ready(&self.http, &self.base, || {
            task.is_some_and(JoinHandle::is_finished)
        })
        .await;
    }

    /// Stop (drain) and return the daemon's result.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.unwrap(),
            None => Ok(()),
        }
    }

    pub async fn post_customerio(&self, route: &str, body: &[u8]) -> reqwest::Response {
        let timestamp = (sync_core::time::now_ms() / 1000).to_string();
        self.http
            .post(format!("{}/v1/customerio/{TOKEN}/{route}", self.base))
            .header("content-type", "application/json")
            .header("x-cio-timestamp", &timestamp)
            .header(
                "x-cio-signature",
                sign_customerio(SIGNING_KEY, &timestamp, body),
            )
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Post a Chameleon webhook re-stamped with `sent_at` = now, signed.
    pub async fn post_chameleon(&self, body: &[u8]) -> reqwest::Response {
        let body = restamp(body);
        self.http
            .post(format!("{}/v1/chameleon/webhooks", self.base))
            .header("content-type", "application/json")
            .header(
                "x-chameleon-signature",
                sign_chameleon(WEBHOOK_SECRET, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Daemon {
    /// Stop the daemon, and on RabbitMQ delete its queues even when the test failed before its
    /// own clean-up (the test's runtime may be unwinding: a thread of its own does it).
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.settings.queue.effective_backend() != Backend::Amqp {
            return;
        }
        let queues = sync_queue::amqp::Topology::new(
            self.settings.queue.prefix.clone(),
            &self.settings.queue.retry_tiers(),
            self.settings.queue.delivery_limit,
        )
        .queues();
        let exchange = self.settings.queue.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(delete_queues(&exchange, &queues));
        });
        let _ = cleanup.join();
    }
}

/// Delete `queues` and the exchange named `exchange`, if they exist.
async fn delete_queues(exchange: &str, queues: &[String]) {
    let Ok(conn) = lapin::Connection::connect(
        &format!("amqp://guest:guest@{BROKER}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    else {
        return;
    };
    let Ok(channel) = conn.create_channel().await else {
        return;
    };
    for name in queues {
        let _ = channel
            .queue_delete(
                name.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = channel
        .exchange_delete(
            exchange.into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// A Chameleon webhook body with `sent_at` set to now, as a fresh delivery would carry.
pub fn restamp(body: &[u8]) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(body).unwrap();
    value["sent_at"] = Value::String(sync_core::time::format_ms(sync_core::time::now_ms()));
    serde_json::to_vec(&value).unwrap()
}

/// Wait until `{base}/readyz` answers 200; panic if `stopped` says the daemon is gone first.
pub async fn wait_ready(http: &reqwest::Client, base: &str, mut stopped: impl FnMut() -> bool) {
    for _ in 0..200 {
        if let Ok(answer) = http.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return;
        }
        assert!(!stopped(), "the daemon stopped before it was ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon did not become ready within 20 s");
}

/// Remove every queue and the exchange under `prefix`, for a daemon the test ran as a child
/// process (an in-process [`Daemon`] cleans up when dropped).
pub async fn delete_topology(prefix: &str, tiers: &[&str]) {
    let mut names = Vec::new();
    for direction in ["inbound", "outbound"] {
        names.push(format!("{prefix}.{direction}"));
        names.push(format!("{prefix}.{direction}.dead"));
        names.extend(
            tiers
                .iter()
                .map(|tier| format!("{prefix}.{direction}.retry.{tier}")),
        );
    }
    delete_queues(prefix, &names).await;
}

/// What the proxy in front of the broker does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProxyMode {
    /// Forward both ways.
    Up,
    /// Keep connections open but forward nothing, like a partitioned network.
    Stall,
    /// Close every connection (and drop what a stall held back) and refuse new ones.
    Down,
}

/// A TCP proxy to the broker that a test can stall, cut and restore.
pub struct BrokerProxy {
    pub addr: SocketAddr,
    mode: tokio::sync::watch::Sender<ProxyMode>,
}

impl BrokerProxy {
    pub async fn start() -> BrokerProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, modes) = tokio::sync::watch::channel(ProxyMode::Up);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *modes.borrow() == ProxyMode::Down {
                    drop(client);
                    continue;
                }
                let modes = modes.clone();
                tokio::spawn(async move {
                    let Ok(broker) = TcpStream::connect(BROKER).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (broker_read, broker_write) = broker.into_split();
                    tokio::select! {
                        _ = pump(client_read, broker_write, modes.clone()) => {}
                        _ = pump(broker_read, client_write, modes.clone()) => {}
                    }
                });
            }
        });
        BrokerProxy { addr, mode }
    }

    /// Hold every byte back without closing anything.
    pub fn stall(&self) {
        self.mode.send_replace(ProxyMode::Stall);
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.mode.send_replace(ProxyMode::Down);
    }

    pub fn restore(&self) {
        self.mode.send_replace(ProxyMode::Up);
    }
}

/// Copy one direction of a proxied connection, obeying the mode; returns when either side
/// closes or the proxy goes down.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut modes: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = modes.wait_for(|m| *m == ProxyMode::Down) => return,
        };
        let Ok(n) = read else { return };
        if n == 0 {
            return;
        }
        // A stall keeps the bytes here; going down drops them.
        match modes.wait_for(|m| *m != ProxyMode::Stall).await.map(|m| *m) {
            Ok(ProxyMode::Up) => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Poll `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}
