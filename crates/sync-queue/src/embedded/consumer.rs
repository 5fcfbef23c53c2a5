//! The consuming side of the embedded queue: a stream that claims due messages under a lease, at
//! most `prefetch` unsettled at once, and the settle handle that checks the lease before it
//! changes anything, so that a consumer whose lease was lost cannot clobber the new holder.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sync_core::time::now_ms;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::store::{self, ClaimRequest, DELIVERY_LIMIT_REASON, Released};
use super::{Shared, millis};
use crate::{Delivery, DeliveryStream, Direction, Envelope, QueueError, Settle, Settlement};

/// The shortest wait between two claim passes that found nothing, so that a message due in the
/// same millisecond cannot make the consumer spin.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Open a consumer stream on a direction.
pub(super) fn stream(shared: Arc<Shared>, direction: Direction, prefetch: u16) -> DeliveryStream {
    // A prefetch of 0 is taken as 1, as the RabbitMQ backend does: there is always a bound.
    let prefetch = usize::from(prefetch.max(1));
    let consumer = Consumer {
        permits: Arc::new(Semaphore::new(prefetch)),
        closed: shared.closed.subscribe(),
        shared,
        direction,
        claimed: VecDeque::new(),
        backoff: false,
        ended: false,
    };
    Box::pin(futures::stream::unfold(
        consumer,
        |mut consumer| async move {
            let item = consumer.next().await?;
            Some((item, consumer))
        },
    ))
}

struct Consumer {
    shared: Arc<Shared>,
    direction: Direction,
    /// One permit per unsettled delivery; each delivery gives its permit back when settled.
    permits: Arc<Semaphore>,
    /// Deliveries claimed but not yet handed out.
    claimed: VecDeque<Delivery>,
    closed: tokio::sync::watch::Receiver<bool>,
    /// The last claim failed: wait a poll interval before the next.
    backoff: bool,
    ended: bool,
}

impl Consumer {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        loop {
            if let Some(delivery) = self.claimed.pop_front() {
                return Some(Ok(delivery));
            }
            if self.ended {
                return None;
            }
            if std::mem::take(&mut self.backoff) {
                self.pause().await;
            }
            if let Err(error) = self.fill().await {
                // The stream ends after the queue closes; other errors may pass, so it goes on.
                if *self.closed.borrow() || matches!(error, QueueError::ConsumerEnded(_)) {
                    self.ended = true;
                    return Some(Err(ended()));
                }
                self.backoff = true;
                return Some(Err(error));
            }
        }
    }

    /// Wait for room, then for due messages, and claim as many as there is room for.
    async fn fill(&mut self) -> Result<(), QueueError> {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;

        // Wait until at least one unsettled delivery is settled when prefetch is used up.
        let mut room = tokio::select! {
            permit = Arc::clone(&self.permits).acquire_owned() => permit.map_err(|_| ended())?,
            _ = self.closed.wait_for(|closed| *closed) => return Err(ended()),
        };
        let spare = self.permits.available_permits();
        if spare > 0
            && let Ok(more) = Arc::clone(&self.permits).try_acquire_many_owned(spare as u32)
        {
            room.merge(more);
        }

        // Listen before claiming, so that a publish during the claim still wakes this consumer.
        let wake = shared.wakeup(self.direction).notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        let request = ClaimRequest {
            direction: self.direction,
            room: room.num_permits(),
            token: ulid::Ulid::new().to_string(),
            lease_ms: millis(config.lease),
            delivery_limit: config.delivery_limit,
        };
        let claim_shared = Arc::clone(&shared);
        let claimed_at = tokio::time::Instant::now();
        let (leased, buried, next_due) = shared
            .writer
            .call(move |conn| {
                let claimed = store::claim(conn, &request, now_ms())?;
                // Leases exist from here on: one that never reaches a consumer gives its
                // message back when dropped.
                let token: Arc<str> = Arc::from(request.token.as_str());
                let mut held = claim_shared.held();
                for row in &claimed.rows {
                    held.insert((row.seq, Arc::clone(&token)), claimed_at);
                }
                drop(held);
                let leased = claimed
                    .rows
                    .into_iter()
                    .map(|row| {
                        let lease = Lease {
                            shared: Arc::clone(&claim_shared),
                            direction: request.direction,
                            seq: row.seq,
                            message_id: row.envelope.message_id.clone(),
                            token: Arc::clone(&token),
                            armed: true,
                        };
                        (row.envelope, row.redelivered, lease)
                    })
                    .collect::<Vec<_>>();
                Ok((leased, claimed.over_limit, claimed.next_due))
            })
            .await?;

        for message_id in &buried {
            warn!(
                queue = self.direction.as_str(),
                message_id = %message_id,
                limit = config.delivery_limit,
                "message dead-lettered after too many deliveries without settlement"
            );
            over_limit(self.direction);
        }

        if !leased.is_empty() {
            for (envelope, redelivered, lease) in leased {
                let Some(permit) = room.split(1) else {
                    // Cannot happen: the claim asked for no more than the permits held.
                    break;
                };
                debug!(
                    queue = self.direction.as_str(),
                    message_id = %envelope.message_id,
                    attempt = envelope.attempt,
                    redelivered,
                    "message claimed"
                );
                let settle = EmbeddedSettle {
                    lease,
                    _permit: permit,
                };
                self.claimed
                    .push_back(Delivery::new(envelope, redelivered, Box::new(settle)));
            }
            return Ok(());
        }

        // Nothing due: sleep until a local publish, the next due time, or the poll interval
        // (another process may share the file), whichever comes first.
        drop(room);
        let wait = next_due
            .map(|due| Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64))
            .map_or(config.poll_interval, |until| {
                until.min(config.poll_interval)
            })
            .max(MIN_WAIT);
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(wait) => {}
            _ = self.closed.wait_for(|closed| *closed) => return Err(ended()),
        }
        Ok(())
    }

    /// After an error, wait a poll interval (or for the close) before claiming again.
    async fn pause(&mut self) {
        let interval = self.shared.config.poll_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = self.closed.wait_for(|closed| *closed) => {}
        }
    }
}

fn ended() -> QueueError {
    QueueError::ConsumerEnded("embedded queue closed".to_owned())
}

/// The claim on one message, renewed by the queue while it lives (see `Shared::held`). Dropped
/// unsettled, it gives the message back at once (due now, delivery count kept) instead of
/// letting it wait for the lease to expire.
struct Lease {
    shared: Arc<Shared>,
    direction: Direction,
    seq: i64,
    message_id: String,
    token: Arc<str>,
    armed: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared
            .held()
            .remove(&(self.seq, Arc::clone(&self.token)));
        if !self.armed {
            return;
        }
        let (seq, token) = (self.seq, Arc::clone(&self.token));
        let message_id = std::mem::take(&mut self.message_id);
        let shared = Arc::clone(&self.shared);
        let direction = self.direction;
        // Nobody waits for the answer; if the queue is closed the lease simply expires later.
        let _ = self.shared.writer.submit(move |conn| {
            let limit = shared.config.delivery_limit;
            let released = store::release(conn, seq, &token, limit, now_ms())?;
            match released {
                // The writer runs one job at a time, so a woken consumer's claim comes after
                // this release's commit.
                Released::Ready => shared.wakeup(direction).notify_waiters(),
                Released::Dead => {
                    warn!(
                        queue = direction.as_str(),
                        message_id = %message_id,
                        limit,
                        "message dead-lettered after too many deliveries without settlement"
                    );
                    over_limit(direction);
                }
                Released::Lost => {}
            }
            Ok(released)
        });
    }
}

/// Count a message dead-lettered for reaching the delivery limit.
fn over_limit(direction: Direction) {
    crate::telemetry::dead_lettered(direction, DELIVERY_LIMIT_REASON);
}

/// Settles one embedded delivery; holds one prefetch permit until then.
struct EmbeddedSettle {
    lease: Lease,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn settle(
        mut self: Box<Self>,
        envelope: Envelope,
        settlement: Settlement,
    ) -> Result<(), QueueError> {
        // Settled or not, this lease is not given back on drop any more: a failed settle leaves
        // the message to its lease expiry, which redelivers it.
        self.lease.armed = false;
        let seq = self.lease.seq;
        let token = Arc::clone(&self.lease.token);
        let direction = self.lease.direction;
        let shared = &self.lease.shared;
        let queue = direction.as_str();

        match settlement {
            Settlement::Ack => {
                let held = shared
                    .writer
                    .call(move |conn| store::ack(conn, seq, &token))
                    .await?;
                lease_held(held, &envelope, direction)?;
                debug!(queue, message_id = %envelope.message_id, "message acknowledged");
            }
            Settlement::Retry { delay, failure } => {
                let next_envelope = envelope.clone();
                let held = shared
                    .writer
                    .call(move |conn| {
                        let now = now_ms();
                        let next = next_envelope.next_attempt(now);
                        store::retry(conn, seq, &token, &next, now.saturating_add(millis(delay)))
                    })
                    .await?;
                lease_held(held, &envelope, direction)?;
                crate::telemetry::retried(direction);
                debug!(
                    queue,
                    message_id = %envelope.message_id,
                    attempt = envelope.attempt,
                    delay_ms = millis(delay),
                    reason = %failure.reason,
                    "message scheduled for retry"
                );
                // Idle consumers wake to take the new due time into account.
                shared.wakeup(direction).notify_waiters();
            }
            Settlement::Dead(failure) => {
                let reason = failure.reason.clone();
                let held = shared
                    .writer
                    .call(move |conn| store::bury(conn, seq, &token, &failure, now_ms()))
                    .await?;
                lease_held(held, &envelope, direction)?;
                crate::telemetry::dead_lettered(direction, &reason);
                debug!(
                    queue,
                    message_id = %envelope.message_id,
                    reason = %reason,
                    "message dead-lettered"
                );
            }
        }
        Ok(())
    }
}

/// A settle whose lease expired and was claimed by another consumer changed nothing.
fn lease_held(held: bool, envelope: &Envelope, direction: Direction) -> Result<(), QueueError> {
    if held {
        return Ok(());
    }
    warn!(
        queue = direction.as_str(),
        message_id = %envelope.message_id,
        "settle ignored: the lease expired and another consumer holds the message"
    );
    Err(QueueError::Refused(format!(
        "lease on message {} expired and another consumer holds it now",
        envelope.message_id
    )))
}
