//! The relay: the outbound consumer. It takes Chameleon webhooks and ready-made tour events off
//! `<prefix>.outbound`, maps them with [`sync_core::outbound`] into Customer.io person events and
//! sends them in Track API v2 batches within the client's rate budget (DESIGN §5). A `207` answer
//! fails only the operations it names; the others count as delivered. Each event's id is derived
//! from the source id, so a retry or a replay is counted once by Customer.io.
//!
//! What it does not own: the HTTP client and its budget (`customerio-api`), the mapping rules
//! (`sync-core`), and the subscribe-and-recover loop (`sync_queue::consumer`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use customerio_api::TrackClient;
use sync_core::outbound::{self, OutboundOptions, TrackEvent};
use sync_core::{Direction, Failure, Outcome, Readiness, RetryPolicy};
use sync_queue::batch::{BatchItem, BatchLimits, Batcher};
use sync_queue::consumer::{self, Handler};
use sync_queue::{Delivery, Queue};
use tokio_util::sync::CancellationToken;

/// The relay's settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub options: OutboundOptions,
    pub retry: RetryPolicy,
    /// Unsettled deliveries at once; at least `batch_size` so batches can fill.
    pub prefetch: u16,
    /// Events per Track v2 batch request.
    pub batch_size: usize,
    /// How long the first event of a batch waits for others.
    pub batch_linger: Duration,
}

impl RelayConfig {
    /// The consumer's prefetch: `prefetch`, raised to a whole batch so that batches can fill.
    pub fn window(&self) -> u16 {
        self.prefetch
            .max(u16::try_from(self.batch_size).unwrap_or(u16::MAX))
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            options: OutboundOptions::default(),
            retry: RetryPolicy::default(),
            prefetch: 64,
            batch_size: 100,
            batch_linger: Duration::from_millis(200),
        }
    }
}

/// Consume the outbound queue until `shutdown` fires, then drain.
pub async fn run(
    queue: Arc<dyn Queue>,
    client: TrackClient,
    config: RelayConfig,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let prefetch = config.window();
    let relay = Arc::new(Relay::new(client, config));
    consumer::run(
        queue,
        Direction::Outbound,
        prefetch,
        relay,
        readiness,
        shutdown,
    )
    .await;
}

/// The outbound [`Handler`].
pub struct Relay {
    config: Arc<RelayConfig>,
    batcher: Arc<Batcher<PendingEvent>>,
}

impl Relay {
    pub fn new(client: TrackClient, config: RelayConfig) -> Self {
        let config = Arc::new(config);
        let limits = BatchLimits {
            max_items: config.batch_size,
            max_bytes: customerio_api::MAX_BATCH_BYTES - 16 * 1024,
            max_deliveries: usize::from(config.window()),
            linger: config.batch_linger,
        };
        let flush_config = Arc::clone(&config);
        let batcher = Batcher::new(
            limits,
            Arc::new(move |items| Box::pin(send(client.clone(), Arc::clone(&flush_config), items))),
        );
        Self { config, batcher }
    }
}

#[async_trait]
impl Handler for Relay {
    async fn handle(&self, delivery: Delivery) {
        let envelope = &delivery.envelope;
        let mapped = outbound::map(envelope.source, &envelope.body, &self.config.options);
        let outcome = match mapped {
            Ok(Some(event)) => {
                let size = serde_json::to_vec(&customerio_api::batch_operation(&event))
                    .map_or(0, |bytes| bytes.len() + 1);
                if size > customerio_api::MAX_OP_BYTES {
                    Outcome::Dead(Failure::new(
                        "too_large",
                        None,
                        format!("event is {size} bytes, over Customer.io's 32 KB per operation"),
                    ))
                } else {
                    return self.batcher.push(PendingEvent {
                        event,
                        size,
                        delivery,
                    });
                }
            }
            Ok(None) => Outcome::Filtered {
                reason: "topic_not_relayed",
            },
            Err(err) => Outcome::Dead(Failure::new(err.reason(), None, err.to_string())),
        };
        consumer::settle(delivery, outcome, &self.config.retry).await;
    }

    async fn drain(&self) {
        self.batcher.drain().await;
    }
}

/// One event waiting for its batch.
struct PendingEvent {
    event: TrackEvent,
    size: usize,
    delivery: Delivery,
}

impl BatchItem for PendingEvent {
    fn key(&self) -> Option<&str> {
        None
    }

    fn absorb(&mut self, _other: Self) {}

    fn size(&self) -> usize {
        self.size
    }
}

/// Send one batch and settle every delivery in it.
async fn send(client: TrackClient, config: Arc<RelayConfig>, items: Vec<PendingEvent>) {
    let events: Vec<TrackEvent> = items.iter().map(|item| item.event.clone()).collect();
    let settlements: Vec<(Delivery, Outcome)> = match client.send_batch(&events).await {
        Ok(result) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let outcome = match result.failed.iter().find(|op| op.index == index) {
                    Some(op) => Outcome::Dead(Failure::new(
                        "upstream_rejected",
                        Some(207),
                        format!("{}: {}", op.reason, op.message),
                    )),
                    None => Outcome::Delivered,
                };
                (item.delivery, outcome)
            })
            .collect(),
        Err(err) => {
            let outcome = err.into_outcome();
            items
                .into_iter()
                .map(|item| (item.delivery, outcome.clone()))
                .collect()
        }
    };
    consumer::settle_all(settlements, &config.retry).await;
}
