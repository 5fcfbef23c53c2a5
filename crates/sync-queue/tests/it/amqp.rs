//! RabbitMQ backend tests, against the broker at 127.0.0.1:5672 (guest/guest). Each test uses a
//! prefix of its own (a ULID) and deletes its exchange and queues when it ends, even on panic.
//! The shared conformance suite runs here too, plus what only a broker can show: redeclaration,
//! unroutable messages, the delivery limit, outside producers, concurrent confirms, and
//! connections the broker closes.
//!
//! Nothing here stops or restarts the broker (other tests share it); closing one of this test's
//! own connections uses `rabbitmqctl close_connection`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sync_core::time::now_ms;
use sync_queue::amqp::{AmqpConfig, AmqpQueue, Topology};
use sync_queue::{DeadFilter, Direction, Failure, Queue, QueueError, Settlement, Source};
use tokio::time::Instant;
use ulid::Ulid;

use crate::conformance::{
    self, Timing, assert_quiet, dead_letters, envelope, ids_of, next, publish, settle, subscribe,
};

const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn timing() -> Timing {
    Timing::default()
}

/// A queue configuration with a prefix of its own. Dropping it deletes everything the prefix
/// declared on the broker.
struct Scratch {
    config: AmqpConfig,
}

impl Scratch {
    async fn new() -> Self {
        Self::with(|_| {}).await
    }

    async fn with(adjust: impl FnOnce(&mut AmqpConfig)) -> Self {
        require_broker().await;
        let mut config = AmqpConfig {
            url: BROKER.into(),
            prefix: format!("ccsync-test-{}", Ulid::new().to_string().to_lowercase()),
            retry_tiers: vec![Duration::from_secs(1), Duration::from_secs(30)],
            delivery_limit: 10,
            operation_timeout: Duration::from_secs(10),
        };
        adjust(&mut config);
        Self { config }
    }

    async fn queue(&self) -> AmqpQueue {
        AmqpQueue::connect(self.config.clone())
            .await
            .unwrap_or_else(|error| panic!("connecting {}: {error}", self.config.prefix))
    }

    fn topology(&self) -> Topology {
        Topology::new(
            self.config.prefix.clone(),
            &self.config.retry_tiers,
            self.config.delivery_limit,
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The test's runtime may be shutting down (or panicking): clean up on a runtime of our own.
        let topology = self.topology();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(connection) =
                    Connection::connect(BROKER, ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(channel) = connection.create_channel().await else {
                    return;
                };
                for queue in topology.queues() {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                let _ = channel
                    .exchange_delete(topology.exchange().into(), ExchangeDeleteOptions::default())
                    .await;
                let _ = connection.close(200, "cleaned up".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Fail loudly, with the fix, when the broker is not there.
async fn require_broker() {
    match tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(BROKER, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "reachable".into()).await;
        }
        Ok(Err(error)) => panic!(
            "RabbitMQ is not reachable at 127.0.0.1:5672: start it with \
             `rabbitmq-server -detached` ({error})"
        ),
        Err(_) => panic!(
            "RabbitMQ is not reachable at 127.0.0.1:5672: start it with \
             `rabbitmq-server -detached` (no answer within 10 s)"
        ),
    }
}

/// A raw connection for what an outside party does to the broker.
async fn raw_channel() -> (Connection, lapin::Channel) {
    let connection = Connection::connect(BROKER, ConnectionProperties::default())
        .await
        .expect("a raw connection");
    let channel = connection.create_channel().await.expect("a raw channel");
    (connection, channel)
}

/// The conformance suite, each case on a fresh prefix.
async fn fresh() -> (Arc<dyn Queue>, Scratch) {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    (queue, scratch)
}

conformance::conformance_suite!(fresh, timing());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_declared_twice_is_fine_and_prefixes_stay_apart() {
    let scratch = Scratch::new().await;
    let first: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let second: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let other_scratch = Scratch::new().await;
    let other: Arc<dyn Queue> = Arc::new(other_scratch.queue().await);

    let sent = envelope(Source::CustomerioEvents, "twice");
    publish(&first, &sent).await;
    let mut elsewhere = subscribe(&other, Direction::Inbound, 10).await;
    let mut stream = subscribe(&second, Direction::Inbound, 10).await;
    let delivery = next(
        &mut stream,
        &timing(),
        "the message, through the second queue",
    )
    .await;
    assert_eq!(delivery.envelope, sent);
    settle(delivery, Settlement::Ack).await;
    assert_quiet(&mut elsewhere, &timing()).await;

    // Other arguments for existing queues are a configuration error, not an outage.
    let mut changed = scratch.config.clone();
    changed.delivery_limit += 1;
    match AmqpQueue::connect(changed).await {
        Err(QueueError::Other(message)) => assert!(message.contains("policy"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_publish_is_refused_and_the_binding_comes_back() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let topology = scratch.topology();
    let (connection, channel) = raw_channel().await;
    channel
        .queue_unbind(
            topology.work_queue(Direction::Outbound).as_str().into(),
            topology.exchange().into(),
            "chameleon.#".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind the outbound queue");

    let lost = envelope(Source::ChameleonWebhook, "unroutable");
    match queue.publish(&lost).await {
        Err(QueueError::Refused(message)) => assert!(message.contains("unroutable"), "{message}"),
        other => panic!("expected the publish to be refused, got {other:?}"),
    }

    // The refusal makes the next publish declare the topology again.
    let found = envelope(Source::ChameleonWebhook, "routable");
    publish(&queue, &found).await;
    let mut stream = subscribe(&queue, Direction::Outbound, 10).await;
    let delivery = next(&mut stream, &timing(), "the publish after the refusal").await;
    assert_eq!(delivery.envelope.message_id, found.message_id);
    settle(delivery, Settlement::Ack).await;
    assert_quiet(&mut stream, &timing()).await;
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_producers_bare_message_is_consumed_with_defaults() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let (connection, channel) = raw_channel().await;
    let body = br#"{"event": "Step Seen", "uid": "user_1", "tour_id": "t1"}"#;
    let before = now_ms();
    for properties in [
        BasicProperties::default(),
        BasicProperties::default().with_message_id("producer-42".into()),
    ] {
        channel
            .basic_publish(
                scratch.config.prefix.as_str().into(),
                "chameleon.event".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("raw publish");
    }

    let mut stream = subscribe(&queue, Direction::Outbound, 10).await;
    let bare = next(&mut stream, &timing(), "the bare message").await;
    let named = next(&mut stream, &timing(), "the message with an id").await;
    let after = now_ms();
    for delivery in [&bare, &named] {
        let envelope = &delivery.envelope;
        assert_eq!(envelope.source, Source::ChameleonEvent);
        assert_eq!(envelope.attempt, 1);
        assert_eq!(&envelope.body[..], body);
        assert_eq!(envelope.provider_event_id, None);
        assert_eq!(envelope.first_failed_at, None);
        assert!((before..=after).contains(&envelope.received_at));
    }
    assert!(bare.envelope.message_id.parse::<Ulid>().is_ok());
    assert_eq!(named.envelope.message_id, "producer-42");

    // From its first retry on, the message carries our headers, and keeps the id it was given.
    let id = bare.envelope.message_id.clone();
    settle(
        bare,
        Settlement::Retry {
            delay: Duration::from_millis(10),
            failure: Failure::new("upstream_unavailable", Some(503), "unavailable"),
        },
    )
    .await;
    settle(named, Settlement::Ack).await;
    let retried = next(&mut stream, &timing(), "the retried bare message").await;
    assert_eq!(
        (
            retried.envelope.message_id.as_str(),
            retried.envelope.attempt
        ),
        (id.as_str(), 2)
    );
    settle(retried, Settlement::Ack).await;
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_dead_with_reason_delivery_limit() {
    let scratch = Scratch::with(|config| config.delivery_limit = 2).await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let (connection, channel) = raw_channel().await;
    let body = br#"{"event": "crashes the relay"}"#;
    channel
        .basic_publish(
            scratch.config.prefix.as_str().into(),
            "chameleon.event".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("raw publish");

    // A consumer that takes the message and dies, again and again, until the broker gives up.
    let deadline = Instant::now() + timing().patience;
    let mut deliveries = 0;
    let dead = loop {
        assert!(
            Instant::now() < deadline,
            "not dead-lettered after {deliveries} deliveries"
        );
        let mut stream = subscribe(&queue, Direction::Outbound, 1).await;
        if let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(500), stream.next()).await
        {
            deliveries += 1;
            drop(delivery);
        }
        drop(stream);
        let dead = dead_letters(&queue, Direction::Outbound, &DeadFilter::default()).await;
        if !dead.is_empty() {
            break dead;
        }
    };
    assert_eq!(dead.len(), 1);
    assert!(
        deliveries > 2,
        "dead-lettered after {deliveries} deliveries, with a limit of 2"
    );
    let letter = &dead[0];
    assert_eq!(letter.reason, "delivery_limit");
    assert_eq!(letter.status, None);
    assert_eq!(letter.envelope.source, Source::ChameleonEvent);
    assert_eq!(&letter.envelope.body[..], body);

    // Without an id of its own, it is still named the same way each time it is read, so an
    // operator can replay it by that name.
    let again = dead_letters(&queue, Direction::Outbound, &DeadFilter::default()).await;
    assert_eq!(ids_of(&again), ids_of(&dead));
    let by_id = DeadFilter {
        ids: vec![letter.envelope.message_id.clone()],
        ..DeadFilter::default()
    };
    let replayed = queue
        .replay(Direction::Outbound, &by_id, None)
        .await
        .expect("replay the poison message");
    assert_eq!(replayed, 1);
    let mut stream = subscribe(&queue, Direction::Outbound, 1).await;
    let back = next(&mut stream, &timing(), "the replayed poison message").await;
    assert_eq!(back.envelope.message_id, letter.envelope.message_id);
    assert_eq!(back.envelope.attempt, 1);
    settle(back, Settlement::Ack).await;
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_dead_letters_often_drops_none() {
    let scratch = Scratch::with(|config| config.delivery_limit = 2).await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let sent = envelope(Source::CustomerioReporting, "listed");
    publish(&queue, &sent).await;
    let mut stream = subscribe(&queue, Direction::Inbound, 1).await;
    let delivery = next(&mut stream, &timing(), "the message").await;
    settle(
        delivery,
        Settlement::Dead(Failure::new("no_identity", None, "no uid")),
    )
    .await;

    // Each listing takes the message and gives it back; no limit may count that.
    for round in 0..12 {
        let listed = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
        assert_eq!(listed.len(), 1, "round {round}");
        assert_eq!(listed[0].envelope, sent, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_publishes_are_all_confirmed() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let sent: Vec<_> = (0..200)
        .map(|n| envelope(Source::CustomerioReporting, &format!("many-{n}")))
        .collect();
    let started = Instant::now();
    let outcomes =
        futures::future::join_all(sent.iter().map(|envelope| queue.publish(envelope))).await;
    let took = started.elapsed();
    for (envelope, outcome) in sent.iter().zip(outcomes) {
        outcome.unwrap_or_else(|error| panic!("publishing {}: {error}", envelope.message_id));
    }
    assert!(took < timing().patience, "200 publishes took {took:?}");

    let mut stream = subscribe(&queue, Direction::Inbound, 250).await;
    let mut seen = HashSet::new();
    while seen.len() < sent.len() {
        let delivery = next(&mut stream, &timing(), "one of the 200 messages").await;
        seen.insert(delivery.envelope.message_id.clone());
        settle(delivery, Settlement::Ack).await;
    }
    let expected: HashSet<String> = sent.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(seen, expected);
    assert_quiet(&mut stream, &timing()).await;
}

/// Publishes share confirm channels, so a return must fail its own publish and no other: an
/// unroutable message reported as published would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_among_concurrent_publishes_fail_only_their_own() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let topology = scratch.topology();
    let (connection, channel) = raw_channel().await;
    channel
        .queue_unbind(
            topology.work_queue(Direction::Outbound).as_str().into(),
            topology.exchange().into(),
            "chameleon.#".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind the outbound queue");

    let sent: Vec<_> = (0..150)
        .map(|n| match n % 5 {
            0 => envelope(Source::ChameleonWebhook, &format!("mixed-out-{n}")),
            _ => envelope(Source::CustomerioReporting, &format!("mixed-in-{n}")),
        })
        .collect();
    let outcomes =
        futures::future::join_all(sent.iter().map(|envelope| queue.publish(envelope))).await;

    let mut refused = 0;
    let mut inbound = HashSet::new();
    let mut outbound = HashSet::new();
    for (envelope, outcome) in sent.iter().zip(outcomes) {
        let id = envelope.message_id.clone();
        match (envelope.source, outcome) {
            (Source::ChameleonWebhook, Ok(())) => {
                outbound.insert(id);
            }
            (Source::ChameleonWebhook, Err(QueueError::Refused(message))) => {
                assert!(message.contains("unroutable"), "{message}");
                refused += 1;
            }
            (_, Ok(())) => {
                inbound.insert(id);
            }
            (_, outcome) => panic!("routable {id} failed: {outcome:?}"),
        }
    }
    assert!(refused > 0, "no outbound publish was refused");
    assert_eq!(inbound.len(), 120);

    // Every publish reported as done is in its queue; refused ones are nowhere.
    for (direction, expected) in [
        (Direction::Inbound, inbound),
        (Direction::Outbound, outbound),
    ] {
        let mut stream = subscribe(&queue, direction, 200).await;
        let mut seen = HashSet::new();
        while seen.len() < expected.len() {
            let delivery = next(&mut stream, &timing(), "a confirmed publish").await;
            seen.insert(delivery.envelope.message_id.clone());
            settle(delivery, Settlement::Ack).await;
        }
        assert_eq!(seen, expected, "{direction:?}");
        assert_quiet(&mut stream, &timing()).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_is_unavailable_within_the_operation_timeout() {
    let config = AmqpConfig {
        url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        prefix: format!("ccsync-test-{}", Ulid::new().to_string().to_lowercase()),
        operation_timeout: Duration::from_secs(2),
        ..AmqpConfig::default()
    };
    let started = Instant::now();
    let outcome = AmqpQueue::connect(config).await;
    assert!(
        matches!(outcome, Err(QueueError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_end_the_stream_and_heal_on_the_next_call() {
    // A broker user of its own, so that closing "its" connections touches no other test's.
    let user = BrokerUser::new();
    let scratch = Scratch::with(|config| config.url = user.url()).await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let mut stream = subscribe(&queue, Direction::Outbound, 10).await;
    let first = envelope(Source::ChameleonWebhook, "before");
    publish(&queue, &first).await;
    let delivery = next(&mut stream, &timing(), "the first message").await;
    settle(delivery, Settlement::Ack).await;

    rabbitmqctl(&["close_all_user_connections", &user.name, "closed by a test"]);

    // The broken stream says so, and does not pretend to be empty.
    match tokio::time::timeout(timing().patience, stream.next()).await {
        Ok(Some(Err(QueueError::ConsumerEnded(_)))) => {}
        other => panic!(
            "expected the stream to end with ConsumerEnded, got {:?}",
            other.map(|item| item.map(|result| result.map(|d| d.envelope.message_id)))
        ),
    }
    assert!(stream.next().await.is_none(), "a broken stream ends");

    // Publishing and subscribing reconnect on their own.
    let second = envelope(Source::ChameleonWebhook, "after");
    let deadline = Instant::now() + timing().patience;
    loop {
        match queue.publish(&second).await {
            Ok(()) => break,
            Err(QueueError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("publishing after the connection closed: {error}"),
        }
    }
    let mut stream = subscribe(&queue, Direction::Outbound, 10).await;
    let delivery = next(&mut stream, &timing(), "the message after reconnecting").await;
    assert_eq!(delivery.envelope.message_id, second.message_id);
    settle(delivery, Settlement::Ack).await;
    queue.check().await.expect("reachable again");

    queue.close().await;
    assert!(matches!(
        queue.check().await,
        Err(QueueError::Unavailable(_))
    ));
}

/// A broker user with full rights on `/`, deleted when dropped.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    fn new() -> Self {
        let name = format!("ccsync-test-{}", Ulid::new().to_string().to_lowercase());
        rabbitmqctl(&["add_user", &name, "test"]);
        rabbitmqctl(&["set_permissions", "-p", "/", &name, ".*", ".*", ".*"]);
        Self { name }
    }

    fn url(&self) -> String {
        format!("amqp://{}:test@127.0.0.1:5672/%2f", self.name)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

/// Run `rabbitmqctl` (installed with the broker) and insist that it succeeds.
fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running rabbitmqctl {args:?}: {error}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_acked_out_of_order_around_a_held_delivery_is_all_settled() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    const COUNT: usize = 200;
    for n in 0..COUNT {
        publish(
            &queue,
            &envelope(Source::ChameleonWebhook, &format!("m{n}")),
        )
        .await;
    }
    let mut stream = subscribe(&queue, Direction::Outbound, COUNT as u16).await;
    let mut deliveries = Vec::new();
    for n in 0..COUNT {
        deliveries.push(Some(
            next(&mut stream, &timing(), &format!("delivery {n}")).await,
        ));
    }

    // One delivery early in the window stays unsettled; the rest are acked at once, in an order
    // unrelated to their tags (37 and 200 share no factor, so this visits every index once).
    let held = deliveries[50].take().expect("delivery 50");
    let acks = (0..COUNT)
        .map(|i| (i * 37) % COUNT)
        .filter_map(|i| deliveries[i].take())
        .map(|delivery| settle(delivery, Settlement::Ack));
    futures::future::join_all(acks).await;

    // The channel is still open and its window has room: a new message comes on the same stream.
    let late = envelope(Source::ChameleonWebhook, "late");
    publish(&queue, &late).await;
    let delivery = next(&mut stream, &timing(), "the late message").await;
    assert_eq!(delivery.envelope.message_id, late.message_id);
    settle(delivery, Settlement::Ack).await;
    settle(held, Settlement::Ack).await;
    drop(stream);

    // Every ack reached the broker: a new subscription gets nothing back.
    let mut stream = subscribe(&queue, Direction::Outbound, COUNT as u16).await;
    assert_quiet(&mut stream, &timing()).await;
    queue.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_another_reader_cut_short_fails_saying_so() {
    let scratch = Scratch::new().await;
    let queue: Arc<dyn Queue> = Arc::new(scratch.queue().await);
    let mut stream = subscribe(&queue, Direction::Inbound, 10).await;
    for tag in ["cut-1", "cut-2", "cut-3"] {
        publish(&queue, &envelope(Source::CustomerioEvents, tag)).await;
        let delivery = next(&mut stream, &timing(), "a message to dead-letter").await;
        settle(
            delivery,
            Settlement::Dead(Failure::new("no_identity", None, "no uid")),
        )
        .await;
    }
    drop(stream);

    // Two replays a second: while the replay pauses after its first, another reader (a second
    // dlq command) takes the next dead letter and holds it.
    let replay = tokio::spawn({
        let queue = Arc::clone(&queue);
        async move {
            queue
                .replay(Direction::Inbound, &DeadFilter::default(), Some(2))
                .await
        }
    });
    let topology = scratch.topology();
    let (connection, channel) = raw_channel().await;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let deadline = Instant::now() + timing().patience;
    loop {
        let work = channel
            .queue_declare(
                topology.work_queue(Direction::Inbound).as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await
            .expect("the work queue");
        if work.message_count() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the replay never replayed one");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = channel
        .basic_get(
            topology.dead_queue(Direction::Inbound).as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get");
    assert!(held.is_some(), "no dead letter left to hold");

    let outcome = replay.await.expect("the replay task");
    let Err(QueueError::Other(message)) = outcome else {
        panic!("a replay that missed a dead letter reported {outcome:?}");
    };
    assert!(
        message.contains("replayed 2, but 1 of the messages")
            && message.contains("another dlq command"),
        "{message}"
    );

    // Once the other reader lets go, the dead letter is there to replay.
    let _ = connection.close(200, "done".into()).await;
    let deadline = Instant::now() + timing().patience;
    loop {
        let left = dead_letters(&queue, Direction::Inbound, &DeadFilter::default()).await;
        if left.len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "left: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
