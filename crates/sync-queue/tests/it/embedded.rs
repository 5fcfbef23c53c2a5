//! Embedded backend tests: the SQLite queue in a temporary folder, exercised through the
//! [`Queue`] contract, plus a few direct looks at the file where the contract cannot tell (how
//! many rows exist, the schema version).
//!
//! Due times and leases run on the wall clock (other processes share the file), so these tests
//! use short leases and poll for conditions with generous deadlines instead of tokio's paused
//! clock. A negative check ("not delivered yet") only ever waits for something that cannot
//! happen early, so a slow machine cannot make it fail.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sync_queue::embedded::{EmbeddedConfig, EmbeddedQueue};
use sync_queue::{
    DeadFilter, Delivery, DeliveryStream, Direction, Envelope, Failure, Queue, QueueError,
    Settlement, Source,
};
use tempfile::TempDir;

/// How long any positive expectation may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// How long a negative expectation watches.
const QUIET: Duration = Duration::from_millis(300);

fn config(dir: &TempDir) -> EmbeddedConfig {
    EmbeddedConfig {
        path: dir.path().join("nested").join("queue.sqlite3"),
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        delivery_limit: 10,
        ..EmbeddedConfig::default()
    }
}

async fn open(config: &EmbeddedConfig) -> EmbeddedQueue {
    EmbeddedQueue::open(config.clone())
        .await
        .expect("open the embedded queue")
}

fn envelope(source: Source, body: &str) -> Envelope {
    Envelope::new(
        source,
        Bytes::from(body.to_owned()),
        Some(format!("evt-{body}")),
    )
}

async fn next(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("a delivery within the deadline")
        .expect("the stream is still open")
        .expect("a delivery, not an error")
}

async fn assert_quiet(stream: &mut DeliveryStream) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, stream.next()).await {
        let what = item.map(|d| d.envelope.message_id);
        panic!("expected nothing to be delivered, got {what:?}");
    }
}

/// Rows in the file, and how many distinct message ids they carry.
fn rows(config: &EmbeddedConfig) -> (i64, i64) {
    let conn = rusqlite::Connection::open(&config.path).expect("open the queue file directly");
    conn.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT message_id) FROM messages",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .expect("count the rows")
}

async fn wait_for_dead(queue: &EmbeddedQueue, direction: Direction, count: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dead = queue
            .dead_letters(direction, &DeadFilter::default())
            .await
            .expect("list dead letters");
        if dead.len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} dead letters, have {}",
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publish one message per (source, body) and dead-letter each with the given reason, in order,
/// a few milliseconds apart so that their `dead_at` differ.
async fn bury_all(queue: &EmbeddedQueue, cases: &[(Source, &str, &str)]) -> Vec<Envelope> {
    let mut buried = Vec::new();
    for (source, body, reason) in cases {
        let sent = envelope(*source, body);
        queue.publish(&sent).await.expect("publish");
        let mut stream = queue.consume(source.direction(), 1).await.expect("consume");
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.envelope.message_id, sent.message_id);
        delivery
            .settle(Settlement::Dead(Failure::new(
                *reason,
                Some(422),
                "rejected",
            )))
            .await
            .expect("dead-letter");
        buried.push(sent);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    buried
}

/// A fresh queue in its own folder, for the backend-independent cases of `conformance.rs`.
async fn fresh() -> (Arc<dyn Queue>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let queue = EmbeddedQueue::open(config(&dir))
        .await
        .expect("open the embedded queue");
    (Arc::new(queue), dir)
}

crate::conformance::conformance_suite!(fresh, crate::conformance::Timing::default());

#[tokio::test]
async fn publishes_consumes_and_acks_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;

    let sent: Vec<Envelope> = (0..3)
        .map(|i| envelope(Source::CustomerioReporting, &format!("in-{i}")))
        .collect();
    for envelope in &sent {
        queue.publish(envelope).await.unwrap();
    }
    let outbound = envelope(Source::ChameleonWebhook, "out");
    queue.publish(&outbound).await.unwrap();

    let mut inbound = queue.consume(Direction::Inbound, 10).await.unwrap();
    for expected in &sent {
        let delivery = next(&mut inbound).await;
        assert_eq!(
            &delivery.envelope, expected,
            "stored byte for byte, in order"
        );
        assert!(!delivery.redelivered);
        delivery.settle(Settlement::Ack).await.unwrap();
    }
    assert_quiet(&mut inbound).await;

    let mut outbound_stream = queue.consume(Direction::Outbound, 10).await.unwrap();
    let delivery = next(&mut outbound_stream).await;
    assert_eq!(delivery.envelope, outbound);
    delivery.settle(Settlement::Ack).await.unwrap();

    assert_eq!(rows(&config), (0, 0), "acked messages are deleted");
    queue.check().await.unwrap();
    queue.close().await;
}

#[tokio::test]
async fn a_publish_wakes_an_idle_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        poll_interval: Duration::from_secs(3600),
        ..config(&dir)
    };
    let queue = open(&config).await;
    let mut stream = queue.consume(Direction::Outbound, 4).await.unwrap();
    assert_quiet(&mut stream).await;

    // With an hour between polls, only the in-process wake-up can deliver this in time.
    let sent = envelope(Source::ChameleonEvent, "wake");
    queue.publish(&sent).await.unwrap();
    let delivery = next(&mut stream).await;
    assert_eq!(delivery.envelope.message_id, sent.message_id);
    delivery.settle(Settlement::Ack).await.unwrap();
}

#[tokio::test]
async fn prefetch_bounds_unsettled_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    for i in 0..3 {
        queue
            .publish(&envelope(Source::CustomerioEvents, &format!("p{i}")))
            .await
            .unwrap();
    }

    let mut stream = queue.consume(Direction::Inbound, 2).await.unwrap();
    let first = next(&mut stream).await;
    let _second = next(&mut stream).await;
    assert_quiet(&mut stream).await;

    first.settle(Settlement::Ack).await.unwrap();
    let third = next(&mut stream).await;
    assert_eq!(third.envelope.body, Bytes::from_static(b"p2"));
}

#[tokio::test]
async fn a_retry_comes_back_later_as_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let sent = envelope(Source::ChameleonWebhook, "retry");
    queue.publish(&sent).await.unwrap();

    let mut stream = queue.consume(Direction::Outbound, 5).await.unwrap();
    let delivery = next(&mut stream).await;
    let delay = Duration::from_millis(600);
    let retried_at = Instant::now();
    delivery
        .settle(Settlement::Retry {
            delay,
            failure: Failure::new("upstream_unavailable", Some(503), "try later"),
        })
        .await
        .unwrap();

    assert_quiet(&mut stream).await;
    let again = next(&mut stream).await;
    assert!(
        retried_at.elapsed() >= delay - Duration::from_millis(5),
        "due no earlier than the delay"
    );
    assert_eq!(again.envelope.message_id, sent.message_id);
    assert_eq!(again.envelope.attempt, 2);
    assert!(again.envelope.first_failed_at.is_some());
    assert_eq!(again.envelope.body, sent.body);
    assert!(
        !again.redelivered,
        "a retry is a new attempt, not a redelivery"
    );
    assert_eq!(rows(&config), (1, 1), "a retry updates the row in place");

    // A second retry keeps the first failure time.
    let first_failed_at = again.envelope.first_failed_at;
    again
        .settle(Settlement::Retry {
            delay: Duration::ZERO,
            failure: Failure::new("upstream_unavailable", Some(503), "still down"),
        })
        .await
        .unwrap();
    let third = next(&mut stream).await;
    assert_eq!(third.envelope.attempt, 3);
    assert_eq!(third.envelope.first_failed_at, first_failed_at);
}

#[tokio::test]
async fn messages_come_out_in_due_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let late = envelope(Source::CustomerioProfiles, "late");
    queue.publish(&late).await.unwrap();

    let mut stream = queue.consume(Direction::Inbound, 1).await.unwrap();
    next(&mut stream)
        .await
        .settle(Settlement::Retry {
            delay: Duration::from_millis(300),
            failure: Failure::new("rate_limited", Some(429), "slow down"),
        })
        .await
        .unwrap();
    let early = envelope(Source::CustomerioProfiles, "early");
    queue.publish(&early).await.unwrap();

    let first = next(&mut stream).await;
    assert_eq!(first.envelope.message_id, early.message_id);
    first.settle(Settlement::Ack).await.unwrap();
    let second = next(&mut stream).await;
    assert_eq!(second.envelope.message_id, late.message_id);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_envelope_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let sent = envelope(Source::CustomerioCompanies, r#"{"uid":7}"#);
    queue.publish(&sent).await.unwrap();

    let mut stream = queue.consume(Direction::Inbound, 5).await.unwrap();
    let delivery = next(&mut stream).await;
    let before = sync_core::time::now_ms();
    delivery
        .settle(Settlement::Dead(Failure::new(
            "upstream_rejected",
            Some(422),
            "chameleon rejected company: 422 no uid",
        )))
        .await
        .unwrap();
    let after = sync_core::time::now_ms();
    assert_quiet(&mut stream).await;

    let dead = queue
        .dead_letters(Direction::Inbound, &DeadFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.envelope, sent);
    assert_eq!(letter.reason, "upstream_rejected");
    assert_eq!(letter.status, Some(422));
    assert_eq!(letter.error, "chameleon rejected company: 422 no uid");
    assert!(
        (before..=after).contains(&letter.dead_at),
        "dead_at is when it died"
    );
    assert!(
        queue
            .dead_letters(Direction::Outbound, &DeadFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "dead letters belong to their direction"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_filtered_replayed_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let buried = bury_all(
        &queue,
        &[
            (Source::CustomerioReporting, "a", "no_identity"),
            (Source::CustomerioEvents, "b", "upstream_rejected"),
            (Source::CustomerioReporting, "c", "upstream_rejected"),
            (Source::CustomerioProfiles, "d", "no_identity"),
            (Source::ChameleonWebhook, "e", "no_identity"),
        ],
    )
    .await;
    let all = queue
        .dead_letters(Direction::Inbound, &DeadFilter::default())
        .await
        .unwrap();
    let ids = |letters: &[sync_queue::DeadLetter]| -> Vec<String> {
        letters
            .iter()
            .map(|d| d.envelope.message_id.clone())
            .collect()
    };
    let id = |i: usize| buried[i].message_id.clone();
    assert_eq!(ids(&all), [id(0), id(1), id(2), id(3)], "oldest first");

    // Each filter on its own, and then combined.
    let list = |filter: DeadFilter| {
        let queue = &queue;
        async move {
            ids(&queue
                .dead_letters(Direction::Inbound, &filter)
                .await
                .unwrap())
        }
    };
    let by_ids = DeadFilter {
        ids: vec![id(1), id(3), "01J00000000000000000000000".to_owned()],
        ..DeadFilter::default()
    };
    assert_eq!(list(by_ids).await, [id(1), id(3)]);
    let by_reason = DeadFilter {
        reason: Some("no_identity".to_owned()),
        ..DeadFilter::default()
    };
    assert_eq!(list(by_reason.clone()).await, [id(0), id(3)]);
    let by_source = DeadFilter {
        source: Some(Source::CustomerioReporting),
        ..DeadFilter::default()
    };
    assert_eq!(list(by_source.clone()).await, [id(0), id(2)]);
    let since = DeadFilter {
        since: Some(all[2].dead_at),
        ..DeadFilter::default()
    };
    assert_eq!(list(since).await, [id(2), id(3)]);
    let until = DeadFilter {
        until: Some(all[2].dead_at),
        ..DeadFilter::default()
    };
    assert_eq!(list(until).await, [id(0), id(1)]);
    let combined = DeadFilter {
        reason: Some("upstream_rejected".to_owned()),
        source: Some(Source::CustomerioReporting),
        since: Some(all[1].dead_at),
        until: Some(all[3].dead_at),
        ..DeadFilter::default()
    };
    assert_eq!(list(combined).await, [id(2)]);
    for letter in &all {
        let only = DeadFilter {
            ids: vec![letter.envelope.message_id.clone()],
            ..DeadFilter::default()
        };
        assert!(only.matches(letter));
    }

    // Replay by reason: the same ids come back as first attempts.
    assert_eq!(
        queue
            .replay(Direction::Inbound, &by_reason, None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(list(DeadFilter::default()).await, [id(1), id(2)]);
    let mut stream = queue.consume(Direction::Inbound, 5).await.unwrap();
    let mut replayed = HashSet::new();
    for _ in 0..2 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.envelope.attempt, 1);
        assert_eq!(delivery.envelope.first_failed_at, None);
        assert!(!delivery.redelivered);
        replayed.insert(delivery.envelope.message_id.clone());
        delivery.settle(Settlement::Ack).await.unwrap();
    }
    assert_eq!(replayed, HashSet::from([id(0), id(3)]));
    assert_quiet(&mut stream).await;

    // Purge by source, then everything; the outbound dead letter is untouched until its turn.
    assert_eq!(
        queue.purge(Direction::Inbound, &by_source).await.unwrap(),
        1
    );
    assert_eq!(list(DeadFilter::default()).await, [id(1)]);
    assert_eq!(
        queue
            .purge(Direction::Inbound, &DeadFilter::default())
            .await
            .unwrap(),
        1
    );
    assert_eq!(list(DeadFilter::default()).await, Vec::<String>::new());
    let outbound = queue
        .dead_letters(Direction::Outbound, &DeadFilter::default())
        .await
        .unwrap();
    assert_eq!(ids(&outbound), [id(4)]);
    assert_eq!(
        queue
            .purge(Direction::Outbound, &DeadFilter::default())
            .await
            .unwrap(),
        1
    );
    assert_eq!(rows(&config), (0, 0));
}

#[tokio::test]
async fn replay_with_a_rate_paces_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    bury_all(
        &queue,
        &[
            (Source::ChameleonWebhook, "r1", "upstream_rejected"),
            (Source::ChameleonEvent, "r2", "upstream_rejected"),
            (Source::ChameleonWebhook, "r3", "upstream_rejected"),
        ],
    )
    .await;

    let started = Instant::now();
    let replayed = queue
        .replay(Direction::Outbound, &DeadFilter::default(), Some(10))
        .await
        .unwrap();
    assert_eq!(replayed, 3);
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "three messages at 10/s take at least two pauses of 100 ms"
    );
    assert!(
        queue
            .dead_letters(Direction::Outbound, &DeadFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_expired_lease_is_redelivered_and_the_old_holder_cannot_settle() {
    let dir = tempfile::tempdir().unwrap();
    // Leases of deliveries held for any time at all are not renewed: the holder looks hung.
    let config = EmbeddedConfig {
        lease: Duration::from_millis(300),
        max_hold: Duration::ZERO,
        ..config(&dir)
    };
    let queue = open(&config).await;
    let sent = envelope(Source::CustomerioEvents, "lease");
    queue.publish(&sent).await.unwrap();

    // The first holder keeps its delivery without settling, like a stuck or dead consumer.
    let mut first_stream = queue.consume(Direction::Inbound, 1).await.unwrap();
    let stale = next(&mut first_stream).await;
    assert!(!stale.redelivered);
    let mut second_stream = queue.consume(Direction::Inbound, 1).await.unwrap();
    let fresh = next(&mut second_stream).await;
    assert_eq!(fresh.envelope.message_id, sent.message_id);
    assert!(fresh.redelivered);

    // The old holder's settlement must not clobber the new holder's claim.
    let refused = stale
        .settle(Settlement::Dead(Failure::new("late", None, "too late")))
        .await;
    assert!(
        matches!(refused, Err(QueueError::Refused(_))),
        "got {refused:?}"
    );
    assert!(
        queue
            .dead_letters(Direction::Inbound, &DeadFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    fresh.settle(Settlement::Ack).await.unwrap();
    assert_eq!(rows(&config), (0, 0));
}

#[tokio::test]
async fn a_held_delivery_keeps_its_lease_past_the_lease_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        lease: Duration::from_millis(1500),
        ..config(&dir)
    };
    let queue = open(&config).await;
    let sent = envelope(Source::ChameleonWebhook, "slow");
    queue.publish(&sent).await.unwrap();
    let mut holder = queue.consume(Direction::Outbound, 1).await.unwrap();
    let held = next(&mut holder).await;
    let expiry = || {
        rusqlite::Connection::open(&config.path)
            .unwrap()
            .query_row("SELECT lease_expires_at FROM messages", [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap()
    };
    let first_expiry = expiry();

    // Another process on the same file waits more than two lease lengths and gets nothing.
    let other = open(&config).await;
    let mut other_stream = other.consume(Direction::Outbound, 1).await.unwrap();
    let watched = tokio::time::timeout(Duration::from_secs(4), other_stream.next()).await;
    assert!(watched.is_err(), "redelivered while still held");
    assert!(expiry() > first_expiry, "the lease was not renewed");

    // The holder still owns the message and settles it.
    held.settle(Settlement::Ack).await.unwrap();
    assert_eq!(rows(&config), (0, 0));
}

#[tokio::test]
async fn a_dropped_delivery_comes_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let sent = envelope(Source::ChameleonWebhook, "dropped");
    queue.publish(&sent).await.unwrap();

    // The lease is a minute long: only the release on drop can bring it back this soon.
    let mut stream = queue.consume(Direction::Outbound, 1).await.unwrap();
    drop(next(&mut stream).await);
    let again = next(&mut stream).await;
    assert_eq!(again.envelope.message_id, sent.message_id);
    assert!(again.redelivered);
    again.settle(Settlement::Ack).await.unwrap();
    drop(stream);

    // A dropped stream gives back what it had claimed too.
    queue.publish(&sent).await.unwrap();
    let mut holder = queue.consume(Direction::Outbound, 1).await.unwrap();
    let held = next(&mut holder).await;
    drop(held);
    drop(holder);
    let mut other = queue.consume(Direction::Outbound, 1).await.unwrap();
    assert_eq!(next(&mut other).await.envelope.message_id, sent.message_id);
}

#[tokio::test]
async fn too_many_deliveries_dead_letter_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        delivery_limit: 3,
        ..config(&dir)
    };
    let queue = open(&config).await;
    let sent = envelope(Source::CustomerioReporting, "poison");
    queue.publish(&sent).await.unwrap();

    let mut stream = queue.consume(Direction::Inbound, 1).await.unwrap();
    for delivery_number in 1..=3 {
        let delivery = next(&mut stream).await;
        assert_eq!(delivery.redelivered, delivery_number > 1);
        drop(delivery);
    }
    wait_for_dead(&queue, Direction::Inbound, 1).await;
    assert_quiet(&mut stream).await;

    let dead = queue
        .dead_letters(Direction::Inbound, &DeadFilter::default())
        .await
        .unwrap();
    assert_eq!(dead[0].reason, "delivery_limit");
    assert_eq!(dead[0].status, None);
    assert_eq!(dead[0].envelope, sent);
}

#[tokio::test]
async fn leases_that_keep_expiring_dead_letter_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        lease: Duration::from_millis(200),
        max_hold: Duration::ZERO,
        delivery_limit: 2,
        ..config(&dir)
    };
    let queue = open(&config).await;
    let sent = envelope(Source::ChameleonWebhook, "stuck");
    queue.publish(&sent).await.unwrap();

    // Hold every delivery without settling, like a consumer that hangs each time.
    let mut stream = queue.consume(Direction::Outbound, 3).await.unwrap();
    let first = next(&mut stream).await;
    let second = next(&mut stream).await;
    assert!(!first.redelivered && second.redelivered);
    assert_quiet(&mut stream).await;
    wait_for_dead(&queue, Direction::Outbound, 1).await;
    let dead = queue
        .dead_letters(Direction::Outbound, &DeadFilter::default())
        .await
        .unwrap();
    assert_eq!(dead[0].reason, "delivery_limit");
    assert_eq!(dead[0].envelope.message_id, sent.message_id);

    // The holders lost their leases: settling now changes nothing.
    assert!(second.settle(Settlement::Ack).await.is_err());
    assert_eq!(rows(&config), (1, 1));
}

#[tokio::test]
async fn reopening_the_file_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let ready = envelope(Source::CustomerioReporting, "ready");
    let outbound = envelope(Source::ChameleonEvent, "outbound");
    let dead = envelope(Source::CustomerioEvents, "dead");
    {
        let queue = open(&config).await;
        queue.publish(&dead).await.unwrap();
        let mut stream = queue.consume(Direction::Inbound, 1).await.unwrap();
        next(&mut stream)
            .await
            .settle(Settlement::Dead(Failure::new(
                "no_identity",
                None,
                "no uid",
            )))
            .await
            .unwrap();
        drop(stream);
        queue.publish(&ready).await.unwrap();
        queue.close().await;
        assert!(matches!(
            queue.publish(&ready).await,
            Err(QueueError::Unavailable(_))
        ));
    }
    {
        // No close this time: a process that stops abruptly keeps what it published.
        let queue = open(&config).await;
        queue.publish(&outbound).await.unwrap();
    }

    let queue = open(&config).await;
    let mut inbound = queue.consume(Direction::Inbound, 5).await.unwrap();
    assert_eq!(next(&mut inbound).await.envelope, ready);
    let mut outbound_stream = queue.consume(Direction::Outbound, 5).await.unwrap();
    assert_eq!(next(&mut outbound_stream).await.envelope, outbound);
    let letters = queue
        .dead_letters(Direction::Inbound, &DeadFilter::default())
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope, dead);
    assert_eq!(letters[0].reason, "no_identity");

    let conn = rusqlite::Connection::open(&config.path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

/// Set in the child process of [`a_killed_process_keeps_every_confirmed_publish`].
const CRASH_QUEUE_ENV: &str = "CCSYNC_TEST_CRASH_QUEUE";

/// The child half of [`a_killed_process_keeps_every_confirmed_publish`]: eight publishers that
/// print each message id once its publish has returned, until the process is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a_killed_process_keeps_every_confirmed_publish"]
async fn publish_until_killed() {
    let Some(path) = std::env::var_os(CRASH_QUEUE_ENV) else {
        return;
    };
    let queue = Arc::new(open(&EmbeddedConfig::at(path)).await);
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for i in 0.. {
                    let sent = envelope(Source::CustomerioReporting, &format!("k{p}-{i}"));
                    queue.publish(&sent).await.expect("publish");
                    println!("confirmed {}", sent.message_id);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_keeps_every_confirmed_publish() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "embedded::publish_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_QUEUE_ENV, &config.path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child test process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();

    // SIGKILL in the middle of a stream of publishes: no chance to flush or close anything.
    let mut confirmed = HashSet::new();
    while confirmed.len() < 500 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the child keeps publishing")
            .unwrap()
            .expect("the child is still running");
        if let Some(id) = line.strip_prefix("confirmed ") {
            confirmed.insert(id.to_owned());
        }
    }
    child.start_kill().unwrap();
    // Lines already written before the kill are confirmations too.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = line.strip_prefix("confirmed ") {
            confirmed.insert(id.to_owned());
        }
    }
    child.wait().await.unwrap();

    let conn = rusqlite::Connection::open(&config.path).unwrap();
    let mut select = conn.prepare("SELECT message_id FROM messages").unwrap();
    let stored: HashSet<String> = select
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    println!(
        "killed child: {} publishes confirmed, {} stored",
        confirmed.len(),
        stored.len()
    );
    let lost: Vec<_> = confirmed.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed publishes lost: {lost:?}",
        lost.len()
    );

    // And the queue opens and serves them.
    let queue = open(&config).await;
    let mut stream = queue.consume(Direction::Inbound, 50).await.unwrap();
    let first = next(&mut stream).await;
    assert!(stored.contains(&first.envelope.message_id));
}

#[tokio::test]
async fn a_file_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    std::fs::create_dir_all(config.path.parent().unwrap()).unwrap();
    let conn = rusqlite::Connection::open(&config.path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);

    match EmbeddedQueue::open(config).await {
        Err(QueueError::Other(message)) => assert!(message.contains("99"), "{message}"),
        Err(other) => panic!("expected a schema error, got {other:?}"),
        Ok(_) => panic!("expected a schema error, the file was opened"),
    }
}

#[tokio::test]
async fn a_closed_queue_ends_its_consumers_and_fails_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = open(&config).await;
    let mut stream = queue.consume(Direction::Inbound, 1).await.unwrap();
    queue.check().await.unwrap();

    queue.close().await;
    let item = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream reacts to the close");
    assert!(
        matches!(item, Some(Err(QueueError::ConsumerEnded(_)))),
        "got {:?}",
        item.map(|r| r.map(|d| d.envelope.message_id))
    );
    let end = tokio::time::timeout(PATIENCE, stream.next()).await.unwrap();
    assert!(end.is_none(), "and then it ends");
    assert!(queue.check().await.is_err());
    assert!(queue.consume(Direction::Inbound, 1).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queues_on_one_file_never_deliver_a_message_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let first = Arc::new(open(&config).await);
    let second = Arc::new(open(&config).await);

    let total = 300;
    let mut sent = HashSet::new();
    for i in 0..total {
        let envelope = envelope(Source::ChameleonWebhook, &format!("m{i}"));
        sent.insert(envelope.message_id.clone());
        let via = if i % 2 == 0 { &first } else { &second };
        via.publish(&envelope).await.unwrap();
    }

    // Both consume at once; every id must arrive exactly once across the two.
    let consume = |queue: Arc<EmbeddedQueue>| {
        tokio::spawn(async move {
            let mut stream = queue.consume(Direction::Outbound, 8).await.unwrap();
            let mut seen = Vec::new();
            while let Ok(Some(item)) = tokio::time::timeout(QUIET * 3, stream.next()).await {
                let delivery = item.unwrap();
                assert!(!delivery.redelivered);
                seen.push(delivery.envelope.message_id.clone());
                delivery.settle(Settlement::Ack).await.unwrap();
            }
            seen
        })
    };
    let (a, b) = tokio::join!(consume(Arc::clone(&first)), consume(Arc::clone(&second)));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut seen = HashSet::new();
    for id in a.iter().chain(&b) {
        assert!(seen.insert(id.clone()), "message {id} delivered twice");
    }
    assert_eq!(seen, sent);
    assert_eq!(rows(&config), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_publishes_are_each_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = Arc::new(open(&config).await);

    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let envelope = envelope(Source::CustomerioReporting, &format!("c{i}"));
                queue.publish(&envelope).await.unwrap();
                envelope.message_id
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for task in tasks {
        sent.insert(task.await.unwrap());
    }
    assert_eq!(sent.len(), 1_000);
    assert_eq!(rows(&config), (1_000, 1_000));

    let mut stream = queue.consume(Direction::Inbound, 100).await.unwrap();
    let mut received = HashSet::new();
    while received.len() < 1_000 {
        let delivery = next(&mut stream).await;
        assert!(received.insert(delivery.envelope.message_id.clone()));
        delivery.settle(Settlement::Ack).await.unwrap();
    }
    assert_eq!(received, sent);
    assert_quiet(&mut stream).await;
}

/// A rough throughput figure for group commit; run with `--nocapture` to see it. No timing is
/// asserted, only that every publish was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_throughput_with_64_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir);
    let queue = Arc::new(open(&config).await);
    let (publishers, each) = (64, 50);

    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for i in 0..each {
                    let body =
                        format!(r#"{{"publisher":{p},"n":{i},"pad":"{}"}}"#, "x".repeat(512));
                    queue
                        .publish(&envelope(Source::CustomerioReporting, &body))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = publishers * each;
    println!(
        "embedded queue: {total} publishes from {publishers} publishers in {elapsed:?} \
         ({:.0} publishes/s)",
        f64::from(total) / elapsed.as_secs_f64()
    );
    assert_eq!(rows(&config), (i64::from(total), i64::from(total)));
}
