//! A receiver under test: the real router over the embedded SQLite queue and a claim store in a
//! temporary folder, served on `127.0.0.1:0` with `sync_receiver::serve`, the way the daemon serves it.
//! Also the look into the queue that tells whether anything was enqueued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sync_core::{Direction, Envelope, Readiness, Secret, Settlement};
use sync_queue::claims::ClaimStore;
use sync_queue::embedded::{EmbeddedConfig, EmbeddedQueue};
use sync_queue::{DeadFilter, Queue};
use sync_receiver::{AppState, ReceiverConfig, router};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Customer.io endpoint token in the paths.
pub const TOKEN: &str = "tok-7Hq2xV9pLm";

/// The Customer.io reporting webhook signing key.
pub const CIO_KEY: &str = "test-signing-key";

/// The Chameleon webhook secret.
pub const CHAMELEON_SECRET: &str = "test-webhook-secret";

/// How long the queue is watched for a message that should not be there.
const QUIET: Duration = Duration::from_millis(500);

/// How long a message that should be there may take to show up on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// Receiver settings with signing on for both providers.
pub fn config(max_body_bytes: usize, request_timeout: Duration) -> ReceiverConfig {
    ReceiverConfig {
        max_body_bytes,
        request_timeout,
        customerio_endpoint_token: Secret::new(TOKEN),
        customerio_signing_keys: vec![Secret::new("a-rotated-out-key"), Secret::new(CIO_KEY)],
        chameleon_webhook_secrets: vec![Secret::new(CHAMELEON_SECRET)],
        ..ReceiverConfig::default()
    }
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub config: Arc<ReceiverConfig>,
    pub queue: Arc<EmbeddedQueue>,
    server: JoinHandle<()>,
    _dir: TempDir,
}

impl Receiver {
    pub async fn start(config: ReceiverConfig) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary folder for the queue");
        let queue = EmbeddedQueue::open(EmbeddedConfig {
            path: dir.path().join("queue.sqlite3"),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            delivery_limit: 10,
            ..EmbeddedConfig::default()
        })
        .await
        .expect("open the embedded queue");
        let queue = Arc::new(queue);
        let claims = ClaimStore::open(
            &dir.path().join("claims.sqlite3"),
            "receiver-it",
            Duration::from_secs(3600),
        )
        .expect("open the claim store");
        let config = Arc::new(config);

        let app = router(AppState {
            config: config.clone(),
            queue: queue.clone(),
            readiness: Arc::new(Readiness::new()),
            metrics: None,
            claims: Some(claims),
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("the bound address");
        let header_timeout = config.request_timeout;
        let server = tokio::spawn(async move {
            sync_receiver::serve(listener, app, header_timeout, std::future::pending()).await;
        });

        Self {
            addr,
            config,
            queue,
            server,
            _dir: dir,
        }
    }

    /// Every message waiting on a direction's work queue, taken off it. Stops looking once the
    /// queue has been quiet for a while, so an empty answer costs [`QUIET`].
    pub async fn take_queued(&self, direction: Direction) -> Vec<Envelope> {
        let mut stream = self
            .queue
            .consume(direction, 64)
            .await
            .expect("consume the work queue");
        let mut taken = Vec::new();
        while let Ok(Some(item)) = tokio::time::timeout(QUIET, stream.next()).await {
            let delivery = item.expect("a delivery, not a queue error");
            taken.push(delivery.envelope.clone());
            delivery
                .settle(Settlement::Ack)
                .await
                .expect("acknowledge the delivery");
        }
        taken
    }

    /// Wait for exactly one message on a direction's work queue and return it, failing if any
    /// other message is there too.
    pub async fn take_only(&self, direction: Direction) -> Envelope {
        let mut stream = self
            .queue
            .consume(direction, 64)
            .await
            .expect("consume the work queue");
        let first = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .unwrap_or_else(|_| panic!("nothing reached the {direction} queue"))
            .expect("the stream is open")
            .expect("a delivery, not a queue error");
        let envelope = first.envelope.clone();
        first.settle(Settlement::Ack).await.expect("acknowledge");
        if let Ok(Some(item)) = tokio::time::timeout(QUIET, stream.next()).await {
            let extra = item.map(|d| d.envelope.body);
            panic!("a second message was on the {direction} queue: {extra:?}");
        }
        envelope
    }

    /// Dead letters of a direction (the receiver should never make any).
    pub async fn dead_letters(&self, direction: Direction) -> usize {
        self.queue
            .dead_letters(direction, &DeadFilter::default())
            .await
            .expect("list dead letters")
            .len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
