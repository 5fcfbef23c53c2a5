//! The whole pipeline on RabbitMQ: every sample payload posted to the receiver arrives at the
//! right upstream in the right shape; bad requests are refused without queueing anything; a
//! broker that goes away turns answers into 503 until it is back; upstream failures are retried
//! or dead-lettered and can be replayed.

use std::collections::BTreeSet;
use std::time::Duration;

use cio_chameleon_sync::wiring;
use serde_json::{Value, json};
use sync_core::Direction;
use sync_queue::DeadFilter;
use sync_sandbox::{Fault, FaultKind, Recorded, Upstream};

use crate::support::{self, BrokerProxy, Daemon, QueueKind, TOKEN, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn accepted_at(daemon: &Daemon, upstream: Upstream, path: &str) -> Vec<Recorded> {
    daemon
        .sandbox
        .accepted(upstream)
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn cio_ops(daemon: &Daemon) -> Vec<Value> {
    accepted_at(daemon, Upstream::Customerio, "/api/v2/batch")
        .iter()
        .flat_map(|r| r.body["batch"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn every_sample_payload_reaches_its_upstream_over_rabbitmq() {
    let _broker = support::require_broker().await;
    every_sample_payload_reaches_its_upstream(QueueKind::Amqp(support::BROKER.into())).await;
}

#[tokio::test]
async fn every_sample_payload_reaches_its_upstream_over_the_embedded_queue() {
    every_sample_payload_reaches_its_upstream(QueueKind::Embedded(Default::default())).await;
}

async fn every_sample_payload_reaches_its_upstream(queue: QueueKind) {
    let mut daemon = Daemon::start(queue, |_| {}).await;

    for name in [
        "reporting-email-opened.json",
        "reporting-email-clicked.json",
        "reporting-email-bounced.json",
        "reporting-customer-unsubscribed.json",
    ] {
        let answer = daemon
            .post_customerio(
                "reporting",
                &support::payload(&format!("customerio/{name}")),
            )
            .await;
        assert_eq!(answer.status(), 202, "{name}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(
            body["message_id"].as_str().map(str::len),
            Some(26),
            "{body}"
        );
    }
    for (route, name) in [
        ("profiles", "workflow-profile.json"),
        ("companies", "workflow-company.json"),
        ("events", "workflow-event.json"),
    ] {
        let answer = daemon
            .post_customerio(route, &support::payload(&format!("customerio/{name}")))
            .await;
        assert_eq!(answer.status(), 202, "{name}");
    }
    for name in [
        "ping.json",
        "tour-started.json",
        "tour-completed.json",
        "tour-exited.json",
        "tour-button-clicked.json",
        "response-finished.json",
    ] {
        let answer = daemon
            .post_chameleon(&support::payload(&format!("chameleon/{name}")))
            .await;
        assert_eq!(answer.status(), 200, "{name}");
    }

    let arrived = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() == 5
            && accepted_at(
                &daemon,
                Upstream::Chameleon,
                "/v3/observe/hooks/profiles/batch",
            )
            .len()
                == 1
            && accepted_at(
                &daemon,
                Upstream::Chameleon,
                "/v3/observe/hooks/companies/batch",
            )
            .len()
                == 1
            && cio_ops(&daemon).len() == 5
    })
    .await;
    assert!(
        arrived,
        "upstreams received: {:#?}",
        daemon.sandbox.requests()
    );

    // Customer.io reporting events became Chameleon events named after object and metric.
    let names: BTreeSet<String> =
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events")
            .iter()
            .map(|r| r.body["name"].as_str().unwrap_or_default().to_owned())
            .collect();
    for expected in [
        "Email Opened (Customer.io)",
        "Email Clicked (Customer.io)",
        "Email Bounced (Customer.io)",
        "Customer Unsubscribed (Customer.io)",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    let opened = accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events")
        .into_iter()
        .find(|r| r.body["name"] == "Email Opened (Customer.io)")
        .unwrap();
    assert!(opened.body["uid"].is_string(), "{}", opened.body);
    assert!(opened.body["cio_event_id"].is_string(), "{}", opened.body);
    assert!(
        opened.body["occurred_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    // The workflow profile: reserved name renamed, deep nesting flattened, types kept.
    let batch = &accepted_at(
        &daemon,
        Upstream::Chameleon,
        "/v3/observe/hooks/profiles/batch",
    )[0];
    let profile = &batch.body["profiles"][0];
    assert_eq!(profile["uid"], "user_7731", "{profile}");
    assert_eq!(profile["cio_created_at"], 1_699_999_999, "{profile}");
    assert!(profile.get("created_at").is_none(), "{profile}");
    assert_eq!(profile["upsell_readiness_score"], 82);
    assert_eq!(
        profile["preferences"],
        json!({"digest_weekly_enabled": true, "digest_weekly_day": "mon"}),
        "{profile}"
    );

    // Chameleon webhooks became Customer.io person events; the ping was not relayed.
    let ops = cio_ops(&daemon);
    let names: BTreeSet<String> = ops
        .iter()
        .map(|op| op["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in [
        "Started Tour (Chameleon)",
        "Completed Tour (Chameleon)",
        "Exited Tour (Chameleon)",
        "Clicked Tour Button (Chameleon)",
        "Responded to Survey (Chameleon)",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    for op in &ops {
        assert_eq!(op["type"], "person");
        assert_eq!(op["action"], "event");
        assert_eq!(op["id"].as_str().map(str::len), Some(26), "{op}");
        assert!(op["identifiers"]["id"].is_string(), "{op}");
        assert!(op["timestamp"].is_i64(), "{op}");
    }
    let started = ops
        .iter()
        .find(|op| op["name"] == "Started Tour (Chameleon)")
        .unwrap();
    assert_eq!(started["identifiers"]["id"], "user_7731");
    assert_eq!(started["attributes"]["tour_name"], "Reports onboarding");
    assert_eq!(started["attributes"]["via"], "launcher");

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_and_queue_nothing() {
    let mut daemon = Daemon::amqp().await;
    let base = daemon.base.clone();
    let http = daemon.http.clone();
    let opened = support::payload("customerio/reporting-email-opened.json");
    let now = (sync_core::time::now_ms() / 1000).to_string();
    let reporting = format!("{base}/v1/customerio/{TOKEN}/reporting");

    // Signatures: missing, wrong, stale.
    let missing = http
        .post(&reporting)
        .body(opened.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = http
        .post(&reporting)
        .header("x-cio-timestamp", &now)
        .header("x-cio-signature", "00".repeat(32))
        .body(opened.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let stale_ts = (sync_core::time::now_ms() / 1000 - 3600).to_string();
    let stale = http
        .post(&reporting)
        .header("x-cio-timestamp", &stale_ts)
        .header(
            "x-cio-signature",
            sync_core::signature::sign_customerio(support::SIGNING_KEY, &stale_ts, &opened),
        )
        .body(opened.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);

    // Unknown token and unknown route answer alike.
    let unknown_token = http
        .post(format!(
            "{base}/v1/customerio/not-the-token-000000/profiles"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_token.status(), 404);
    let unknown_token_body = unknown_token.text().await.unwrap();
    let unknown_route = http.post(format!("{base}/v1/nope")).send().await.unwrap();
    assert_eq!(unknown_route.status(), 404);
    assert_eq!(unknown_route.text().await.unwrap(), unknown_token_body);

    // Shapes and sizes.
    assert_eq!(
        daemon
            .post_customerio("profiles", b"{not json")
            .await
            .status(),
        400
    );
    assert_eq!(
        daemon.post_customerio("profiles", b"[1,2]").await.status(),
        400
    );
    let huge = vec![b' '; daemon.settings.server.max_body_bytes + 1];
    assert_eq!(daemon.post_customerio("events", &huge).await.status(), 413);
    let chameleon_unsigned = http
        .post(format!("{base}/v1/chameleon/webhooks"))
        .body(support::restamp(&support::payload(
            "chameleon/tour-started.json",
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(chameleon_unsigned.status(), 401);
    // Signed, but not a JSON object at all: a shape error, not an authentication one.
    let signed_array = http
        .post(format!("{base}/v1/chameleon/webhooks"))
        .header("content-type", "application/json")
        .header(
            "x-chameleon-signature",
            sync_core::signature::sign_chameleon(support::WEBHOOK_SECRET, b"[1]"),
        )
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_array.status(), 400);
    // Signed and fresh, but not a webhook: no `id` or `kind`.
    assert_eq!(
        daemon
            .post_chameleon(br#"{"sent_at":"x","data":{}}"#)
            .await
            .status(),
        400
    );

    // A good message after the bad ones is the only thing that arrives.
    let good = daemon
        .post_customerio(
            "events",
            &support::payload("customerio/workflow-event.json"),
        )
        .await;
    assert_eq!(good.status(), 202);
    assert!(
        eventually(WAIT, || async { !daemon.sandbox.requests().is_empty() }).await,
        "the good event never arrived"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = daemon.sandbox.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, "/v3/observe/hooks/events");

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_broker_answers_503_until_it_is_back() {
    let _broker = support::require_broker().await;
    let proxy = BrokerProxy::start().await;
    let mut daemon = Daemon::start(QueueKind::Amqp(proxy.addr.to_string()), |_| {}).await;
    let event = support::payload("customerio/workflow-event.json");
    assert_eq!(daemon.post_customerio("events", &event).await.status(), 202);

    proxy.cut();
    let refused = eventually(WAIT, || async {
        daemon.post_customerio("events", &event).await.status() == 503
    })
    .await;
    assert!(
        refused,
        "the receiver kept accepting while the broker was away"
    );

    proxy.restore();
    let accepted = eventually(WAIT, || async {
        daemon.post_customerio("events", &event).await.status() == 202
    })
    .await;
    assert!(
        accepted,
        "the receiver did not recover when the broker came back"
    );

    // Everything answered 202 is delivered once the consumers are back.
    let delivered = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() >= 2
    })
    .await;
    assert!(delivered, "{:#?}", daemon.sandbox.requests());

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn transient_upstream_failures_are_retried() {
    let mut daemon = Daemon::amqp().await;
    daemon.sandbox.inject(Fault {
        path_prefix: "/api/v2/batch".into(),
        count: 2,
        kind: FaultKind::Status {
            status: 503,
            body: "<html>busy</html>".into(),
            headers: vec![],
        },
    });

    let answer = daemon
        .post_chameleon(&support::payload("chameleon/tour-completed.json"))
        .await;
    assert_eq!(answer.status(), 200);

    let delivered = eventually(WAIT, || async { cio_ops(&daemon).len() == 1 }).await;
    assert!(delivered, "{:#?}", daemon.sandbox.requests());
    let attempts = daemon
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v2/batch")
        .count();
    assert_eq!(attempts, 3, "two failures then a success");

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_and_can_be_replayed() {
    let mut daemon = Daemon::amqp().await;
    daemon.sandbox.inject(Fault {
        path_prefix: "/v3/observe/hooks/events".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 422,
            body: r#"{"code":422,"messages":["name is too long"]}"#.into(),
            headers: vec![],
        },
    });

    let answer = daemon
        .post_customerio(
            "events",
            &support::payload("customerio/workflow-event.json"),
        )
        .await;
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.unwrap();
    let message_id = body["message_id"].as_str().unwrap().to_owned();

    let queue = wiring::queue(&daemon.settings).await.unwrap();
    let all = DeadFilter::default();
    let mut dead = Vec::new();
    for _ in 0..300 {
        dead = queue.dead_letters(Direction::Inbound, &all).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!dead.is_empty(), "nothing reached the dead-letter queue");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.message_id, message_id);
    assert_eq!(dead[0].reason, "upstream_rejected");
    assert_eq!(dead[0].status, Some(422));
    assert!(
        dead[0].error.contains("name is too long"),
        "{}",
        dead[0].error
    );

    // Replay: same message id, delivered this time, dead-letter queue empty.
    let replayed = queue.replay(Direction::Inbound, &all, None).await.unwrap();
    assert_eq!(replayed, 1);
    let delivered = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() == 1
    })
    .await;
    assert!(delivered, "{:#?}", daemon.sandbox.requests());
    assert!(
        queue
            .dead_letters(Direction::Inbound, &all)
            .await
            .unwrap()
            .is_empty()
    );

    queue.close().await;
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_tour_event_published_onto_the_exchange_is_relayed() {
    let mut daemon = Daemon::amqp().await;
    let prefix = daemon.settings.queue.prefix.clone();

    // Another producer publishes straight onto the exchange, with no headers at all.
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2f", support::BROKER),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let event = json!({
        "id": "step-seen-42",
        "name": "Step Seen",
        "uid": 7731,
        "timestamp": 1_733_140_805,
        "properties": {"tour_id": "t1", "step_number": 3}
    });
    let confirm = channel
        .basic_publish(
            prefix.as_str().into(),
            "chameleon.event".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            event.to_string().as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, "done".into()).await;

    let relayed = eventually(WAIT, || async { cio_ops(&daemon).len() == 1 }).await;
    assert!(relayed, "{:#?}", daemon.sandbox.requests());
    let op = &cio_ops(&daemon)[0];
    assert_eq!(op["name"], "Step Seen (Chameleon)");
    assert_eq!(op["identifiers"]["id"], "7731");
    assert_eq!(op["timestamp"], 1_733_140_805);
    assert_eq!(op["attributes"]["step_number"], 3);
    assert_eq!(op["id"], sync_core::outbound::event_ulid("step-seen-42"));

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_stalled_broker_answers_503_and_never_strands_a_claim() {
    let _broker = support::require_broker().await;
    let proxy = BrokerProxy::start().await;
    let mut daemon = Daemon::start(QueueKind::Amqp(proxy.addr.to_string()), |_| {}).await;
    let opened = support::payload("customerio/reporting-email-opened.json");

    // The broker stops answering without closing anything: the first copy is told to retry
    // (503, not 408, not 202), and so is a concurrent copy while the first is unresolved.
    proxy.stall();
    let first = {
        let daemon_base = daemon.base.clone();
        let opened = opened.clone();
        tokio::spawn(async move {
            let ts = (sync_core::time::now_ms() / 1000).to_string();
            reqwest::Client::new()
                .post(format!("{daemon_base}/v1/customerio/{TOKEN}/reporting"))
                .header("content-type", "application/json")
                .header("x-cio-timestamp", &ts)
                .header(
                    "x-cio-signature",
                    sync_core::signature::sign_customerio(support::SIGNING_KEY, &ts, &opened),
                )
                .body(opened)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let concurrent = daemon.post_customerio("reporting", &opened).await;
    assert_eq!(
        concurrent.status(),
        503,
        "a copy must not be acknowledged before the first is queued"
    );
    assert_eq!(first.await.unwrap(), 503);

    // The partition ends with the connection lost: what the stall held back is gone.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    let last = std::sync::Mutex::new(String::new());
    let queued = eventually(WAIT, || async {
        let answer = daemon.post_customerio("reporting", &opened).await;
        let status = answer.status();
        *last.lock().unwrap() = format!("{status} {}", answer.text().await.unwrap_or_default());
        status == 202
    })
    .await;
    assert!(
        queued,
        "the provider's retry was never accepted: {}",
        last.lock().unwrap()
    );
    let delivered = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() == 1
    })
    .await;
    assert!(
        delivered,
        "the event was lost: {:#?}",
        daemon.sandbox.requests()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len(),
        1
    );

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_publish_that_lands_after_its_503_is_not_sent_again_for_the_providers_retry() {
    let _broker = support::require_broker().await;
    let proxy = BrokerProxy::start().await;
    let mut daemon = Daemon::start(QueueKind::Amqp(proxy.addr.to_string()), |_| {}).await;
    let opened = support::payload("customerio/reporting-email-opened.json");

    // Publishing channels open on first use; a few updates first open every one of them, so that
    // the stalled publish is sent at once and only its confirm is held back.
    for n in 0..8 {
        let update = json!({"uid": format!("warm_{n}"), "plan": "growth"}).to_string();
        let answer = daemon.post_customerio("profiles", update.as_bytes()).await;
        assert_eq!(answer.status(), 202);
    }

    // The broker stalls long enough for the receiver to give up (503), then the held-back
    // publish goes through after all.
    proxy.stall();
    let first = daemon.post_customerio("reporting", &opened).await;
    assert_eq!(first.status(), 503);
    proxy.restore();
    let landed = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() == 1
    })
    .await;
    assert!(
        landed,
        "the publish held back by the stall was never delivered: {:#?}",
        daemon.sandbox.requests()
    );

    // Customer.io retries after the 503. The receiver queues the copy (it cannot know the first
    // publish landed), and the worker knows the event by its id and does not send it again.
    let retry = daemon.post_customerio("reporting", &opened).await;
    assert_eq!(retry.status(), 202);
    // A later event, delivered after the copy was taken from the queue.
    let later = serde_json::to_vec(&json!({
        "event_id": "evt-later-1",
        "object_type": "email",
        "metric": "clicked",
        "timestamp": sync_core::time::now_ms() / 1000,
        "data": {"customer_id": "user_later", "identifiers": {"id": "user_later"}}
    }))
    .unwrap();
    assert_eq!(
        daemon.post_customerio("reporting", &later).await.status(),
        202
    );
    let both = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() >= 2
    })
    .await;
    assert!(both, "{:#?}", daemon.sandbox.requests());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events");
    let names: Vec<&str> = events
        .iter()
        .filter_map(|request| request.body["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["Email Opened (Customer.io)", "Email Clicked (Customer.io)"],
        "{events:#?}"
    );

    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_daemon_started_before_the_broker_serves_503_until_it_comes() {
    let _broker = support::require_broker().await;
    let proxy = BrokerProxy::start().await;
    proxy.cut();
    let mut daemon =
        Daemon::start_without_waiting(QueueKind::Amqp(proxy.addr.to_string()), |_| {}).await;

    // Alive, not ready, and refusing webhooks with 503 rather than exiting.
    let alive = eventually(WAIT, || async {
        daemon
            .http
            .get(format!("{}/healthz", daemon.base))
            .send()
            .await
            .is_ok_and(|answer| answer.status() == 200)
    })
    .await;
    assert!(
        alive,
        "the daemon did not serve /healthz without the broker"
    );
    assert!(!daemon.has_ended(), "the daemon exited without the broker");
    let readyz = daemon
        .http
        .get(format!("{}/readyz", daemon.base))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let event = support::payload("customerio/workflow-event.json");
    assert_eq!(daemon.post_customerio("events", &event).await.status(), 503);

    // The broker comes: the daemon gets ready and delivers, without a restart.
    proxy.restore();
    daemon.wait_ready().await;
    assert_eq!(daemon.post_customerio("events", &event).await.status(), 202);
    let delivered = eventually(WAIT, || async {
        accepted_at(&daemon, Upstream::Chameleon, "/v3/observe/hooks/events").len() == 1
    })
    .await;
    assert!(delivered, "{:#?}", daemon.sandbox.requests());

    daemon.stop().await.unwrap();
}
