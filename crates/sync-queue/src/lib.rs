//! The durable queue between the receiver and the two consumers (DESIGN §4).
//!
//! [`Queue`] is the whole contract: publish with confirmation, consume with ack / retry-later /
//! dead-letter, and the operator's view of dead letters (list, replay, purge). Two backends give
//! the same behaviour:
//! - [`amqp`]: RabbitMQ through lapin, for production and several replicas;
//! - [`embedded`]: one SQLite file, the default when no broker is configured.
//!
//! [`consumer`] is the subscribe-and-recover loop that the worker and the relay share, and
//! [`batch`] gathers their deliveries into upstream batches. [`claims`] remembers provider event
//! ids so that a provider's retry is not queued twice.
//!
//! What this crate does not do: decide whether a delivery succeeded, or how long to wait before a
//! retry. Consumers hand it a [`Settlement`] and it carries the instruction out.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::Serialize;
pub use sync_core::{Direction, Envelope, Failure, Settlement, Source};

pub mod amqp;
pub mod batch;
pub mod claims;
pub mod consumer;
pub mod embedded;
mod telemetry;

/// A failure of the queue itself (not of a message's delivery).
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker or database cannot be reached, or the call timed out: try again later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The queue refused the message (nack, unroutable, full).
    #[error("queue refused the message: {0}")]
    Refused(String),
    /// A consumer stream ended or broke; the consumer should resubscribe.
    #[error("consumer stream ended: {0}")]
    ConsumerEnded(String),
    /// Anything else (corrupt data, bad configuration).
    #[error("queue error: {0}")]
    Other(String),
}

/// One message handed to a consumer. It stays reserved until it is settled; a consumer that dies
/// first gives it back to the queue (RabbitMQ redelivery, or an expired embedded lease).
pub struct Delivery {
    pub envelope: Envelope,
    /// True when an earlier delivery of this very copy was not settled (consumer crash).
    pub redelivered: bool,
    settle: Box<dyn Settle>,
}

impl Delivery {
    pub fn new(envelope: Envelope, redelivered: bool, settle: Box<dyn Settle>) -> Self {
        Self {
            envelope,
            redelivered,
            settle,
        }
    }

    /// Carry out the settlement: ack, or queue a retry copy / a dead letter and then ack.
    pub async fn settle(self, settlement: Settlement) -> Result<(), QueueError> {
        self.settle.settle(self.envelope, settlement).await
    }
}

/// How a backend settles one delivery. Retry and dead-letter copies are confirmed before the
/// original is acknowledged, so a crash in between makes a duplicate, never a loss.
#[async_trait]
pub trait Settle: Send + Sync {
    async fn settle(
        self: Box<Self>,
        envelope: Envelope,
        settlement: Settlement,
    ) -> Result<(), QueueError>;
}

/// The messages of one work queue, as they become due.
pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, QueueError>> + Send>>;

/// A dead letter as operators see it.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    #[serde(skip)]
    pub envelope: Envelope,
    pub reason: String,
    pub status: Option<u16>,
    pub error: String,
    /// When it was dead-lettered, unix milliseconds.
    pub dead_at: i64,
}

/// Which dead letters an operator means. An empty filter means all of them.
#[derive(Clone, Debug, Default)]
pub struct DeadFilter {
    /// Message ids (ULIDs); empty means any.
    pub ids: Vec<String>,
    pub reason: Option<String>,
    pub source: Option<Source>,
    /// Dead-lettered at or after, unix milliseconds.
    pub since: Option<i64>,
    /// Dead-lettered before, unix milliseconds.
    pub until: Option<i64>,
}

impl DeadFilter {
    pub fn matches(&self, dead: &DeadLetter) -> bool {
        (self.ids.is_empty() || self.ids.contains(&dead.envelope.message_id))
            && self.reason.as_ref().is_none_or(|r| *r == dead.reason)
            && self.source.is_none_or(|s| s == dead.envelope.source)
            && self.since.is_none_or(|t| dead.dead_at >= t)
            && self.until.is_none_or(|t| dead.dead_at < t)
    }
}

/// The queue contract shared by both backends.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Durably enqueue a message on its direction's work queue. Returns only once the queue has
    /// confirmed it (RabbitMQ publisher confirm and routed; SQLite transaction committed).
    async fn publish(&self, envelope: &Envelope) -> Result<(), QueueError>;

    /// Consume a direction's work queue with at most `prefetch` unsettled messages.
    async fn consume(
        &self,
        direction: Direction,
        prefetch: u16,
    ) -> Result<DeliveryStream, QueueError>;

    /// The dead letters of a direction that match the filter, oldest first.
    async fn dead_letters(
        &self,
        direction: Direction,
        filter: &DeadFilter,
    ) -> Result<Vec<DeadLetter>, QueueError>;

    /// Put matching dead letters back on the work queue with the same message id and the attempt
    /// count restarted. At most `rate` per second when given. Returns how many were replayed.
    async fn replay(
        &self,
        direction: Direction,
        filter: &DeadFilter,
        rate: Option<u32>,
    ) -> Result<usize, QueueError>;

    /// Delete matching dead letters. Returns how many were deleted.
    async fn purge(&self, direction: Direction, filter: &DeadFilter) -> Result<usize, QueueError>;

    /// Whether the queue is reachable now (for `/readyz`).
    async fn check(&self) -> Result<(), QueueError>;

    /// Close connections cleanly.
    async fn close(&self);
}

/// Sleep between replayed messages so that `rate` per second is not exceeded.
pub(crate) fn replay_pause(rate: Option<u32>) -> Option<Duration> {
    rate.filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)))
}
