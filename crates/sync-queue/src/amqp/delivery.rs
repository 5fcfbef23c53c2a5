//! Consuming a work queue: a stream of deliveries on a channel of the consuming connection, and
//! how each delivery is settled. A retry or a dead letter is a confirmed copy published first and
//! an ack of the original after, so a crash in between duplicates a message and never loses one.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel, Consumer};
use sync_core::time::now_ms;
use sync_core::{Direction, Envelope, Settlement};
use tokio::time::timeout_at;

use super::acks::Acks;
use super::link::unavailable;
use super::publisher::Route;
use super::{Shared, codec};
use crate::telemetry;
use crate::{Delivery, DeliveryStream, QueueError, Settle};

/// Subscribe to a direction's work queue with at most `prefetch` (at least 1) unsettled messages.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    direction: Direction,
    prefetch: u16,
) -> Result<DeliveryStream, QueueError> {
    let deadline = shared.deadline();
    let queue = shared.topology.work_queue(direction);
    let connection = shared.consumer_link.connection(deadline).await?;

    let subscribed = timeout_at(deadline, async {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await?;
        let tag = format!("{queue}.{}", ulid::Ulid::new());
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    })
    .await;
    let (channel, consumer) = match subscribed {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(error)) => return Err(unavailable("subscribing to the work queue", &error)),
        Err(_) => {
            return Err(QueueError::Unavailable(format!(
                "subscribing to {queue} timed out"
            )));
        }
    };
    tracing::debug!(%queue, prefetch, "consumer subscribed");

    let subscription = Subscription {
        acks: Acks::start(shared.operation_timeout),
        _channel: channel,
        consumer,
        shared,
        direction,
        queue,
    };
    let deliveries = futures::stream::unfold(Some(subscription), |subscription| async move {
        let mut subscription = subscription?;
        let item = subscription.next().await;
        let keep_going = item.is_ok();
        Some((item, keep_going.then_some(subscription)))
    });
    Ok(Box::pin(deliveries))
}

/// One subscription. It owns its channel: dropping the stream closes the channel, and the broker
/// puts every unsettled message back on the queue.
struct Subscription {
    acks: Arc<Acks>,
    _channel: Channel,
    consumer: Consumer,
    shared: Arc<Shared>,
    direction: Direction,
    queue: String,
}

impl Subscription {
    /// The next delivery, or the error that ends the stream.
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        match self.consumer.next().await {
            Some(Ok(message)) => {
                let envelope = codec::work_envelope(
                    &message.properties,
                    message.routing_key.as_str(),
                    message.data,
                    self.direction,
                );
                tracing::debug!(
                    message_id = %envelope.message_id,
                    source = %envelope.source,
                    attempt = envelope.attempt,
                    redelivered = message.redelivered,
                    "message delivered"
                );
                self.acks.opened(message.delivery_tag);
                let settle = AmqpSettle {
                    tag: message.delivery_tag,
                    acks: Arc::clone(&self.acks),
                    acker: message.acker,
                    shared: self.shared.clone(),
                    direction: self.direction,
                };
                Ok(Delivery::new(
                    envelope,
                    message.redelivered,
                    Box::new(settle),
                ))
            }
            Some(Err(error)) => {
                tracing::debug!(queue = %self.queue, cause = %error, "consumer stream broke");
                Err(QueueError::ConsumerEnded(format!(
                    "consumer of {} broke: {error}",
                    self.queue
                )))
            }
            None => {
                tracing::warn!(queue = %self.queue, "consumer cancelled by the broker");
                Err(QueueError::ConsumerEnded(format!(
                    "consumer of {} was cancelled (channel closed or queue deleted)",
                    self.queue
                )))
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.acks.close();
    }
}

/// Settles one delivery: ack, or publish a retry copy / dead letter and then ack.
struct AmqpSettle {
    tag: u64,
    acks: Arc<Acks>,
    acker: Acker,
    shared: Arc<Shared>,
    direction: Direction,
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn settle(
        self: Box<Self>,
        envelope: Envelope,
        settlement: Settlement,
    ) -> Result<(), QueueError> {
        // The copy step is boxed: its publish future is large, and an ack (by far the most
        // common settlement, thousands at once when a batch is settled) need not carry it.
        let copied = match settlement {
            Settlement::Ack => Ok(()),
            copy => Box::pin(self.copy(&envelope, copy)).await,
        };

        // The copy is not safely queued: hand the original back to the queue now instead of
        // holding it until the consumer goes away. A requeue counts toward the delivery limit.
        if let Err(error) = copied {
            tracing::warn!(
                message_id = %envelope.message_id,
                cause = %error,
                "settlement failed, message requeued"
            );
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            let _ = timeout_at(self.shared.deadline(), self.acker.nack(requeue)).await;
            // Only now may a `multiple` ack of the others cover this tag.
            self.acks.forget(self.tag);
            return Err(error);
        }
        self.acks
            .ack(self.tag, self.acker, self.shared.deadline())
            .await
    }
}

impl AmqpSettle {
    /// Publish the retry copy or the dead letter a settlement asks for, confirmed.
    async fn copy(&self, envelope: &Envelope, settlement: Settlement) -> Result<(), QueueError> {
        match settlement {
            // The caller acks plain acknowledgements itself; nothing to copy.
            Settlement::Ack => Ok(()),
            Settlement::Retry { delay, failure } => {
                let tier = self.shared.topology.tier_for(delay);
                let queue = self.shared.topology.retry_queue(self.direction, tier);
                let copy = envelope.next_attempt(now_ms());
                let published = self
                    .shared
                    .publisher
                    .publish(Route::queue(&queue), &copy.body, codec::properties(&copy))
                    .await;
                if published.is_ok() {
                    telemetry::retried(self.direction);
                    tracing::debug!(
                        message_id = %copy.message_id,
                        attempt = copy.attempt,
                        reason = %failure.reason,
                        delay_ms = delay.as_millis() as u64,
                        %queue,
                        "retry queued"
                    );
                }
                published.map_err(|(_, error)| error)
            }
            Settlement::Dead(failure) => {
                let queue = self.shared.topology.dead_queue(self.direction);
                let properties = codec::dead_properties(envelope, &failure, now_ms());
                let published = self
                    .shared
                    .publisher
                    .publish(Route::queue(&queue), &envelope.body, properties)
                    .await;
                if published.is_ok() {
                    telemetry::dead_lettered(self.direction, &failure.reason);
                    tracing::debug!(
                        message_id = %envelope.message_id,
                        source = %envelope.source,
                        attempt = envelope.attempt,
                        reason = %failure.reason,
                        status = failure.status,
                        "message dead-lettered"
                    );
                }
                published.map_err(|(_, error)| error)
            }
        }
    }
}
