//! The RabbitMQ backend (DESIGN §4): quorum work queues behind a topic exchange, one TTL queue
//! per retry tier, quorum dead queues, publisher confirms, and connections that heal themselves.
//!
//! # Layout
//! - [`topology`]: the names and arguments of the exchange and queues, declared on every
//!   (re)connect.
//! - `link`: one connection, reopened lazily with backoff when a call finds it broken.
//! - `publisher`: confirmed, mandatory, persistent publishing over the publishing connection.
//! - `codec`: envelope <-> AMQP properties and headers, lenient on what outside producers send.
//! - `delivery`: consuming a work queue and settling deliveries.
//! - `dead`: listing, replaying and purging dead letters.
//!
//! Publishing and consuming use separate connections, so that the broker slowing publishers
//! down never delays acknowledgements. Every broker call is bounded by
//! [`AmqpConfig::operation_timeout`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::BasicProperties;
use sync_core::{Direction, Envelope};
use tokio::time::Instant;

use crate::{DeadFilter, DeadLetter, DeliveryStream, Queue, QueueError};

mod acks;
mod codec;
mod dead;
mod delivery;
mod link;
mod publisher;
pub mod topology;

pub use topology::Topology;

use link::{Link, Role};
use publisher::{Publisher, Route};

/// How to reach the broker and how to lay out the queues.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The broker URL, for example `amqp://guest:guest@127.0.0.1:5672/%2f` (vhost `/`).
    pub url: String,
    /// Every exchange and queue name starts with it (DESIGN §4); several deployments or tests
    /// share a broker by using different prefixes.
    pub prefix: String,
    /// The retry delays, one queue per tier and direction. A retry waits in the smallest tier at
    /// or above the delay it asks for, or in the largest.
    pub retry_tiers: Vec<Duration>,
    /// Unsettled deliveries after which the broker moves a message to its dead queue
    /// (`x-delivery-limit` of the work queues).
    pub delivery_limit: u32,
    /// The longest any single broker call (connect, publish and confirm, ack, get) may take.
    pub operation_timeout: Duration,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "ccsync".into(),
            retry_tiers: [5, 30, 120, 600, 3600].map(Duration::from_secs).to_vec(),
            delivery_limit: 10,
            operation_timeout: Duration::from_secs(10),
        }
    }
}

impl AmqpConfig {
    /// Check the values before anything is declared with them.
    pub fn validate(&self) -> Result<(), QueueError> {
        let invalid =
            |what: String| Err(QueueError::Other(format!("invalid queue settings: {what}")));
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if self.prefix.is_empty() || self.prefix.len() > 200 || !self.prefix.chars().all(allowed) {
            return invalid(format!(
                "prefix {:?} must be 1 to 200 characters of letters, digits and . - _ :",
                self.prefix
            ));
        }
        if self.retry_tiers.is_empty() {
            return invalid("retry_tiers must name at least one delay".into());
        }
        if let Some(tier) = self
            .retry_tiers
            .iter()
            .find(|tier| tier.as_millis() == 0 || tier.as_millis() > u128::from(u32::MAX))
        {
            return invalid(format!(
                "retry tier {tier:?} must be between 1 ms and about 49 days"
            ));
        }
        if self.delivery_limit == 0 {
            return invalid("delivery_limit must be at least 1".into());
        }
        if self.operation_timeout.is_zero() {
            return invalid("operation_timeout must be above zero".into());
        }
        self.uri().map(|_| ())
    }

    /// The broker URL, parsed.
    fn uri(&self) -> Result<lapin::uri::AMQPUri, QueueError> {
        self.url.parse().map_err(|error| {
            QueueError::Other(format!(
                "invalid queue settings: the broker URL {} does not parse: {error}",
                redact_url(&self.url)
            ))
        })
    }
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("retry_tiers", &self.retry_tiers)
            .field("delivery_limit", &self.delivery_limit)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

/// The URL with its password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_owned(),
    }
}

/// The RabbitMQ queue. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct AmqpQueue {
    shared: Arc<Shared>,
}

/// What every clone, consumer stream and settlement of one queue shares.
pub(crate) struct Shared {
    topology: Arc<Topology>,
    publisher: Publisher,
    consumer_link: Link,
    operation_timeout: Duration,
}

impl Shared {
    /// When a broker call started now must be over.
    fn deadline(&self) -> Instant {
        Instant::now() + self.operation_timeout
    }
}

impl AmqpQueue {
    /// Connect the publishing side and declare the topology, so that a wrong URL, refused
    /// credentials or conflicting queue arguments show at start-up. The consuming connection
    /// opens on the first `consume` or dead-letter call.
    pub async fn connect(config: AmqpConfig) -> Result<Self, QueueError> {
        Self::start(config, true).await
    }

    /// As [`AmqpQueue::connect`], without waiting for the broker: the first call that needs it
    /// connects (and declares the topology), and until the broker answers every call fails with
    /// [`QueueError::Unavailable`]. For a daemon that starts before its broker.
    pub fn connect_later(config: AmqpConfig) -> Result<Self, QueueError> {
        Self::build(&config, true)
    }

    /// Connect to a deployment that already exists, declaring nothing: for operator commands
    /// (`dlq`), which must not create a whole set of queues under a mistyped prefix. Fails with
    /// a message naming the prefix when its queues are not there.
    pub async fn attach(config: AmqpConfig) -> Result<Self, QueueError> {
        Self::start(config, false).await
    }

    async fn start(config: AmqpConfig, declares: bool) -> Result<Self, QueueError> {
        let queue = Self::build(&config, declares)?;
        let shared = &queue.shared;
        shared
            .publisher
            .link()
            .connection(shared.deadline())
            .await?;
        tracing::info!(
            url = %redact_url(&config.url),
            prefix = %config.prefix,
            "rabbitmq queue ready"
        );
        Ok(queue)
    }

    /// The queue's parts, connecting nothing yet; fails on settings that do not validate.
    fn build(config: &AmqpConfig, declares: bool) -> Result<Self, QueueError> {
        config.validate()?;
        let uri = config.uri()?;
        let topology = Arc::new(Topology::new(
            config.prefix.clone(),
            &config.retry_tiers,
            config.delivery_limit,
        ));
        let publishing =
            Link::with_declaring(Role::Publisher, uri.clone(), topology.clone(), declares);
        let shared = Arc::new(Shared {
            publisher: Publisher::new(publishing, config.operation_timeout),
            consumer_link: Link::with_declaring(Role::Consumer, uri, topology.clone(), declares),
            topology,
            operation_timeout: config.operation_timeout,
        });
        Ok(Self { shared })
    }

    /// The exchange and queue names this queue uses.
    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }
}

impl fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpQueue")
            .field("prefix", &self.shared.topology.exchange())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, envelope: &Envelope) -> Result<(), QueueError> {
        let direction = envelope.direction();
        let route = Route {
            exchange: self.shared.topology.exchange(),
            routing_key: envelope.source.routing_key(),
        };
        let properties: BasicProperties = codec::properties(envelope);
        match self
            .shared
            .publisher
            .publish(route, &envelope.body, properties)
            .await
        {
            Ok(()) => {
                crate::telemetry::published(direction);
                tracing::debug!(
                    message_id = %envelope.message_id,
                    source = %envelope.source,
                    "message queued"
                );
                Ok(())
            }
            Err((failure, error)) => {
                crate::telemetry::publish_failed(direction, failure.as_str());
                tracing::warn!(
                    message_id = %envelope.message_id,
                    source = %envelope.source,
                    reason = failure.as_str(),
                    cause = %error,
                    "publish failed"
                );
                Err(error)
            }
        }
    }

    async fn consume(
        &self,
        direction: Direction,
        prefetch: u16,
    ) -> Result<DeliveryStream, QueueError> {
        delivery::consume(self.shared.clone(), direction, prefetch).await
    }

    async fn dead_letters(
        &self,
        direction: Direction,
        filter: &DeadFilter,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.shared, direction, filter).await
    }

    async fn replay(
        &self,
        direction: Direction,
        filter: &DeadFilter,
        rate: Option<u32>,
    ) -> Result<usize, QueueError> {
        dead::replay(&self.shared, direction, filter, rate).await
    }

    async fn purge(&self, direction: Direction, filter: &DeadFilter) -> Result<usize, QueueError> {
        dead::purge(&self.shared, direction, filter).await
    }

    /// Reachable means a channel can be opened and closed on the publishing connection now: a
    /// round trip to the broker, not a look at local state.
    async fn check(&self) -> Result<(), QueueError> {
        let deadline = self.shared.deadline();
        let connection = self.shared.publisher.link().connection(deadline).await?;
        let round_trip = tokio::time::timeout_at(deadline, async {
            let channel = connection.create_channel().await?;
            channel.close(link::REPLY_SUCCESS, "checked".into()).await
        })
        .await;
        match round_trip {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(link::unavailable("checking rabbitmq", &error)),
            Err(_) => Err(QueueError::Unavailable(
                "checking rabbitmq timed out".into(),
            )),
        }
    }

    async fn close(&self) {
        let deadline = self.shared.deadline();
        self.shared.publisher.clear();
        self.shared.publisher.link().close(deadline).await;
        self.shared.consumer_link.close(deadline).await;
        tracing::info!(prefix = %self.shared.topology.exchange(), "rabbitmq queue closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_prints() {
        let config = AmqpConfig {
            url: "amqp://sync:s3cret@rabbit.internal:5672/%2f".into(),
            ..AmqpConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("amqp://sync:[redacted]@rabbit.internal:5672/%2f"));
        assert_eq!(redact_url("amqp://localhost"), "amqp://localhost");
    }

    #[test]
    fn settings_are_validated() {
        assert!(AmqpConfig::default().validate().is_ok());
        let bad = [
            AmqpConfig {
                prefix: String::new(),
                ..AmqpConfig::default()
            },
            AmqpConfig {
                prefix: "has space".into(),
                ..AmqpConfig::default()
            },
            AmqpConfig {
                retry_tiers: Vec::new(),
                ..AmqpConfig::default()
            },
            AmqpConfig {
                retry_tiers: vec![Duration::ZERO],
                ..AmqpConfig::default()
            },
            AmqpConfig {
                delivery_limit: 0,
                ..AmqpConfig::default()
            },
            AmqpConfig {
                url: "amqp://guest:guest@127.0.0.1:notaport/%2f".into(),
                ..AmqpConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(QueueError::Other(_))),
                "{config:?}"
            );
        }
    }
}
