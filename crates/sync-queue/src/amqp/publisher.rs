//! Confirmed publishing over the dedicated publishing connection, in groups.
//!
//! Publishes queue up for a few lanes, each a task that owns one confirm-mode channel. A lane
//! takes everything waiting (up to [`MAX_GROUP`]), publishes it as one group, waits for all of the
//! group's confirms, and only then takes the next group. Many confirms are therefore in flight on
//! each channel, and a publish costs the receiver's threads and lapin's I/O thread less than one
//! channel per publish did (about 9 µs less per request on the development machine,
//! docs/benchmarks.md).
//!
//! A message the broker returns as unroutable must fail its own publish. lapin hands each
//! returned message to whichever confirm it completes next on the channel, which with several
//! publishes in flight need not be the returned message's own. Once every confirm of a group has
//! completed, though, every return of the group has been handed to one of them (the broker sends
//! a message's return before its confirm, and each completed confirm takes one waiting return),
//! and the returns carry the message ids. So a lane matches returns to publishes by message id
//! after the whole group completed; a return it cannot match to exactly one publish fails the
//! whole group, which only ever costs a retry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::link::{Link, is_not_found, unavailable};
use crate::QueueError;

/// Lanes, and so publishing channels. Four, eight and sixteen performed alike in the receiver
/// benchmark; four leave room for lanes waiting on slow groups while the others go on.
const LANES: usize = 4;

/// Most publishes in one group.
const MAX_GROUP: usize = 128;

/// Publishes waiting for a lane; more wait to be queued, within their deadline.
const WAITING: usize = 1024;

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

type Outcome = Result<(), (PublishFailure, QueueError)>;

/// One publish waiting for, or in, a group.
struct Request {
    exchange: ShortString,
    routing_key: ShortString,
    body: Bytes,
    properties: BasicProperties,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

/// What the publishing side and its lanes share.
struct Inner {
    link: Link,
    timeout: Duration,
    /// Where lanes take their next group; one lane at a time.
    waiting: Mutex<mpsc::Receiver<Request>>,
    /// Cancelled by [`Publisher::clear`]: lanes finish their group and stop.
    closing: CancellationToken,
}

/// The publishing side: a connection, the queue of waiting publishes and the lanes.
pub(crate) struct Publisher {
    inner: Arc<Inner>,
    requests: mpsc::Sender<Request>,
}

impl Publisher {
    /// Start the lanes; must run inside the tokio runtime. They open their channels on their
    /// first group.
    pub(crate) fn new(link: Link, timeout: Duration) -> Self {
        let (requests, waiting) = mpsc::channel(WAITING);
        let inner = Arc::new(Inner {
            link,
            timeout,
            waiting: Mutex::new(waiting),
            closing: CancellationToken::new(),
        });
        for _ in 0..LANES {
            tokio::spawn(lane(Arc::clone(&inner)));
        }
        Self { inner, requests }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.inner.link
    }

    /// Publish one persistent, mandatory message and wait for the broker's confirm. Success
    /// means the broker acknowledged it and did not return it as unroutable.
    pub(crate) async fn publish(
        &self,
        route: Route<'_>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Outcome {
        if self.inner.closing.is_cancelled() {
            return Err(closed());
        }
        let deadline = Instant::now() + self.inner.timeout;
        let (reply, answer) = oneshot::channel();
        let request = Request {
            exchange: route.exchange.into(),
            routing_key: route.routing_key.into(),
            body: Bytes::copy_from_slice(body),
            properties,
            deadline,
            reply,
        };
        match timeout_at(deadline, self.requests.send(request)).await {
            Err(_) => return Err(self.inner.timed_out("waiting for a publishing lane")),
            Ok(Err(_)) => return Err(closed()),
            Ok(Ok(())) => {}
        }
        match timeout_at(deadline, answer).await {
            Err(_) => Err(self.inner.timed_out("waiting for the broker's confirm")),
            // The lane stopped without answering: the queue is closing.
            Ok(Err(_)) => Err(closed()),
            Ok(Ok(outcome)) => outcome,
        }
    }

    /// Stop taking publishes; groups in flight finish on their own.
    pub(crate) fn clear(&self) {
        self.inner.closing.cancel();
    }
}

/// One lane: take a group, publish it on the lane's channel, answer each publish, repeat.
async fn lane(inner: Arc<Inner>) {
    let mut channel: Option<Channel> = None;
    while let Some(group) = next_group(&inner).await {
        if group.is_empty() {
            continue;
        }
        match inner
            .ready_channel(channel.take(), group_deadline(&group))
            .await
        {
            Ok(open) => channel = inner.publish_group(open, group).await,
            Err(failure) => answer_all(group, &failure),
        }
    }
    // Closing: whatever still waits for a lane is answered now rather than at its deadline.
    let mut waiting = inner.waiting.lock().await;
    waiting.close();
    while let Ok(request) = waiting.try_recv() {
        let _ = request.reply.send(Err(closed()));
    }
}

/// The next group: wait for one publish, then take whatever else is waiting. `None` once the
/// publisher is closing or gone. Publishes whose caller stopped waiting are left out.
async fn next_group(inner: &Inner) -> Option<Vec<Request>> {
    let mut waiting = tokio::select! {
        waiting = inner.waiting.lock() => waiting,
        () = inner.closing.cancelled() => return None,
    };
    let first = tokio::select! {
        request = waiting.recv() => request?,
        () = inner.closing.cancelled() => return None,
    };
    let mut group = Vec::with_capacity(MAX_GROUP.min(waiting.len() + 1));
    group.push(first);
    while group.len() < MAX_GROUP {
        match waiting.try_recv() {
            Ok(request) => group.push(request),
            Err(_) => break,
        }
    }
    drop(waiting);
    let now = Instant::now();
    group.retain(|request| !request.reply.is_closed() && request.deadline > now);
    Some(group)
}

impl Inner {
    /// The lane's channel, opened again if it broke or the topology went stale.
    async fn ready_channel(
        &self,
        channel: Option<Channel>,
        deadline: Instant,
    ) -> Result<Channel, (PublishFailure, QueueError)> {
        if let Some(open) = channel
            && open.status().connected()
            && !self.link.topology_is_stale()
        {
            return Ok(open);
        }
        self.open_channel(deadline).await
    }

    async fn open_channel(
        &self,
        deadline: Instant,
    ) -> Result<Channel, (PublishFailure, QueueError)> {
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

    /// Publish a group on `channel`, wait for every confirm, answer every publish. Gives the
    /// channel back when every confirm arrived; a channel that failed or timed out is dropped
    /// (and so closed), since confirms still owed on it would mix with the next group's.
    async fn publish_group(&self, channel: Channel, group: Vec<Request>) -> Option<Channel> {
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let deadline = group_deadline(&group);
        // join_all polls in order, so the group goes out in order, each publish registering its
        // confirm before the next.
        let confirmations = timeout_at(deadline, async {
            let sent = join_all(group.iter().map(|request| {
                channel.basic_publish(
                    request.exchange.clone(),
                    request.routing_key.clone(),
                    options,
                    &request.body,
                    request.properties.clone(),
                )
            }))
            .await;
            join_all(sent.into_iter().map(|sent| async move { sent?.await })).await
        })
        .await;
        let Ok(confirmations) = confirmations else {
            answer_all(group, &self.timed_out("waiting for the broker's confirm"));
            return None;
        };

        // Every return of the group is now attached to one of its confirmations.
        let mut returned: HashMap<String, (u16, String)> = HashMap::new();
        let mut unmatched = false;
        for confirmation in confirmations.iter().flatten() {
            if let Confirmation::Ack(Some(message)) | Confirmation::Nack(Some(message)) =
                confirmation
            {
                let reason = (message.reply_code, message.reply_text.to_string());
                match message.properties.message_id() {
                    Some(id) => {
                        returned.insert(id.to_string(), reason);
                    }
                    None => unmatched = true,
                }
            }
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for request in &group {
            if let Some(id) = request.properties.message_id() {
                *ids.entry(id.as_str()).or_default() += 1;
            }
        }
        unmatched |= returned.keys().any(|id| ids.get(id.as_str()) != Some(&1));
        if unmatched {
            tracing::warn!(
                group = group.len(),
                "rabbitmq returned a message that matches no single publish of its group; the \
                 whole group counts as unroutable"
            );
        }

        let mut keep = true;
        for (request, confirmation) in group.into_iter().zip(confirmations) {
            let route = Route {
                exchange: request.exchange.as_str(),
                routing_key: request.routing_key.as_str(),
            };
            let own_return = request
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| returned.get(id.as_str()));
            let outcome = match confirmation {
                Err(error) => {
                    keep = false;
                    Err(self.failed(route, &error))
                }
                Ok(Confirmation::NotRequested) => {
                    keep = false;
                    Err((
                        PublishFailure::Unavailable,
                        QueueError::Other("publishing channel is not in confirm mode".into()),
                    ))
                }
                Ok(Confirmation::Nack(_)) => Err((
                    PublishFailure::Nacked,
                    QueueError::Refused("rabbitmq nacked the message".into()),
                )),
                Ok(Confirmation::Ack(_)) if unmatched || own_return.is_some() => {
                    self.link.mark_topology_stale();
                    let (code, text) = own_return
                        .cloned()
                        .unwrap_or((312, "a return of this group".to_owned()));
                    Err((
                        PublishFailure::Unroutable,
                        QueueError::Refused(format!(
                            "rabbitmq returned the message as unroutable ({code} {text}) from \
                             exchange {:?} with routing key {:?}",
                            route.exchange, route.routing_key
                        )),
                    ))
                }
                Ok(Confirmation::Ack(_)) => Ok(()),
            };
            // A caller that stopped waiting has nobody to tell.
            let _ = request.reply.send(outcome);
        }
        keep.then_some(channel)
    }

    /// A publish that failed with a channel error: a missing exchange is a refusal (and a reason
    /// to declare the topology again), anything else means the broker is away.
    fn failed(&self, route: Route<'_>, error: &lapin::Error) -> (PublishFailure, QueueError) {
        if is_not_found(error) {
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

/// The latest deadline in a group: the group is worth publishing as long as someone waits.
fn group_deadline(group: &[Request]) -> Instant {
    group
        .iter()
        .map(|request| request.deadline)
        .max()
        .unwrap_or_else(Instant::now)
}

/// Answer every publish of a group with the same failure.
fn answer_all(group: Vec<Request>, failure: &(PublishFailure, QueueError)) {
    for request in group {
        // A caller that stopped waiting has nobody to tell.
        let _ = request.reply.send(Err(failure.clone()));
    }
}
