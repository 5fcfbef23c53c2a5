//! The RabbitMQ topology of one deployment (DESIGN §4): the names of its exchange and queues, the
//! arguments each queue is declared with, and the idempotent declaration run on every
//! (re)connect. Every name starts with the prefix, so two prefixes never share a queue.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use sync_core::Direction;

/// The exchange and queue names of one prefix, and the arguments they are declared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    tiers: Vec<Duration>,
    delivery_limit: u32,
}

impl Topology {
    /// Tiers are sorted and deduplicated; an empty list is kept empty (configuration validation
    /// refuses it before a topology is built).
    pub fn new(prefix: impl Into<String>, tiers: &[Duration], delivery_limit: u32) -> Self {
        let mut tiers = tiers.to_vec();
        tiers.sort_unstable();
        tiers.dedup();
        Self {
            prefix: prefix.into(),
            tiers,
            delivery_limit,
        }
    }

    /// The topic exchange producers publish to: the prefix itself.
    pub fn exchange(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.inbound` or `<prefix>.outbound`.
    pub fn work_queue(&self, direction: Direction) -> String {
        format!("{}.{direction}", self.prefix)
    }

    /// `<prefix>.<direction>.dead`.
    pub fn dead_queue(&self, direction: Direction) -> String {
        format!("{}.{direction}.dead", self.prefix)
    }

    /// `<prefix>.<direction>.retry.<tier>`, for example `ccsync.inbound.retry.30s`.
    pub fn retry_queue(&self, direction: Direction, tier: Duration) -> String {
        format!("{}.{direction}.retry.{}", self.prefix, tier_name(tier))
    }

    /// The retry delays, shortest first.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// The tier a retry after `delay` waits in: the smallest at or above it, else the largest.
    pub fn tier_for(&self, delay: Duration) -> Duration {
        self.tiers
            .iter()
            .copied()
            .find(|tier| *tier >= delay)
            .or_else(|| self.tiers.last().copied())
            .unwrap_or(delay)
    }

    /// Every queue of this prefix: work, retry and dead queues of both directions.
    pub fn queues(&self) -> Vec<String> {
        let mut names = Vec::new();
        for direction in Direction::ALL {
            names.push(self.work_queue(direction));
            names.push(self.dead_queue(direction));
            for tier in &self.tiers {
                names.push(self.retry_queue(direction, *tier));
            }
        }
        names
    }

    /// Declare the exchange, the queues and the bindings. Redeclaring with the same arguments is
    /// a no-op for the broker; different arguments close the channel with `PRECONDITION_FAILED`
    /// (change them through a policy instead).
    pub(crate) async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;

        for direction in Direction::ALL {
            // Dead queues first: the work queues dead-letter into them. They have no delivery
            // limit, because listing dead letters returns each one to the queue every time.
            // Limitation: RabbitMQ 4.0 and later give quorum queues a default delivery limit of
            // 20, so on those versions dead queues need a policy setting `delivery-limit` to -1.
            declare_queue(channel, &self.dead_queue(direction), quorum()).await?;

            let work = self.work_queue(direction);
            declare_queue(channel, &work, self.work_arguments(direction)).await?;
            channel
                .queue_bind(
                    work.as_str().into(),
                    self.exchange().into(),
                    binding_key(direction).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;

            for tier in &self.tiers {
                let retry = self.retry_queue(direction, *tier);
                declare_queue(channel, &retry, self.retry_arguments(direction, *tier)).await?;
            }
        }
        Ok(())
    }

    /// A work queue gives a message up after `delivery_limit` unsettled deliveries and moves it
    /// to its dead queue, with the broker's at-least-once dead-lettering (which needs
    /// `reject-publish` overflow).
    fn work_arguments(&self, direction: Direction) -> FieldTable {
        let mut arguments = dead_lettering_to(&self.dead_queue(direction));
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        arguments
    }

    /// A retry queue has no consumer: its messages expire after the tier's delay and go back to
    /// the work queue.
    fn retry_arguments(&self, direction: Direction, tier: Duration) -> FieldTable {
        let mut arguments = dead_lettering_to(&self.work_queue(direction));
        let ttl_ms = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        arguments
    }
}

/// A tier's name in its queue name: `1s`, `30s`, `2m`, `1h`, or milliseconds when not whole
/// seconds (`1500ms`).
pub fn tier_name(tier: Duration) -> String {
    let ms = tier.as_millis();
    if ms == 0 || !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The routing keys a direction's work queue receives (DESIGN §4).
fn binding_key(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "customerio.#",
        Direction::Outbound => "chameleon.#",
    }
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<()> {
    channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .map(|_| ())
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

/// Quorum-queue arguments that dead-letter through the default exchange straight to `target`.
fn dead_lettering_to(target: &str) -> FieldTable {
    let mut arguments = quorum();
    arguments.insert("x-dead-letter-exchange".into(), long_string(""));
    arguments.insert("x-dead-letter-routing-key".into(), long_string(target));
    arguments.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    arguments.insert("x-overflow".into(), long_string("reject-publish"));
    arguments
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let tiers = [30, 5, 3600, 120, 600, 5].map(Duration::from_secs);
        Topology::new("ccsync", &tiers, 10)
    }

    #[test]
    fn names_follow_the_contract() {
        let topology = topology();
        assert_eq!(topology.exchange(), "ccsync");
        assert_eq!(topology.work_queue(Direction::Inbound), "ccsync.inbound");
        assert_eq!(
            topology.dead_queue(Direction::Outbound),
            "ccsync.outbound.dead"
        );
        let retries: Vec<String> = topology
            .tiers()
            .iter()
            .map(|tier| topology.retry_queue(Direction::Inbound, *tier))
            .collect();
        assert_eq!(
            retries,
            [
                "ccsync.inbound.retry.5s",
                "ccsync.inbound.retry.30s",
                "ccsync.inbound.retry.2m",
                "ccsync.inbound.retry.10m",
                "ccsync.inbound.retry.1h",
            ]
        );
        assert_eq!(topology.queues().len(), 2 * (2 + 5));
    }

    #[test]
    fn tier_names_pick_the_largest_whole_unit() {
        assert_eq!(tier_name(Duration::from_secs(1)), "1s");
        assert_eq!(tier_name(Duration::from_secs(90)), "90s");
        assert_eq!(tier_name(Duration::from_secs(7200)), "2h");
        assert_eq!(tier_name(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn a_retry_waits_in_the_smallest_tier_that_is_long_enough() {
        let topology = topology();
        let tier = |secs| topology.tier_for(Duration::from_secs(secs)).as_secs();
        assert_eq!(tier(0), 5);
        assert_eq!(tier(5), 5);
        assert_eq!(tier(6), 30);
        assert_eq!(tier(599), 600);
        assert_eq!(tier(86_400), 3600);
    }

    #[test]
    fn work_queues_dead_letter_at_least_once_after_the_delivery_limit() {
        let arguments = topology().work_arguments(Direction::Outbound);
        let inner = arguments.inner();
        assert_eq!(
            inner.get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(
            inner.get("x-dead-letter-routing-key"),
            Some(&long_string("ccsync.outbound.dead"))
        );
        assert_eq!(
            inner.get("x-dead-letter-strategy"),
            Some(&long_string("at-least-once"))
        );
        let retry = topology().retry_arguments(Direction::Outbound, Duration::from_secs(30));
        assert_eq!(
            retry.inner().get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(30_000))
        );
        assert_eq!(
            retry.inner().get("x-dead-letter-routing-key"),
            Some(&long_string("ccsync.outbound"))
        );
    }
}
