//! Delivery when things go wrong: the broker restarts while webhooks keep arriving, one
//! upstream is down while the other flows, a provider repeats itself concurrently, and a batch
//! answer rejects one item among many.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sync_core::Direction;
use sync_queue::DeadFilter;
use sync_sandbox::{Fault, FaultKind, Upstream};

use crate::support::{self, BrokerProxy, Daemon, QueueKind, TOKEN, eventually};

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (it ships with RabbitMQ)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Chameleon events delivered, by the `n` property the test gave each one.
fn delivered_counts(daemon: &Daemon) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for request in daemon.sandbox.accepted(Upstream::Chameleon) {
        if let Some(n) = request.body["n"].as_u64() {
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

#[tokio::test]
async fn a_broker_restart_while_webhooks_arrive_loses_and_repeats_nothing() {
    let _broker = support::exclusive_broker().await;
    let mut daemon = Daemon::start(QueueKind::Amqp(support::BROKER.into()), |_| {}).await;
    let base = daemon.base.clone();
    let http = daemon.http.clone();

    // Keep posting while the broker goes away and comes back; remember what was accepted.
    let poster = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for n in 0..150u64 {
            let body = json!({"uid": format!("user_{n}"), "name": "Restart check", "n": n});
            let answer = http
                .post(format!("{base}/v1/customerio/{TOKEN}/events"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 202) {
                accepted.push(n);
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        accepted
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    rabbitmqctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let accepted = poster.await.unwrap();
    assert!(
        accepted.len() >= 50,
        "too few accepted to say anything: {}",
        accepted.len()
    );
    assert!(
        accepted.len() < 150,
        "nothing was refused while the broker was down"
    );

    let all = eventually(Duration::from_secs(90), || async {
        let counts = delivered_counts(&daemon);
        accepted.iter().all(|n| counts.contains_key(n))
    })
    .await;
    let counts = delivered_counts(&daemon);
    let missing: Vec<_> = accepted
        .iter()
        .filter(|n| !counts.contains_key(n))
        .collect();
    assert!(all, "accepted but never delivered: {missing:?}");
    let repeated: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_lost_with_a_backlog_of_events_sends_each_once() {
    let _broker = support::require_broker().await;
    let proxy = BrokerProxy::start().await;
    // 10 events a second: forty make a backlog that waits for Chameleon's budget.
    let mut daemon = Daemon::start(QueueKind::Amqp(proxy.addr.to_string()), |settings| {
        settings.chameleon.requests_per_minute = 600;
    })
    .await;
    for n in 0..40u64 {
        let body = json!({"uid": format!("user_{n}"), "name": "Backlog check", "n": n});
        let answer = daemon
            .post_customerio("events", body.to_string().as_bytes())
            .await;
        assert_eq!(answer.status(), 202);
    }

    // The connection drops while most of them wait: the broker offers them all again, to a
    // worker that still holds the first deliveries.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    let all = eventually(Duration::from_secs(60), || async {
        delivered_counts(&daemon).len() == 40
    })
    .await;
    assert!(all, "delivered: {:?}", delivered_counts(&daemon));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let repeated: Vec<_> = delivered_counts(&daemon)
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "sent more than once (n, times): {repeated:?}"
    );

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn chameleon_being_down_does_not_slow_customerio() {
    let mut daemon = Daemon::amqp().await;
    daemon.sandbox.inject(Fault {
        path_prefix: "/v3/observe".into(),
        count: 10_000,
        kind: FaultKind::Delay { millis: 4_000 },
    });

    for n in 0..20 {
        let body = json!({"uid": format!("user_{n}"), "name": "Stuck", "n": n});
        let answer = daemon
            .post_customerio("events", body.to_string().as_bytes())
            .await;
        assert_eq!(answer.status(), 202);
    }
    let started = tokio::time::Instant::now();
    for name in [
        "tour-started.json",
        "tour-completed.json",
        "tour-exited.json",
    ] {
        let answer = daemon
            .post_chameleon(&support::payload(&format!("chameleon/{name}")))
            .await;
        assert_eq!(answer.status(), 200);
    }
    let relayed = eventually(Duration::from_secs(20), || async {
        daemon
            .sandbox
            .accepted(Upstream::Customerio)
            .iter()
            .map(|r| r.body["batch"].as_array().map_or(0, Vec::len))
            .sum::<usize>()
            == 3
    })
    .await;
    assert!(relayed, "{:#?}", daemon.sandbox.requests());
    // The Chameleon side is stuck behind 4 s answers; Customer.io events went straight through.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );

    daemon.sandbox.clear_faults();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn concurrent_copies_of_one_event_cause_one_upstream_write() {
    let mut daemon = Daemon::amqp().await;
    let opened = support::payload("customerio/reporting-email-opened.json");
    let workflow = json!({"uid": "user_9", "name": "Copied", "n": 9}).to_string();

    // Eight copies of a reporting event (same event_id) and of a workflow webhook (same
    // idempotency key), all at once, as overlapping provider retries arrive. A copy that comes
    // while the first is still being queued is told to retry (503), as the provider would.
    let copies: Vec<_> = (0..16)
        .map(|i| {
            let base = daemon.base.clone();
            let http = daemon.http.clone();
            let (route, body, key) = if i % 2 == 0 {
                (
                    "events",
                    workflow.clone().into_bytes(),
                    Some("delivery-abc-1"),
                )
            } else {
                ("reporting", opened.clone(), None)
            };
            tokio::spawn(async move {
                let mut answers = Vec::new();
                loop {
                    let ts = (sync_core::time::now_ms() / 1000).to_string();
                    let mut request = http
                        .post(format!("{base}/v1/customerio/{TOKEN}/{route}"))
                        .header("content-type", "application/json")
                        .header("x-cio-timestamp", &ts)
                        .header(
                            "x-cio-signature",
                            sync_core::signature::sign_customerio(support::SIGNING_KEY, &ts, &body),
                        )
                        .body(body.clone());
                    if let Some(key) = key {
                        request = request.header("x-cio-idempotency-key", key);
                    }
                    let answer = request.send().await.unwrap();
                    let status = answer.status().as_u16();
                    let text: Value = answer.json().await.unwrap();
                    answers.push((status, text["status"].as_str().unwrap_or("").to_owned()));
                    if status != 503 {
                        return answers;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        })
        .collect();
    let mut queued = 0;
    for copy in futures::future::join_all(copies).await {
        let answers = copy.unwrap();
        let (status, last) = answers.last().cloned().unwrap();
        assert_eq!(status, 202, "{answers:?}");
        if last == "queued" {
            queued += 1;
        } else {
            assert_eq!(last, "duplicate", "{answers:?}");
        }
    }
    assert_eq!(
        queued, 2,
        "one copy of each event is queued, the rest are duplicates"
    );

    let both = eventually(Duration::from_secs(20), || async {
        daemon.sandbox.accepted(Upstream::Chameleon).len() >= 2
    })
    .await;
    assert!(both, "{:#?}", daemon.sandbox.requests());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = daemon.sandbox.accepted(Upstream::Chameleon);
    let names: Vec<&str> = events
        .iter()
        .filter_map(|r| r.body["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"Copied") && names.contains(&"Email Opened (Customer.io)"));

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_item_error_dead_letters_only_that_update() {
    let _broker = support::require_broker().await;
    // A long linger keeps the three updates in one batch however slowly they are posted.
    let mut daemon = Daemon::start(QueueKind::Amqp(support::BROKER.into()), |s| {
        s.chameleon.batch_linger = Duration::from_secs(3);
    })
    .await;
    daemon.sandbox.inject(Fault {
        path_prefix: "/v3/observe/hooks/profiles/batch".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 202,
            body: r#"{"batch":{"id":"b1"},"errors":[{"code":422,"index":1,"message":"plan is not allowed"}]}"#
                .into(),
            headers: vec![],
        },
    });

    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"uid": format!("user_{n}"), "plan": format!("plan-{n}")});
        let answer = daemon
            .post_customerio("profiles", body.to_string().as_bytes())
            .await;
        assert_eq!(answer.status(), 202);
        ids.push(
            answer.json::<Value>().await.unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let queue = cio_chameleon_sync::wiring::queue(&daemon.settings)
        .await
        .unwrap();
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = queue
            .dead_letters(Direction::Inbound, &DeadFilter::default())
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].envelope.message_id, ids[1]);
    assert_eq!(dead[0].status, Some(422));
    assert!(dead[0].error.contains("plan is not allowed"));
    // The other two were acknowledged: nothing is left to deliver or retry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.sandbox.requests().len() == 1,
        "{:#?}",
        daemon.sandbox.requests()
    );

    queue.close().await;
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_holding_the_whole_prefetch_window_goes_without_lingering() {
    let _broker = support::require_broker().await;
    // A window of four deliveries and a linger far longer than the test may take: only a full
    // window can send the batch in time.
    let mut daemon = Daemon::start(QueueKind::Amqp(support::BROKER.into()), |s| {
        s.queue.prefetch = 4;
        s.chameleon.batch_size = 4;
        s.chameleon.batch_linger = Duration::from_secs(600);
    })
    .await;

    for (uid, plan) in [("a", "free"), ("b", "free"), ("a", "pro"), ("b", "team")] {
        let body = json!({"uid": uid, "plan": plan});
        let answer = daemon
            .post_customerio("profiles", body.to_string().as_bytes())
            .await;
        assert_eq!(answer.status(), 202);
    }

    let sent = eventually(Duration::from_secs(60), || async {
        !daemon.sandbox.accepted(Upstream::Chameleon).is_empty()
    })
    .await;
    assert!(sent, "no batch before the linger time");
    let batches = daemon.sandbox.accepted(Upstream::Chameleon);
    assert_eq!(batches.len(), 1, "{batches:#?}");
    assert_eq!(batches[0].path, "/v3/observe/hooks/profiles/batch");
    let mut plans: Vec<(String, String)> = batches[0].body["profiles"]
        .as_array()
        .expect("a profiles array")
        .iter()
        .map(|p| (p["uid"].to_string(), p["plan"].to_string()))
        .collect();
    plans.sort();
    assert_eq!(
        plans,
        [
            (r#""a""#.to_owned(), r#""pro""#.to_owned()),
            (r#""b""#.to_owned(), r#""team""#.to_owned())
        ],
        "four deliveries coalesced into two items, the later update winning"
    );

    daemon.stop().await.unwrap();
}
