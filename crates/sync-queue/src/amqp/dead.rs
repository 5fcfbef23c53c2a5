//! The operator's view of a dead queue: list, replay and purge. A scan takes every message of the
//! dead queue with `basic.get` on a throwaway channel without acknowledging it, acks the ones it
//! replays or purges, and closes the channel, which puts all the others back in their order.
//! Dead queues have no delivery limit, so being read this way never drops a message.
//!
//! A scan reads as many different messages as the queue held when it started. A running worker
//! may dead-letter a replayed message again while the replay goes on; the copy lands in the
//! queue again with the same id, and the scan holds it without counting or replaying it, so the
//! replay ends instead of replaying it for ever, and still reaches every message that was there
//! at the start (another reader's scan may have put some of them behind the copies). A replay or
//! purge that could not read them all, because another `dlq` command held some, fails after
//! doing what it could, saying so.
//!
//! Limitation: a scan holds every dead letter of the direction in memory and out of the queue
//! while it runs, so two scans at once (two operators) each see only part of the queue (a `list`
//! then warns, a replay or purge fails, as above), and a dead queue of millions of messages needs
//! the memory to match.

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
    if scan.cut_short {
        tracing::warn!(
            queue = %scan.queue,
            at_start = scan.limit,
            read = scan.seen.len(),
            "the dead queue held more messages than this command could read: another dlq \
             command was reading it at the same time and holds the rest until it ends; run \
             this one again afterwards"
        );
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
    while let Some((letter, acker)) = scan.next().await? {
        if !filter.matches(&letter) {
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
    scan.finish("replayed", replayed).await?;
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
    scan.finish("purged", purged).await?;
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
    /// The ids read so far, at most `limit`; a message seen again (a replayed copy dead-lettered
    /// anew) is held and not counted.
    seen: HashSet<String>,
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
        let limit = match timeout_at(deadline, count(&channel, &queue)).await {
            Ok(Ok(count)) => count,
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
            seen: HashSet::new(),
        })
    }

    /// The next dead letter not read before in this scan, held unacknowledged, or `None` once
    /// as many as the queue held at the start were read, or the queue has no more.
    async fn next(&mut self) -> Result<Option<(DeadLetter, Acker)>, QueueError> {
        while self.read() < self.limit {
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
            let Some(message) = message else {
                // Fewer than the count at the start: another reader holds some of them.
                self.cut_short = true;
                return Ok(None);
            };
            self.taken += 1;
            let delivery = message.delivery;
            let letter = codec::dead_letter(
                &delivery.properties,
                delivery.routing_key.as_str(),
                delivery.data,
                self.direction,
            );
            // A copy of a message this scan already handled stays held, uncounted.
            if self.seen.insert(letter.envelope.message_id.clone()) {
                return Ok(Some((letter, delivery.acker)));
            }
        }
        Ok(None)
    }

    /// Close the scan; a replay or purge that could not read every message the queue held at
    /// the start fails, naming what it did.
    async fn finish(self, done: &str, count: usize) -> Result<(), QueueError> {
        let missed = self.limit.saturating_sub(self.read());
        let cut_short = self.cut_short;
        let queue = self.queue.clone();
        self.close().await;
        if cut_short {
            return Err(QueueError::Other(format!(
                "{done} {count}, but {missed} of the messages {queue} held were not read: another \
                 dlq command was reading the queue at the same time; run this one again once it \
                 has finished"
            )));
        }
        Ok(())
    }

    /// Different messages read so far.
    fn read(&self) -> u32 {
        u32::try_from(self.seen.len()).unwrap_or(u32::MAX)
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
            loop {
                if count(&channel, &self.queue).await.ok()? >= kept {
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

/// The messages ready in `queue` (not those another channel holds), by a passive declare.
async fn count(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}
