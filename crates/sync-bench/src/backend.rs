//! A queue backend opened for one run and removed after it: RabbitMQ under a fresh prefix whose
//! exchange and queues are deleted at the end, or the embedded queue in a scratch folder. Only
//! loopback brokers are accepted, so a benchmark can never load a shared one by mistake.

use std::sync::Arc;

use anyhow::{Context, bail};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sync_core::Direction;
use sync_queue::Queue;
use sync_queue::amqp::{AmqpConfig, AmqpQueue, Topology};
use sync_queue::embedded::{EmbeddedConfig, EmbeddedQueue};
use tokio::net::TcpStream;

use crate::cli::Backend;
use crate::scratch::Scratch;

/// A queue for one run.
pub struct RunQueue {
    pub queue: Arc<dyn Queue>,
    pub backend: Backend,
    amqp: Option<Amqp>,
    _scratch: Option<Scratch>,
}

struct Amqp {
    url: String,
    topology: Topology,
}

impl RunQueue {
    /// Open `backend` for a run named `label`: a fresh prefix on the broker at `amqp_url`, or a
    /// new embedded queue file.
    pub async fn open(backend: Backend, amqp_url: &str, label: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Amqp => {
                require_broker(amqp_url).await?;
                let config = AmqpConfig {
                    url: amqp_url.to_owned(),
                    prefix: unique_prefix(label),
                    ..AmqpConfig::default()
                };
                let amqp = AmqpQueue::connect(config)
                    .await
                    .context("cannot declare the benchmark's queues on RabbitMQ")?;
                let topology = amqp.topology().clone();
                Ok(Self {
                    queue: Arc::new(amqp),
                    backend,
                    amqp: Some(Amqp {
                        url: amqp_url.to_owned(),
                        topology,
                    }),
                    _scratch: None,
                })
            }
            Backend::Embedded => {
                let scratch = Scratch::new(label)?;
                let config = EmbeddedConfig::at(scratch.path().join("queue.sqlite3"));
                let embedded = EmbeddedQueue::open(config)
                    .await
                    .context("cannot open the embedded queue")?;
                Ok(Self {
                    queue: Arc::new(embedded),
                    backend,
                    amqp: None,
                    _scratch: Some(scratch),
                })
            }
        }
    }

    /// The RabbitMQ names of this run, on the AMQP backend.
    pub fn topology(&self) -> Option<&Topology> {
        self.amqp.as_ref().map(|amqp| &amqp.topology)
    }

    /// Messages ready in a direction's work queue (RabbitMQ only; `None` on the embedded
    /// backend, which has no cheap count through the queue contract).
    pub async fn depth(&self, direction: Direction) -> anyhow::Result<Option<u32>> {
        let Some(amqp) = &self.amqp else {
            return Ok(None);
        };
        let depth = work_queue_depth(&amqp.url, &amqp.topology.work_queue(direction)).await?;
        Ok(Some(depth))
    }

    /// Close the queue and delete what the run created.
    pub async fn remove(self) -> anyhow::Result<()> {
        self.queue.close().await;
        if let Some(amqp) = &self.amqp {
            delete_prefix(&amqp.url, &amqp.topology).await?;
        }
        Ok(())
    }
}

/// `ccsync-bench-<label>-<ulid>`: never shared with another run or a deployment.
pub fn unique_prefix(label: &str) -> String {
    format!(
        "ccsync-bench-{label}-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// Fail with the command that starts RabbitMQ when nothing listens at the URL's address; refuse
/// an address that is not loopback.
pub async fn require_broker(url: &str) -> anyhow::Result<()> {
    let address = broker_address(url)?;
    if TcpStream::connect(&address).await.is_err() {
        bail!(
            "RabbitMQ is not reachable at {address}: start it with `rabbitmq-server -detached` \
             (guest/guest on the default vhost)"
        );
    }
    Ok(())
}

/// The `host:port` of an AMQP URL (port 5672 when not given), which must be a loopback host.
pub fn broker_address(url: &str) -> anyhow::Result<String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .with_context(|| format!("{url:?} is not an amqp:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.find(']') {
        // A bracketed IPv6 host, maybe followed by `:port`.
        Some(end) => (
            &host_port[..=end],
            host_port[end + 1..].strip_prefix(':').unwrap_or("5672"),
        ),
        None => host_port.split_once(':').unwrap_or((host_port, "5672")),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("the benchmarks use loopback brokers only, not {host:?}");
    }
    Ok(format!("{host}:{port}"))
}

/// A plain connection for the benchmark's own broker calls.
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name("cio-chameleon-sync bench".into());
    Connection::connect(url, properties)
        .await
        .context("cannot connect to RabbitMQ")
}

/// Messages ready in one queue, read with a passive declare.
pub async fn work_queue_depth(url: &str, queue: &str) -> anyhow::Result<u32> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .with_context(|| format!("cannot read the depth of {queue}"))?;
    let _ = connection.close(200, "depth read".into()).await;
    Ok(declared.message_count())
}

/// Delete every queue of the topology and its exchange.
pub async fn delete_prefix(url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    for queue in topology.queues() {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("cannot delete queue {queue}"))?;
    }
    channel
        .exchange_delete(topology.exchange().into(), ExchangeDeleteOptions::default())
        .await
        .with_context(|| format!("cannot delete exchange {}", topology.exchange()))?;
    let _ = connection
        .close(200, "benchmark queues deleted".into())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_are_loopback_only() {
        assert_eq!(
            broker_address("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap(),
            "127.0.0.1:5672"
        );
        assert_eq!(
            broker_address("amqp://localhost/%2f").unwrap(),
            "localhost:5672"
        );
        assert_eq!(
            broker_address("amqp://u:p@[::1]:5673").unwrap(),
            "[::1]:5673"
        );
        assert!(broker_address("amqp://guest:guest@rabbit.internal:5672/%2f").is_err());
        assert!(broker_address("127.0.0.1:5672").is_err());
    }

    #[test]
    fn prefixes_are_unique_and_valid_queue_prefixes() {
        let (a, b) = (unique_prefix("x"), unique_prefix("x"));
        assert_ne!(a, b);
        let config = AmqpConfig {
            prefix: a,
            ..AmqpConfig::default()
        };
        assert!(config.validate().is_ok());
    }
}
