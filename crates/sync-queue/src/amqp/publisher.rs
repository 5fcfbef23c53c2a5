//! Confirmed publishing over the dedicated publishing connection. Each publish borrows a
//! confirm-mode channel from a small pool for exactly one message, so many publishes wait for
//! their confirms at the same time, and a message the broker returns as unroutable is always
//! matched to the publish that sent it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::{BasicProperties, Channel, Confirmation, ErrorKind};
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout_at};

use super::link::{Link, unavailable};
use crate::QueueError;

/// Publishes in flight at once; more wait for a channel. Enough for the receiver's concurrent
/// requests to keep the quorum queue confirming in large groups.
const CHANNELS: usize = 128;

/// Where one message goes: an exchange and a routing key (the default exchange `""` routes
/// straight to the queue named by the key).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

impl<'a> Route<'a> {
    /// Straight to a queue, through the default exchange.
    pub(crate) fn queue(name: &'a str) -> Self {
        Self {
            exchange: "",
            routing_key: name,
        }
    }
}

/// Why a publish failed, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PublishFailure {
    Unavailable,
    Timeout,
    Unroutable,
    Nacked,
}

impl PublishFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PublishFailure::Unavailable => "unavailable",
            PublishFailure::Timeout => "timeout",
            PublishFailure::Unroutable => "unroutable",
            PublishFailure::Nacked => "nacked",
        }
    }
}

/// The publishing side: a connection and its pool of confirm-mode channels.
pub(crate) struct Publisher {
    link: Link,
    idle: Mutex<Vec<Channel>>,
    slots: Semaphore,
    timeout: Duration,
}

impl Publisher {
    pub(crate) fn new(link: Link, timeout: Duration) -> Self {
        Self {
            link,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(CHANNELS),
            timeout,
        }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Publish one persistent, mandatory message and wait for the broker's confirm. Success
    /// means the broker acknowledged it and did not return it as unroutable.
    pub(crate) async fn publish(
        &self,
        route: Route<'_>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), (PublishFailure, QueueError)> {
        let deadline = Instant::now() + self.timeout;
        let _slot = timeout_at(deadline, self.slots.acquire())
            .await
            .map_err(|_| self.timed_out("waiting for a free publishing channel"))?
            .map_err(|_| closed())?;
        let channel = self.checkout(deadline).await?;

        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let sent = timeout_at(deadline, async {
            let confirm = channel
                .basic_publish(
                    route.exchange.into(),
                    route.routing_key.into(),
                    options,
                    body,
                    properties,
                )
                .await?;
            confirm.await
        })
        .await;

        // A channel whose confirm timed out or failed is dropped (and so closed), never reused.
        let confirmation = match sent {
            Err(_) => return Err(self.timed_out("waiting for the broker's confirm")),
            Ok(Err(error)) => return Err(self.failed(route, &error)),
            Ok(Ok(confirmation)) => confirmation,
        };
        match confirmation {
            Confirmation::Ack(None) => {
                self.checkin(channel);
                Ok(())
            }
            Confirmation::Ack(Some(returned)) => {
                self.checkin(channel);
                self.link.mark_topology_stale();
                Err((
                    PublishFailure::Unroutable,
                    QueueError::Refused(format!(
                        "rabbitmq returned the message as unroutable ({} {}) from exchange \
                         {:?} with routing key {:?}",
                        returned.reply_code, returned.reply_text, route.exchange, route.routing_key
                    )),
                ))
            }
            Confirmation::Nack(_) => {
                self.checkin(channel);
                Err((
                    PublishFailure::Nacked,
                    QueueError::Refused("rabbitmq nacked the message".into()),
                ))
            }
            Confirmation::NotRequested => Err((
                PublishFailure::Unavailable,
                QueueError::Other("publishing channel is not in confirm mode".into()),
            )),
        }
    }

    /// Drop the idle channels (closing them); in-flight publishes finish on their own.
    pub(crate) fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.slots.close();
    }

    async fn checkout(&self, deadline: Instant) -> Result<Channel, (PublishFailure, QueueError)> {
        if !self.link.topology_is_stale() {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            while let Some(channel) = idle.pop() {
                if channel.status().connected() {
                    return Ok(channel);
                }
            }
        }

        let connection = self
            .link
            .connection(deadline)
            .await
            .map_err(|error| (PublishFailure::Unavailable, error))?;
        let opened = timeout_at(deadline, async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        })
        .await;
        match opened {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err((
                PublishFailure::Unavailable,
                unavailable("opening a publishing channel", &error),
            )),
            Err(_) => Err(self.timed_out("opening a publishing channel")),
        }
    }

    fn checkin(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(channel);
        }
    }

    /// A publish that failed with a channel error: a missing exchange is a refusal (and a reason
    /// to declare the topology again), anything else means the broker is away.
    fn failed(&self, route: Route<'_>, error: &lapin::Error) -> (PublishFailure, QueueError) {
        if let ErrorKind::ProtocolError(amqp) = error.kind()
            && matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
        {
            self.link.mark_topology_stale();
            return (
                PublishFailure::Unroutable,
                QueueError::Refused(format!(
                    "rabbitmq has no exchange {:?}: {error}",
                    route.exchange
                )),
            );
        }
        (
            PublishFailure::Unavailable,
            unavailable("publishing to rabbitmq", error),
        )
    }

    fn timed_out(&self, what: &str) -> (PublishFailure, QueueError) {
        (
            PublishFailure::Timeout,
            QueueError::Unavailable(format!(
                "rabbitmq publish timed out after {} ms {what}",
                self.timeout.as_millis()
            )),
        )
    }
}

fn closed() -> (PublishFailure, QueueError) {
    (
        PublishFailure::Unavailable,
        QueueError::Unavailable("the queue was closed".into()),
    )
}
