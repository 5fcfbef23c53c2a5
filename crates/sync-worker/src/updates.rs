//! Profile and company updates on their way to Chameleon's batch endpoints. Several updates of
//! one uid (or email) in a batch become one item, the later source time winning key by key; the
//! batch answer's per-item errors dead-letter only the deliveries behind those items.

use std::sync::Arc;

use chameleon_api::ChameleonClient;
use serde_json::{Map, Value};
use sync_core::{Failure, Outcome};
use sync_queue::Delivery;
use sync_queue::batch::BatchItem;
use sync_queue::consumer;

use crate::WorkerConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    Profile,
    Company,
}

/// One batch item and every delivery it stands for.
pub struct PendingUpdate {
    key: Option<String>,
    body: Map<String, Value>,
    /// Source time (receipt) of the newest update merged in, unix milliseconds.
    newest: i64,
    size: usize,
    deliveries: Vec<Delivery>,
}

impl PendingUpdate {
    pub fn new(kind: UpdateKind, body: Map<String, Value>, delivery: Delivery) -> Self {
        let key = identity_key(kind, &body);
        Self {
            key,
            size: encoded_len(&body),
            newest: delivery.envelope.received_at,
            body,
            deliveries: vec![delivery],
        }
    }
}

impl BatchItem for PendingUpdate {
    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    fn absorb(&mut self, other: Self) {
        if other.newest >= self.newest {
            self.body.extend(other.body);
            self.newest = other.newest;
        } else {
            for (key, value) in other.body {
                self.body.entry(key).or_insert(value);
            }
        }
        self.size = encoded_len(&self.body);
        self.deliveries.extend(other.deliveries);
    }

    fn size(&self) -> usize {
        self.size
    }
}

/// Updates of the same record share a key: `uid` when present, else `email`.
fn identity_key(kind: UpdateKind, body: &Map<String, Value>) -> Option<String> {
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    match kind {
        UpdateKind::Profile => text("uid")
            .map(|uid| format!("uid:{uid}"))
            .or_else(|| text("email").map(|email| format!("email:{email}"))),
        UpdateKind::Company => text("uid").map(|uid| format!("uid:{uid}")),
    }
}

fn encoded_len(body: &Map<String, Value>) -> usize {
    serde_json::to_vec(body).map_or(0, |bytes| bytes.len() + 1)
}

/// Send one batch and settle every delivery in it.
pub async fn send(
    kind: UpdateKind,
    client: ChameleonClient,
    config: Arc<WorkerConfig>,
    items: Vec<PendingUpdate>,
) {
    let bodies: Vec<Map<String, Value>> = items.iter().map(|item| item.body.clone()).collect();
    let deliveries: usize = items.iter().map(|item| item.deliveries.len()).sum();
    tracing::debug!(
        ?kind,
        items = items.len(),
        deliveries,
        "sending an update batch"
    );
    let answer = match kind {
        UpdateKind::Profile => client.profile_batch(&bodies).await,
        UpdateKind::Company => client.company_batch(&bodies).await,
    };
    drop(bodies);
    tracing::debug!(?kind, ok = answer.is_ok(), "update batch answered");
    let coalesced = deliveries - items.len();
    metrics::counter!("ccsync_updates_coalesced_total").increment(coalesced as u64);

    let settlements: Vec<(Delivery, Outcome)> = match answer {
        Ok(answer) => items
            .into_iter()
            .enumerate()
            .flat_map(|(index, item)| {
                let outcome = match answer.errors.iter().find(|e| e.index == index) {
                    Some(error) => item_outcome(error.code, &error.message),
                    None => Outcome::Delivered,
                };
                item.deliveries
                    .into_iter()
                    .map(move |delivery| (delivery, outcome.clone()))
            })
            .collect(),
        Err(err) => {
            let outcome = err.into_outcome();
            items
                .into_iter()
                .flat_map(|item| item.deliveries)
                .map(|delivery| (delivery, outcome.clone()))
                .collect()
        }
    };
    consumer::settle_all(settlements, &config.retry).await;
}

/// A per-item error of a batch answer: transient codes are retried, the rest dead-lettered.
fn item_outcome(code: u16, message: &str) -> Outcome {
    let failure = |reason: &str| Failure::new(reason, Some(code), message.to_owned());
    match code {
        408 | 429 | 500..=599 => Outcome::Retry {
            after: None,
            failure: failure("upstream_unavailable"),
        },
        _ => Outcome::Dead(failure("upstream_rejected")),
    }
}
