//! Backend-independent queue behaviour: what every [`Queue`] must do, written once and run
//! against each backend.
//!
//! # Running it against a backend
//!
//! Each case is an `async fn(Arc<dyn Queue>, Timing)` that starts from an empty queue of its
//! own. The [`conformance_suite!`] macro turns them all into one `#[tokio::test]` each, given a
//! factory and a [`Timing`]:
//!
//! ```ignore
//! /// A fresh, empty queue, and whatever must live as long as the case (dropped at its end:
//! /// a `TempDir`, a guard that deletes the broker's queues).
//! async fn fresh() -> (Arc<dyn Queue>, TempDir) { ... }
//!
//! crate::conformance::conformance_suite!(fresh, crate::conformance::Timing::default());
//! ```
//!
//! The factory is named by path from the calling module. A case that fails panics with what it
//! expected. The cases run on the real clock, because brokers and files keep time on their own:
//! they wait only with deadlines that a slow machine can't exceed (`Timing::patience`), and
//! watch for something that must not happen for `Timing::quiet`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sync_core::time::now_ms;
use sync_queue::{
    DeadFilter, DeadLetter, Delivery, DeliveryStream, Direction, Envelope, Failure, Queue,
    Settlement, Source,
};
use tokio::time::Instant;

/// How long the cases wait, per backend.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The delay the retry cases ask for. The RabbitMQ backend must have a tier of exactly this.
    pub retry_delay: Duration,
    /// The most a message that should arrive may take (redelivery after a consumer is dropped
    /// included), on a loaded machine.
    pub patience: Duration,
    /// How long to watch for a message that must not arrive.
    pub quiet: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry_delay: Duration::from_secs(1),
            patience: Duration::from_secs(30),
            quiet: Duration::from_millis(500),
        }
    }
}

/// One `#[tokio::test]` per conformance case, each with a fresh queue from `$make`.
macro_rules! conformance_suite {
    ($make:path, $timing:expr) => {
        mod conformance_suite {
            use super::*;

            async fn run<Case, Done>(case: Case)
            where
                Case: FnOnce(
                    ::std::sync::Arc<dyn ::sync_queue::Queue>,
                    $crate::conformance::Timing,
                ) -> Done,
                Done: ::std::future::Future<Output = ()>,
            {
                let (queue, guard) = $make().await;
                case(queue, $timing).await;
                drop(guard);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn publish_then_consume() {
                run($crate::conformance::publish_then_consume).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ack_removes() {
                run($crate::conformance::ack_removes).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retry_comes_back_later_with_attempt_plus_one() {
                run($crate::conformance::retry_comes_back_later_with_attempt_plus_one).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letter_keeps_reason_status_error() {
                run($crate::conformance::dead_letter_keeps_reason_status_error).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_replay_purge_with_filters() {
                run($crate::conformance::list_replay_purge_with_filters).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replay_keeps_id_and_restarts_attempts() {
                run($crate::conformance::replay_keeps_id_and_restarts_attempts).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replay_ends_while_a_worker_dead_letters_the_copies_again() {
                run($crate::conformance::replay_ends_while_a_worker_dead_letters_the_copies_again)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unsettled_delivery_is_redelivered_after_consumer_drop() {
                run($crate::conformance::unsettled_delivery_is_redelivered_after_consumer_drop)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn directions_are_separate() {
                run($crate::conformance::directions_are_separate).await;
            }
        }
    };
}
pub(crate) use conformance_suite;

// === the cases ===

/// Every field of a published envelope comes back as it went in, body byte for byte.
pub async fn publish_then_consume(queue: Arc<dyn Queue>, timing: Timing) {
    queue.check().await.expect("a fresh queue is reachable");
    let first = envelope(Source::CustomerioReporting, "first");
    let now = now_ms();
    let retried = envelope(Source::CustomerioProfiles, "second")
        .next_attempt(now - 1_000)
        .next_attempt(now);
    publish(&queue, &first).await;
    publish(&queue, &retried).await;

    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    let mut delivered = HashMap::new();
    for _ in 0..2 {
        let delivery = next(&mut stream, &timing, "a published message").await;
        assert!(
            !delivery.redelivered,
            "a first delivery is not a redelivery"
        );
        delivered.insert(delivery.envelope.message_id.clone(), delivery);
    }
    for sent in [&first, &retried] {
        let delivery = delivered
            .remove(&sent.message_id)
            .unwrap_or_else(|| panic!("{} was not delivered", sent.message_id));
        assert_eq!(
            &delivery.envelope, sent,
            "the envelope changed in the queue"
        );
        settle(delivery, Settlement::Ack).await;
    }
    assert_quiet(&mut stream, &timing).await;
}

/// An acknowledged message is gone: a new subscriber gets only what was published afterwards.
pub async fn ack_removes(queue: Arc<dyn Queue>, timing: Timing) {
    let sent = [
        envelope(Source::CustomerioEvents, "a"),
        envelope(Source::CustomerioEvents, "b"),
    ];
    for envelope in &sent {
        publish(&queue, envelope).await;
    }
    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    let mut seen = HashSet::new();
    for _ in 0..sent.len() {
        let delivery = next(&mut stream, &timing, "a published message").await;
        seen.insert(delivery.envelope.message_id.clone());
        settle(delivery, Settlement::Ack).await;
    }
    assert_eq!(seen, ids(&sent), "each message is delivered once");
    drop(stream);

    let later = envelope(Source::CustomerioEvents, "c");
    publish(&queue, &later).await;
    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    let delivery = next(&mut stream, &timing, "the message published after the acks").await;
    assert_eq!(
        delivery.envelope.message_id, later.message_id,
        "an acknowledged message came back"
    );
    settle(delivery, Settlement::Ack).await;
    assert_quiet(&mut stream, &timing).await;
}

/// A retry comes back no sooner than asked, with the same id and body, one attempt more, and
/// the time of the first failure kept across retries.
pub async fn retry_comes_back_later_with_attempt_plus_one(queue: Arc<dyn Queue>, timing: Timing) {
    let sent = envelope(Source::ChameleonWebhook, "retried");
    publish(&queue, &sent).await;
    let mut stream = subscribe(&queue, Direction::Outbound, 1).await;
    let first = next(&mut stream, &timing, "the first attempt").await;
    assert_eq!(first.envelope.attempt, 1);

    let failed_from = now_ms();
    let started = Instant::now();
    settle(first, retry(timing.retry_delay)).await;
    let failed_by = now_ms();
    let second = next(&mut stream, &timing, "the retry").await;
    let waited = started.elapsed();
    assert!(
        waited >= timing.retry_delay.mul_f64(0.9),
        "the retry came back after {waited:?}, before its delay of {:?}",
        timing.retry_delay
    );
    let copy = &second.envelope;
    assert_eq!(copy.attempt, 2);
    assert_eq!(
        (&copy.message_id, copy.source, &copy.body),
        (&sent.message_id, sent.source, &sent.body)
    );
    assert_eq!(copy.received_at, sent.received_at);
    assert_eq!(copy.provider_event_id, sent.provider_event_id);
    let first_failed_at = copy
        .first_failed_at
        .expect("a retry records its first failure");
    assert!(
        (failed_from..=failed_by).contains(&first_failed_at),
        "first_failed_at {first_failed_at} is not the time of the failure \
         ({failed_from}..={failed_by})"
    );

    settle(second, retry(timing.retry_delay)).await;
    let third = next(&mut stream, &timing, "the second retry").await;
    assert_eq!(third.envelope.attempt, 3);
    assert_eq!(third.envelope.first_failed_at, Some(first_failed_at));
    settle(third, Settlement::Ack).await;
    assert_quiet(&mut stream, &timing).await;
}

/// A dead letter keeps its envelope, reason, upstream status and error; it is not delivered,
/// and listing it removes nothing.
pub async fn dead_letter_keeps_reason_status_error(queue: Arc<dyn Queue>, timing: Timing) {
    let rejected = envelope(Source::CustomerioEvents, "rejected");
    let anonymous = envelope(Source::CustomerioReporting, "anonymous");
    let failures = HashMap::from([
        (
            rejected.message_id.clone(),
            Failure::new(
                "upstream_rejected",
                Some(422),
                "chameleon rejected the event: 422 name is required",
            ),
        ),
        (
            anonymous.message_id.clone(),
            Failure::new("no_identity", None, "no uid in identifiers or customer_id"),
        ),
    ]);
    publish(&queue, &rejected).await;
    publish(&queue, &anonymous).await;

    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    let before = now_ms();
    for _ in 0..2 {
        let delivery = next(&mut stream, &timing, "a message to dead-letter").await;
        let failure = failures[&delivery.envelope.message_id].clone();
        settle(delivery, Settlement::Dead(failure)).await;
    }
    let after = now_ms();
    assert_quiet(&mut stream, &timing).await;

    let dead = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&dead), ids(&[rejected.clone(), anonymous.clone()]));
    for letter in &dead {
        let sent = if letter.envelope.message_id == rejected.message_id {
            &rejected
        } else {
            &anonymous
        };
        let failure = &failures[&sent.message_id];
        assert_eq!(&letter.envelope, sent, "the dead letter's envelope changed");
        assert_eq!(
            (&letter.reason, letter.status, &letter.error),
            (&failure.reason, failure.status, &failure.error)
        );
        assert!(
            (before..=after).contains(&letter.dead_at),
            "dead_at {} is not the time of the dead-lettering ({before}..={after})",
            letter.dead_at
        );
    }
    assert!(
        dead.windows(2)
            .all(|pair| pair[0].dead_at <= pair[1].dead_at)
    );

    let again = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(
        ids_of(&again),
        ids_of(&dead),
        "listing removed dead letters"
    );
    let outbound = dead_letters(&queue, Direction::Outbound, &DeadFilter::default()).await;
    assert!(
        outbound.is_empty(),
        "inbound dead letters listed as outbound"
    );
}

/// Filters by id, reason, source and time select the same dead letters for list, replay and
/// purge; what is not selected stays.
pub async fn list_replay_purge_with_filters(queue: Arc<dyn Queue>, timing: Timing) {
    let a = envelope(Source::CustomerioReporting, "a");
    let b = envelope(Source::CustomerioReporting, "b");
    let c = envelope(Source::CustomerioEvents, "c");
    let d = envelope(Source::CustomerioEvents, "d");
    let no_identity = || Failure::new("no_identity", None, "no uid");
    let rejected = || Failure::new("upstream_rejected", Some(400), "bad request");

    // Two batches, with the boundary between them as the time filter's edge.
    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    dead_letter_each(
        &queue,
        &mut stream,
        &timing,
        &[(&a, no_identity()), (&b, rejected())],
    )
    .await;
    let boundary = now_ms() + 1;
    while now_ms() <= boundary {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    dead_letter_each(
        &queue,
        &mut stream,
        &timing,
        &[(&c, no_identity()), (&d, rejected())],
    )
    .await;

    let all = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(
        ids_of(&all),
        ids(&[a.clone(), b.clone(), c.clone(), d.clone()])
    );
    let cases = [
        (
            "ids",
            DeadFilter {
                ids: vec![a.message_id.clone(), c.message_id.clone()],
                ..DeadFilter::default()
            },
            vec![&a, &c],
        ),
        (
            "unknown id",
            DeadFilter {
                ids: vec!["01J0000000000000000000000Z".into()],
                ..DeadFilter::default()
            },
            vec![],
        ),
        (
            "reason",
            DeadFilter {
                reason: Some("upstream_rejected".into()),
                ..DeadFilter::default()
            },
            vec![&b, &d],
        ),
        (
            "source",
            DeadFilter {
                source: Some(Source::CustomerioEvents),
                ..DeadFilter::default()
            },
            vec![&c, &d],
        ),
        (
            "since",
            DeadFilter {
                since: Some(boundary),
                ..DeadFilter::default()
            },
            vec![&c, &d],
        ),
        (
            "until",
            DeadFilter {
                until: Some(boundary),
                ..DeadFilter::default()
            },
            vec![&a, &b],
        ),
        (
            "reason and source",
            DeadFilter {
                reason: Some("no_identity".into()),
                source: Some(Source::CustomerioReporting),
                ..DeadFilter::default()
            },
            vec![&a],
        ),
    ];
    for (name, filter, expected) in &cases {
        let listed = dead_letters(&queue, Direction::Inbound, filter).await;
        let expected: HashSet<String> = expected.iter().map(|e| e.message_id.clone()).collect();
        assert_eq!(ids_of(&listed), expected, "dead letters listed by {name}");
    }

    // Replay what no_identity selects: those two come back to the work queue.
    let by_reason = DeadFilter {
        reason: Some("no_identity".into()),
        ..DeadFilter::default()
    };
    let replayed = queue
        .replay(Direction::Inbound, &by_reason, None)
        .await
        .expect("replay by reason");
    assert_eq!(replayed, 2);
    let mut back = HashSet::new();
    for _ in 0..2 {
        let delivery = next(&mut stream, &timing, "a replayed message").await;
        back.insert(delivery.envelope.message_id.clone());
        settle(delivery, Settlement::Ack).await;
    }
    assert_eq!(back, ids(&[a.clone(), c.clone()]));
    assert_quiet(&mut stream, &timing).await;
    let left = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&left), ids(&[b.clone(), d.clone()]));
    let again = queue
        .replay(Direction::Inbound, &by_reason, None)
        .await
        .expect("replay again");
    assert_eq!(again, 0, "nothing left to replay");

    // Purge by source, then everything.
    let by_source = DeadFilter {
        source: Some(Source::CustomerioReporting),
        ..DeadFilter::default()
    };
    let purged = queue
        .purge(Direction::Inbound, &by_source)
        .await
        .expect("purge by source");
    assert_eq!(purged, 1);
    let left = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&left), ids(std::slice::from_ref(&d)));
    let purged = queue
        .purge(Direction::Inbound, &DeadFilter::default())
        .await
        .expect("purge all");
    assert_eq!(purged, 1);
    assert!(
        dead_letters(&queue, Direction::Inbound, &DeadFilter::default())
            .await
            .is_empty()
    );
    assert_quiet(&mut stream, &timing).await;
}

/// A replayed dead letter keeps its id, body and metadata and starts its attempts over; a rate
/// spaces replays out.
pub async fn replay_keeps_id_and_restarts_attempts(queue: Arc<dyn Queue>, timing: Timing) {
    let now = now_ms();
    let tired = envelope(Source::ChameleonWebhook, "tired")
        .next_attempt(now - 2_000)
        .next_attempt(now - 1_000);
    let others = [
        envelope(Source::ChameleonEvent, "other-1"),
        envelope(Source::ChameleonEvent, "other-2"),
    ];
    let failure = || Failure::new("upstream_rejected", Some(400), "bad request");
    let mut stream = subscribe(&queue, Direction::Outbound, 10).await;
    dead_letter_each(
        &queue,
        &mut stream,
        &timing,
        &[
            (&tired, failure()),
            (&others[0], failure()),
            (&others[1], failure()),
        ],
    )
    .await;

    let by_id = DeadFilter {
        ids: vec![tired.message_id.clone()],
        ..DeadFilter::default()
    };
    let replayed = queue
        .replay(Direction::Outbound, &by_id, None)
        .await
        .expect("replay by id");
    assert_eq!(replayed, 1);
    let delivery = next(&mut stream, &timing, "the replayed message").await;
    let copy = &delivery.envelope;
    assert_eq!(copy.message_id, tired.message_id, "a replay keeps the id");
    assert_eq!(
        (copy.attempt, copy.first_failed_at),
        (1, None),
        "a replay starts the attempts over"
    );
    assert_eq!(
        (
            copy.source,
            &copy.body,
            &copy.provider_event_id,
            copy.received_at
        ),
        (
            tired.source,
            &tired.body,
            &tired.provider_event_id,
            tired.received_at
        )
    );
    settle(delivery, Settlement::Ack).await;

    // Two replays at 4 per second take at least one pause of 250 ms.
    let started = Instant::now();
    let replayed = queue
        .replay(Direction::Outbound, &DeadFilter::default(), Some(4))
        .await
        .expect("replay at a rate");
    assert_eq!(replayed, 2);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "two replays at 4 per second took only {took:?}"
    );
    let mut back = HashSet::new();
    for _ in 0..2 {
        let delivery = next(&mut stream, &timing, "a replayed message").await;
        assert_eq!(delivery.envelope.attempt, 1);
        back.insert(delivery.envelope.message_id.clone());
        settle(delivery, Settlement::Ack).await;
    }
    assert_eq!(back, ids(&others));
    assert!(
        dead_letters(&queue, Direction::Outbound, &DeadFilter::default())
            .await
            .is_empty()
    );
}

/// A replay acts on the dead letters there when it started. With a worker running that fails
/// the copies again (a body with no identity stays without one), each copy lands back in the dead
/// queue during the replay, and the replay must end rather than replay it again and again.
pub async fn replay_ends_while_a_worker_dead_letters_the_copies_again(
    queue: Arc<dyn Queue>,
    timing: Timing,
) {
    let hopeless = [
        envelope(Source::CustomerioEvents, "hopeless-1"),
        envelope(Source::CustomerioEvents, "hopeless-2"),
    ];
    let no_identity = || Failure::new("no_identity", None, "no uid");
    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    dead_letter_each(
        &queue,
        &mut stream,
        &timing,
        &[(&hopeless[0], no_identity()), (&hopeless[1], no_identity())],
    )
    .await;

    let failed_again = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker = tokio::spawn({
        let failed_again = Arc::clone(&failed_again);
        async move {
            while let Some(Ok(delivery)) = stream.next().await {
                settle(delivery, Settlement::Dead(no_identity())).await;
                failed_again.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });

    // The pause after each replay (5 per second) gives the worker time to fail the copy before
    // the replay reads on.
    let replayed = tokio::time::timeout(
        timing.patience,
        queue.replay(Direction::Inbound, &DeadFilter::default(), Some(5)),
    )
    .await
    .expect("the replay ends")
    .expect("replay");
    assert_eq!(replayed, 2, "each dead letter replayed once");

    let deadline = Instant::now() + timing.patience;
    while failed_again.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the copies were not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(timing.quiet).await;
    assert_eq!(
        failed_again.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a copy was replayed more than once"
    );
    worker.abort();
    let dead = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&dead), ids(&hopeless));
}

/// A delivery nobody settled goes back to the queue when its consumer goes away, marked as a
/// redelivery, its attempt unchanged.
pub async fn unsettled_delivery_is_redelivered_after_consumer_drop(
    queue: Arc<dyn Queue>,
    timing: Timing,
) {
    let sent = envelope(Source::ChameleonWebhook, "abandoned");
    publish(&queue, &sent).await;
    let mut stream = subscribe(&queue, Direction::Outbound, 1).await;
    let delivery = next(&mut stream, &timing, "the first delivery").await;
    assert!(!delivery.redelivered);
    drop(delivery);
    drop(stream);

    let mut stream = subscribe(&queue, Direction::Outbound, 1).await;
    let again = next(&mut stream, &timing, "the redelivery").await;
    assert_eq!(again.envelope.message_id, sent.message_id);
    assert!(again.redelivered, "a redelivery is marked as one");
    assert_eq!(again.envelope.attempt, sent.attempt);
    settle(again, Settlement::Ack).await;
    assert_quiet(&mut stream, &timing).await;
}

/// Inbound and outbound are separate queues, for deliveries and dead letters alike.
pub async fn directions_are_separate(queue: Arc<dyn Queue>, timing: Timing) {
    let inbound = envelope(Source::CustomerioEvents, "in");
    let outbound = envelope(Source::ChameleonEvent, "out");
    publish(&queue, &inbound).await;
    publish(&queue, &outbound).await;

    let mut inbound_stream = subscribe(&queue, Direction::Inbound, 10).await;
    let mut outbound_stream = subscribe(&queue, Direction::Outbound, 10).await;
    let delivery = next(&mut inbound_stream, &timing, "the inbound message").await;
    assert_eq!(delivery.envelope.message_id, inbound.message_id);
    settle(
        delivery,
        Settlement::Dead(Failure::new("no_identity", None, "no uid")),
    )
    .await;
    let delivery = next(&mut outbound_stream, &timing, "the outbound message").await;
    assert_eq!(delivery.envelope.message_id, outbound.message_id);
    settle(delivery, Settlement::Ack).await;
    assert_quiet(&mut inbound_stream, &timing).await;
    assert_quiet(&mut outbound_stream, &timing).await;

    let dead_in = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&dead_in), ids(std::slice::from_ref(&inbound)));
    let dead_out = dead_letters(&queue, Direction::Outbound, &DeadFilter::default()).await;
    assert!(dead_out.is_empty());
}

// === helpers, shared with the backend modules ===

/// A fresh envelope whose body is recognisable and not ASCII-only, so that any re-encoding shows.
pub fn envelope(source: Source, tag: &str) -> Envelope {
    let body = format!("{{\"case\": \"{tag}\", \"name\": \"Zoë ✓\",  \"n\": 1}}\n");
    Envelope::new(source, Bytes::from(body), Some(format!("evt-{tag}")))
}

pub async fn publish(queue: &Arc<dyn Queue>, envelope: &Envelope) {
    queue
        .publish(envelope)
        .await
        .unwrap_or_else(|error| panic!("publishing {}: {error}", envelope.message_id));
}

pub async fn subscribe(
    queue: &Arc<dyn Queue>,
    direction: Direction,
    prefetch: u16,
) -> DeliveryStream {
    queue
        .consume(direction, prefetch)
        .await
        .unwrap_or_else(|error| panic!("consuming {direction}: {error}"))
}

/// The next delivery, within `timing.patience` (plus the retry delay, for the retry case).
pub async fn next(stream: &mut DeliveryStream, timing: &Timing, what: &str) -> Delivery {
    let within = timing.patience + timing.retry_delay;
    match tokio::time::timeout(within, stream.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!("waiting for {what}: the stream failed: {error}"),
        Ok(None) => panic!("waiting for {what}: the stream ended"),
        Err(_) => panic!("waiting for {what}: nothing delivered within {within:?}"),
    }
}

/// Nothing is delivered for `timing.quiet`.
pub async fn assert_quiet(stream: &mut DeliveryStream, timing: &Timing) {
    if let Ok(Some(item)) = tokio::time::timeout(timing.quiet, stream.next()).await {
        let what = item.map(|delivery| delivery.envelope.message_id);
        panic!("expected no delivery, got {what:?}");
    }
}

pub async fn settle(delivery: Delivery, settlement: Settlement) {
    let id = delivery.envelope.message_id.clone();
    delivery
        .settle(settlement)
        .await
        .unwrap_or_else(|error| panic!("settling {id}: {error}"));
}

pub async fn dead_letters(
    queue: &Arc<dyn Queue>,
    direction: Direction,
    filter: &DeadFilter,
) -> Vec<DeadLetter> {
    queue
        .dead_letters(direction, filter)
        .await
        .unwrap_or_else(|error| panic!("listing {direction} dead letters: {error}"))
}

fn retry(delay: Duration) -> Settlement {
    Settlement::Retry {
        delay,
        failure: Failure::new("upstream_unavailable", Some(503), "service unavailable"),
    }
}

/// Publish each envelope, take it from the stream and dead-letter it with its failure.
async fn dead_letter_each(
    queue: &Arc<dyn Queue>,
    stream: &mut DeliveryStream,
    timing: &Timing,
    each: &[(&Envelope, Failure)],
) {
    let mut failures: HashMap<String, Failure> = HashMap::new();
    for (envelope, failure) in each {
        publish(queue, envelope).await;
        failures.insert(envelope.message_id.clone(), failure.clone());
    }
    for _ in each {
        let delivery = next(stream, timing, "a message to dead-letter").await;
        let failure = failures
            .remove(&delivery.envelope.message_id)
            .unwrap_or_else(|| panic!("unexpected delivery {}", delivery.envelope.message_id));
        settle(delivery, Settlement::Dead(failure)).await;
    }
}

fn ids(envelopes: &[Envelope]) -> HashSet<String> {
    envelopes.iter().map(|e| e.message_id.clone()).collect()
}

pub fn ids_of(letters: &[DeadLetter]) -> HashSet<String> {
    letters
        .iter()
        .map(|letter| letter.envelope.message_id.clone())
        .collect()
}
