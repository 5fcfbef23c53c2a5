//! The operator's view of a dead queue: list, replay and purge. A scan takes every message of the
//! dead queue with `basic.get` on a throwaway channel without acknowledging it, acks the ones it
//! replays or purges, and closes the channel, which puts all the others back in their order.
//! Dead queues have no delivery limit, so being read this way never drops a message.
//!
//! A scan reads at most the messages the queue held when it started. A running worker may
//! dead-letter a replayed message again while the replay goes on; the copy lands behind them, so
//! the replay ends instead of replaying it for ever.
//!
//! Limitation: a scan holds every dead letter of the direction in memory and out of the queue
//! while it runs, so two scans at once (two operators) each see only part of the queue (a scan
//! that reads fewer messages than the queue held at its start warns that it did), and a dead
//! queue of millions of messages needs the memory to match.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use sync_core::Direction;
use tokio::time::timeout_at;

use super::link::{REPLY_SUCCESS, unavailable};
use super::publisher::Route;
use super::{Shared, codec};
use crate::{DeadFilter, DeadLetter, QueueError, replay_pause};

/// How often a finished scan checks that the broker has put its messages back.
const REQUEUE_POLL: Duration = Duration::from_millis(20);

/// The matching dead letters, oldest first.
pub(crate) async fn list(
    shared: &Arc<Shared>,
    direction: Direction,
    filter: &DeadFilter,
) -> Result<Vec<DeadLetter>, QueueError> {
    let mut scan = Scan::open(shared, direction).await?;
    let mut found = Vec::new();
    while let Some((letter, _)) = scan.next().await? {
        if filter.matches(&letter) {
            found.push(letter);
        }
    }
    scan.close().await;
    found.sort_by_key(|letter| letter.dead_at);
    Ok(found)
}

/// Move matching dead letters back to the work queue, at most `rate` per second.
pub(crate) async fn replay(
    shared: &Arc<Shared>,
    direction: Direction,
    filter: &DeadFilter,
    rate: Option<u32>,
) -> Result<usize, QueueError> {
    let work = shared.topology.work_queue(direction);
    let pause = replay_pause(rate);
    let mut scan = Scan::open(shared, direction).await?;
    let mut replayed = 0;
    // Belt and braces to the scan's bound: a message id is replayed once per pass.
    let mut done = HashSet::new();
    while let Some((letter, acker)) = scan.next().await? {
        if !filter.matches(&letter) || done.contains(&letter.envelope.message_id) {
            continue;
        }

        // The copy must be confirmed on the work queue before the dead letter goes.
        let copy = letter.envelope.replayed();
        let published = shared
            .publisher
            .publish(Route::queue(&work), &copy.body, codec::properties(&copy))
            .await;
        if let Err((_, error)) = published {
            scan.close().await;
            return Err(error);
        }
        if let Err(error) = scan.ack(&acker).await {
            scan.close().await;
            return Err(error);
        }
        replayed += 1;
        done.insert(copy.message_id.clone());
        tracing::info!(
            message_id = %copy.message_id,
            source = %copy.source,
            reason = %letter.reason,
            "dead letter replayed"
        );

        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    scan.close().await;
    Ok(replayed)
}

/// Delete matching dead letters.
pub(crate) async fn purge(
    shared: &Arc<Shared>,
    direction: Direction,
    filter: &DeadFilter,
) -> Result<usize, QueueError> {
    let mut scan = Scan::open(shared, direction).await?;
    let mut purged = 0;
    while let Some((letter, acker)) = scan.next().await? {
        if !filter.matches(&letter) {
            continue;
        }
        if let Err(error) = scan.ack(&acker).await {
            scan.close().await;
            return Err(error);
        }
        purged += 1;
        tracing::info!(
            message_id = %letter.envelope.message_id,
            source = %letter.envelope.source,
            reason = %letter.reason,
            "dead letter purged"
        );
    }
    scan.close().await;
    Ok(purged)
}

/// One pass over a dead queue on a channel of its own.
struct Scan {
    shared: Arc<Shared>,
    channel: Channel,
    queue: String,
    direction: Direction,
    /// Messages in the queue when the scan started: the most it reads.
    limit: u32,
    /// Messages taken from the queue, and how many of them were acked (removed).
    taken: u32,
    removed: u32,
    /// The queue ran dry before `limit`: something else was reading it at the same time.
    cut_short: bool,
}

impl Scan {
    async fn open(shared: &Arc<Shared>, direction: Direction) -> Result<Self, QueueError> {
        let deadline = shared.deadline();
        let connection = shared.consumer_link.connection(deadline).await?;
        let channel = match timeout_at(deadline, connection.create_channel()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => return Err(unavailable("opening a dead-letter channel", &error)),
            Err(_) => {
                return Err(QueueError::Unavailable(
                    "opening a dead-letter channel timed out".into(),
                ));
            }
        };
        let queue = shared.topology.dead_queue(direction);
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let counted = timeout_at(
            deadline,
            channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()),
        )
        .await;
        let limit = match counted {
            Ok(Ok(declared)) => declared.message_count(),
            Ok(Err(error)) => return Err(unavailable("counting the dead queue", &error)),
            Err(_) => {
                return Err(QueueError::Unavailable(format!(
                    "counting {queue} timed out"
                )));
            }
        };
        Ok(Self {
            shared: shared.clone(),
            channel,
            queue,
            direction,
            limit,
            taken: 0,
            removed: 0,
            cut_short: false,
        })
    }

    /// The next dead letter, held unacknowledged, or `None` once the queue has no more.
    async fn next(&mut self) -> Result<Option<(DeadLetter, Acker)>, QueueError> {
        if self.taken >= self.limit {
            return Ok(None);
        }
        let get = self.channel.basic_get(
            self.queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        );
        let message = match timeout_at(self.shared.deadline(), get).await {
            Ok(Ok(message)) => message,
            Ok(Err(error)) => return Err(unavailable("reading the dead queue", &error)),
            Err(_) => {
                return Err(QueueError::Unavailable(format!(
                    "reading {} timed out",
                    self.queue
                )));
            }
        };
        if message.is_none() {
            // Fewer than the count at the start: another reader holds some of them.
            self.cut_short = true;
        }
        Ok(message.map(|message| {
            self.taken += 1;
            let delivery = message.delivery;
            let letter = codec::dead_letter(
                &delivery.properties,
                delivery.routing_key.as_str(),
                delivery.data,
                self.direction,
            );
            (letter, delivery.acker)
        }))
    }

    async fn ack(&mut self, acker: &Acker) -> Result<(), QueueError> {
        match timeout_at(
            self.shared.deadline(),
            acker.ack(BasicAckOptions::default()),
        )
        .await
        {
            Ok(Ok(true)) => {
                self.removed += 1;
                Ok(())
            }
            Ok(Ok(false)) => Err(QueueError::Unavailable(
                "the dead-letter channel closed during the scan".into(),
            )),
            Ok(Err(error)) => Err(unavailable("removing a dead letter", &error)),
            Err(_) => Err(QueueError::Unavailable(
                "removing a dead letter timed out".into(),
            )),
        }
    }

    /// Close the channel: the broker takes back every message this scan did not ack.
    async fn close(self) {
        if self.cut_short {
            tracing::warn!(
                queue = %self.queue,
                at_start = self.limit,
                read = self.taken,
                "the dead queue held more messages than this command could read: another dlq \
                 command was reading it at the same time and holds the rest until it ends; run \
                 this one again afterwards"
            );
        }
        let deadline = self.shared.deadline();
        let closing = self.channel.close(REPLY_SUCCESS, "scan done".into());
        match timeout_at(deadline, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(cause = %error, "closing a dead-letter channel failed");
                return;
            }
            Err(_) => {
                tracing::debug!("closing a dead-letter channel timed out");
                return;
            }
        }

        // The broker requeues them after the close is answered; wait until it has, so that the
        // next scan sees the whole queue again.
        let kept = self.taken - self.removed;
        if kept == 0 {
            return;
        }
        let back = timeout_at(deadline, async {
            let connection = self.shared.consumer_link.connection(deadline).await.ok()?;
            let channel = connection.create_channel().await.ok()?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            loop {
                let queue = channel
                    .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
                    .await
                    .ok()?;
                if queue.message_count() >= kept {
                    let _ = channel.close(REPLY_SUCCESS, "counted".into()).await;
                    return Some(());
                }
                tokio::time::sleep(REQUEUE_POLL).await;
            }
        })
        .await;
        if !matches!(back, Ok(Some(()))) {
            tracing::debug!(
                queue = %self.queue,
                kept,
                "dead letters not all back in the queue yet"
            );
        }
    }
}
