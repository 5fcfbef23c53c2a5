//! The worker: the inbound consumer. It takes Customer.io payloads off `<prefix>.inbound`, maps
//! them with [`sync_core::inbound`] and makes the Chameleon calls (DESIGN §5): profile and company
//! updates gathered into coalesced batch requests, user events one request each, all within the
//! Chameleon client's shared rate budget. Every delivery ends settled: delivered, filtered,
//! retried later, or dead-lettered with its reason.
//!
//! What it does not own: the HTTP client and its budget (`chameleon-api`), the mapping rules
//! (`sync-core`), and the subscribe-and-recover loop (`sync_queue::consumer`).

mod updates;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chameleon_api::ChameleonClient;
use sync_core::inbound::{self, ChameleonCall, InboundOptions};
use sync_core::{Direction, Failure, Outcome, Readiness, RetryPolicy};
use sync_queue::batch::{BatchLimits, Batcher, GateFn};
use sync_queue::claims::ClaimStore;
use sync_queue::consumer::{self, Handler};
use sync_queue::{Delivery, Envelope, Queue};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::updates::{PendingUpdate, UpdateKind};

/// The worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub options: InboundOptions,
    pub retry: RetryPolicy,
    /// Unsettled deliveries at once; at least `batch_size` so batches can fill.
    pub prefetch: u16,
    /// Profile or company updates per batch request.
    pub batch_size: usize,
    /// How long the first update of a batch waits for others.
    pub batch_linger: Duration,
}

impl WorkerConfig {
    /// The consumer's prefetch: `prefetch`, raised to a whole batch so that batches can fill.
    pub fn window(&self) -> u16 {
        self.prefetch
            .max(u16::try_from(self.batch_size).unwrap_or(u16::MAX))
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            options: InboundOptions::default(),
            retry: RetryPolicy::default(),
            prefetch: 64,
            batch_size: 500,
            batch_linger: Duration::from_secs(1),
        }
    }
}

/// Consume the inbound queue until `shutdown` fires, then drain. `delivered` records which
/// events were sent, so that a redelivered one is not sent twice (Chameleon events are not
/// idempotent); without it a redelivery after a lost acknowledgement is sent again.
pub async fn run(
    queue: Arc<dyn Queue>,
    client: ChameleonClient,
    config: WorkerConfig,
    delivered: Option<ClaimStore>,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) {
    let prefetch = config.window();
    let worker = Arc::new(Worker::new(client, config, delivered));
    consumer::run(
        queue,
        Direction::Inbound,
        prefetch,
        worker,
        readiness,
        shutdown,
    )
    .await;
}

/// The inbound [`Handler`].
pub struct Worker {
    client: ChameleonClient,
    config: Arc<WorkerConfig>,
    profiles: Arc<Batcher<PendingUpdate>>,
    companies: Arc<Batcher<PendingUpdate>>,
    events: TaskTracker,
    delivered: Option<ClaimStore>,
    /// One event send per delivered key at a time, so that copies wait for each other.
    sending: Arc<KeyLocks>,
}

/// Per-key async locks, dropped from the map once nobody holds or waits for them.
#[derive(Default)]
struct KeyLocks {
    held: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyLocks {
    /// Run `work` holding `key`'s lock; it learns whether another holder went first.
    async fn with<T>(&self, key: &str, work: impl AsyncFnOnce(bool) -> T) -> T {
        let lock = Arc::clone(
            self.held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key.to_owned())
                .or_default(),
        );
        let (guard, waited) = match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (Arc::clone(&lock).lock_owned().await, true),
        };
        let result = work(waited).await;
        drop(guard);
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's reference and this one: nobody else holds or waits.
        if held
            .get(key)
            .is_some_and(|entry| Arc::strong_count(entry) == 2)
        {
            held.remove(key);
        }
        result
    }
}

impl Worker {
    pub fn new(
        client: ChameleonClient,
        config: WorkerConfig,
        delivered: Option<ClaimStore>,
    ) -> Self {
        let config = Arc::new(config);
        let limits = BatchLimits {
            max_items: config.batch_size,
            max_bytes: chameleon_api::MAX_BATCH_BYTES - 64 * 1024,
            max_deliveries: usize::from(config.window()),
            linger: config.batch_linger,
        };
        // A batch whose linger time is up waits for Chameleon's budget to be ready and takes
        // what arrived meanwhile, rather than spending a paced request on a partial batch.
        let gate: GateFn = {
            let client = client.clone();
            Arc::new(move || {
                let client = client.clone();
                Box::pin(async move { client.ready().await })
            })
        };
        let batcher = |kind: UpdateKind| {
            let client = client.clone();
            let config = Arc::clone(&config);
            Batcher::gated(
                limits,
                Arc::new(move |items| {
                    Box::pin(updates::send(
                        kind,
                        client.clone(),
                        Arc::clone(&config),
                        items,
                    ))
                }),
                Arc::clone(&gate),
            )
        };
        Self {
            profiles: batcher(UpdateKind::Profile),
            companies: batcher(UpdateKind::Company),
            client,
            config,
            events: TaskTracker::new(),
            delivered,
            sending: Arc::default(),
        }
    }
}

#[async_trait]
impl Handler for Worker {
    async fn handle(&self, delivery: Delivery) {
        let envelope = &delivery.envelope;
        let mapped = inbound::map(envelope.source, &envelope.body, &self.config.options);

        let mapped = match mapped {
            Ok(Some(mapped)) => mapped,
            Ok(None) => {
                let outcome = Outcome::Filtered {
                    reason: "metric_not_forwarded",
                };
                return consumer::settle(delivery, outcome, &self.config.retry).await;
            }
            Err(err) => {
                let outcome = Outcome::Dead(Failure::new(err.reason(), None, err.to_string()));
                return consumer::settle(delivery, outcome, &self.config.retry).await;
            }
        };
        if mapped.truncated > 0 {
            metrics::counter!("ccsync_values_truncated_total").increment(mapped.truncated as u64);
        }

        match mapped.call {
            ChameleonCall::Profile(body) => {
                self.profiles
                    .push(PendingUpdate::new(UpdateKind::Profile, body, delivery));
            }
            ChameleonCall::Company(body) => {
                self.companies
                    .push(PendingUpdate::new(UpdateKind::Company, body, delivery));
            }
            ChameleonCall::Event(body) => {
                // Events have no batch form; the client's budget paces them.
                let client = self.client.clone();
                let config = Arc::clone(&self.config);
                let delivered = self.delivered.clone();
                let sending = Arc::clone(&self.sending);
                self.events.spawn(async move {
                    let key = delivered_key(&delivery.envelope);
                    let outcome = sending
                        .with(&key, async |waited| {
                            send_event(&client, delivered.as_ref(), &delivery, &key, waited, &body)
                                .await
                        })
                        .await;
                    consumer::settle(delivery, outcome, &config.retry).await;
                });
            }
        }
    }

    async fn drain(&self) {
        self.profiles.drain().await;
        self.companies.drain().await;
        self.events.close();
        self.events.wait().await;
    }
}

/// Send one event unless it was sent before, and record it once Chameleon accepted it. Copies
/// reach the worker as a redelivery whose acknowledgement was lost (same message id; after a
/// lost connection, possibly while the first delivery still waits for its turn to be sent), and
/// as a provider's retry after the receiver answered `503` to a publish that went through late
/// (a new message id, the same provider event id). Both are found by [`delivered_key`], and the
/// caller runs the copies of one key one after the other (`waited`: another went first).
async fn send_event(
    client: &ChameleonClient,
    delivered: Option<&ClaimStore>,
    delivery: &Delivery,
    key: &str,
    waited: bool,
    body: &serde_json::Map<String, serde_json::Value>,
) -> Outcome {
    let message_id = &delivery.envelope.message_id;
    // A fresh copy that nobody sent before it cannot have been sent already: skip the lookup.
    let may_be_a_copy =
        waited || delivery.redelivered || delivery.envelope.provider_event_id.is_some();
    if let Some(log) = delivered
        && may_be_a_copy
        && log.was_delivered(key).await.unwrap_or(false)
    {
        return Outcome::Filtered {
            reason: "already_delivered",
        };
    }
    match client.send_event(body).await {
        Ok(()) => {
            if let Some(log) = delivered
                && let Err(err) = log.mark_delivered(key).await
            {
                tracing::warn!(%message_id, cause = %err, "cannot record a delivered event");
            }
            Outcome::Delivered
        }
        Err(err) => err.into_outcome(),
    }
}

/// The name an event is recorded under once sent: its source and the provider's event id when
/// the webhook carried one, else the message id.
fn delivered_key(envelope: &Envelope) -> String {
    match &envelope.provider_event_id {
        Some(id) => format!("{}:{id}", envelope.source.routing_key()),
        None => envelope.message_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_of_a_key_take_turns_and_the_later_one_knows_it_waited() {
        let locks = Arc::new(KeyLocks::default());
        let (entered, first_inside) = tokio::sync::oneshot::channel();
        let (release, may_leave) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move {
                locks
                    .with("event-1", async |waited| {
                        let _ = entered.send(());
                        let _ = may_leave.await;
                        waited
                    })
                    .await
            }
        });
        first_inside.await.unwrap();
        let second = tokio::spawn({
            let locks = Arc::clone(&locks);
            async move { locks.with("event-1", async |waited| waited).await }
        });
        // Another key is not held up.
        assert!(!locks.with("event-2", async |waited| waited).await);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished(), "the copy ran beside the first");
        release.send(()).unwrap();
        assert!(!first.await.unwrap());
        assert!(second.await.unwrap(), "the copy did not know it waited");
        assert!(
            locks.held.lock().unwrap().is_empty(),
            "locks are left behind"
        );
    }
}
