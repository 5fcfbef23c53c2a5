//! Injected faults: verbatim statuses, rate-limit answers, delays, and how many requests each
//! applies to.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use sync_sandbox::{Fault, FaultKind};

use crate::support::{Harness, send};

const EVENTS: &str = "/v3/observe/hooks/events";
const BATCH: &str = "/api/v2/batch";

fn event() -> serde_json::Value {
    json!({"uid": "user_3120", "name": "Email Opened (Customer.io)"})
}

fn batch() -> serde_json::Value {
    json!({"batch": [{"type": "person", "identifiers": {"id": "u1"}, "action": "event",
                      "name": "Started Tour (Chameleon)"}]})
}

#[tokio::test]
async fn a_status_fault_answers_verbatim_for_count_requests_then_stops() {
    let h = Harness::start().await;
    h.sandbox.inject(Fault {
        path_prefix: EVENTS.into(),
        count: 2,
        kind: FaultKind::Status {
            status: 503,
            body: "<html>upstream unavailable</html>".into(),
            headers: vec![("content-type".into(), "text/html".into())],
        },
    });

    let first = h.chameleon(EVENTS, event()).await;
    // Faults come before credentials: an outage does not look at the secret.
    let second = send(h.request(Method::POST, EVENTS).json(&event())).await;
    let third = h.chameleon(EVENTS, event()).await;

    assert_eq!(first.status, 503);
    assert_eq!(first.body, json!("<html>upstream unavailable</html>"));
    assert_eq!(first.header("content-type"), Some("text/html"));
    assert_eq!(second.status, 503);
    assert_eq!(third.status, 200, "the fault is used up: {third:?}");

    let statuses: Vec<u16> = h.sandbox.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 503, 200]);
    assert!(h.sandbox.faults().is_empty());
}

#[tokio::test]
async fn a_fault_leaves_other_paths_alone() {
    let h = Harness::start().await;
    h.sandbox.inject(Fault {
        path_prefix: BATCH.into(),
        count: 1,
        kind: FaultKind::Status {
            status: 500,
            body: String::new(),
            headers: vec![],
        },
    });

    let entity = h
        .customerio(Method::POST, "/api/v2/entity", batch()["batch"][0].clone())
        .await;
    assert_eq!(entity.status, 200, "{entity:?}");
    assert_eq!(h.sandbox.faults()[0].count, 1, "still armed");

    let faulted = h.customerio(Method::POST, BATCH, batch()).await;
    assert_eq!(faulted.status, 500);
}

#[tokio::test]
async fn a_rate_limit_fault_answers_each_upstreams_429() {
    let h = Harness::start().await;
    h.sandbox.inject(Fault {
        path_prefix: "/v3/".into(),
        count: 1,
        kind: FaultKind::RateLimit { wait_secs: 12 },
    });
    h.sandbox.inject(Fault {
        path_prefix: "/api/".into(),
        count: 1,
        kind: FaultKind::RateLimit { wait_secs: 7 },
    });

    let chameleon = h.chameleon(EVENTS, event()).await;
    assert_eq!(chameleon.status, 429);
    assert_eq!(chameleon.body["code"], 429);
    assert_eq!(chameleon.body["wait"], 12);
    assert!(chameleon.messages()[0].starts_with("Rate Limited"));
    assert_eq!(chameleon.header("x-ratelimit-wait"), Some("12"));

    let customerio = h.customerio(Method::POST, BATCH, batch()).await;
    assert_eq!(customerio.status, 429);
    assert_eq!(customerio.header("retry-after"), Some("7"));

    assert_eq!(h.chameleon(EVENTS, event()).await.status, 200);
    assert_eq!(h.customerio(Method::POST, BATCH, batch()).await.status, 200);
}

#[tokio::test]
async fn a_delay_fault_answers_normally_after_the_delay() {
    let h = Harness::start().await;
    h.sandbox.inject(Fault {
        path_prefix: EVENTS.into(),
        count: 1,
        kind: FaultKind::Delay { millis: 400 },
    });

    let started = Instant::now();
    let delayed = h.chameleon(EVENTS, event()).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(delayed.status, 200, "{delayed:?}");

    // A delayed request still goes through the rules afterwards.
    h.sandbox.inject(Fault {
        path_prefix: EVENTS.into(),
        count: 1,
        kind: FaultKind::Delay { millis: 1 },
    });
    let refused = h.chameleon(EVENTS, json!({"uid": "u1"})).await;
    assert_eq!(refused.status, 422);
}

#[tokio::test]
async fn faults_are_armed_listed_and_cleared_over_http() {
    let h = Harness::start().await;
    let fault = json!({"path_prefix": BATCH, "count": 3,
                       "kind": {"type": "status", "status": 502, "body": "bad gateway"}});
    let armed = send(h.request(Method::POST, "/_sandbox/faults").json(&fault)).await;
    assert_eq!(armed.status, 201, "{armed:?}");
    assert_eq!(armed.body["kind"]["status"], 502);

    assert_eq!(h.customerio(Method::POST, BATCH, batch()).await.status, 502);
    let listed = send(h.request(Method::GET, "/_sandbox/faults")).await;
    assert_eq!(listed.body[0]["count"], 2, "{listed:?}");

    let cleared = send(h.request(Method::DELETE, "/_sandbox/faults")).await;
    assert_eq!(cleared.status, 204);
    assert_eq!(h.customerio(Method::POST, BATCH, batch()).await.status, 200);

    let defaulted = json!({"path_prefix": "/v3/", "kind": {"type": "rate_limit", "wait_secs": 3}});
    let armed = send(h.request(Method::POST, "/_sandbox/faults").json(&defaulted)).await;
    assert_eq!((armed.status, &armed.body["count"]), (201, &json!(1)));

    for bad in [
        json!({"path_prefix": "/v3/", "kind": {"type": "status", "status": 99}}),
        json!({"path_prefix": "/v3/", "kind": {"type": "explode"}}),
    ] {
        let refused = send(h.request(Method::POST, "/_sandbox/faults").json(&bad)).await;
        assert!((400..500).contains(&refused.status), "{bad}: {refused:?}");
    }
    assert_eq!(h.sandbox.faults().len(), 1);
}
