//! The `/_sandbox` control routes, and what the sandbox answers outside its known routes.

use reqwest::Method;
use serde_json::json;
use sync_sandbox::{Recorded, Upstream};

use crate::support::{Harness, send};

#[tokio::test]
async fn requests_are_listed_filtered_and_cleared_over_http() {
    let h = Harness::start().await;
    h.chameleon("/v3/observe/hooks/profiles", json!({"uid": "u1"}))
        .await;
    h.customerio(Method::PUT, "/api/v1/customers/u1", json!({"plan": "pro"}))
        .await;

    let all = send(h.request(Method::GET, "/_sandbox/requests")).await;
    assert_eq!(all.status, 200);
    let all: Vec<Recorded> = serde_json::from_value(all.body).unwrap();
    assert_eq!(all, h.sandbox.requests());
    assert_eq!(all.len(), 2);

    for (filter, upstream) in [
        ("chameleon", Upstream::Chameleon),
        ("customerio", Upstream::Customerio),
    ] {
        let answer = send(h.request(
            Method::GET,
            &format!("/_sandbox/requests?upstream={filter}"),
        ))
        .await;
        let listed: Vec<Recorded> = serde_json::from_value(answer.body).unwrap();
        assert_eq!(listed.len(), 1, "{filter}");
        assert_eq!(listed[0].upstream, upstream);
    }

    let unknown = send(h.request(Method::GET, "/_sandbox/requests?upstream=segment")).await;
    assert_eq!(unknown.status, 400);

    let cleared = send(h.request(Method::DELETE, "/_sandbox/requests")).await;
    assert_eq!(cleared.status, 204);
    let after = send(h.request(Method::GET, "/_sandbox/requests")).await;
    assert_eq!(after.body, json!([]));
}

#[tokio::test]
async fn healthz_answers_ok_and_control_calls_are_not_recorded() {
    let h = Harness::start().await;
    let health = send(h.request(Method::GET, "/_sandbox/healthz")).await;
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({"status": "ok"}))
    );
    assert!(h.sandbox.requests().is_empty());
}

#[tokio::test]
async fn unknown_upstream_paths_answer_404_in_the_upstreams_shape() {
    let h = Harness::start().await;
    let chameleon = h
        .chameleon("/v3/analyze/profile", json!({"uid": "u1"}))
        .await;
    assert_eq!(chameleon.status, 404);
    assert_eq!(chameleon.body["code"], 404);

    let v1 = h
        .customerio(Method::POST, "/api/v1/people", json!({}))
        .await;
    assert_eq!(v1.status, 404);
    assert!(v1.body["meta"]["errors"].is_array(), "{v1:?}");
    let v2 = h
        .customerio(Method::POST, "/api/v2/objects", json!({}))
        .await;
    assert!(v2.body["errors"].is_array(), "{v2:?}");

    let elsewhere = send(h.request(Method::GET, "/favicon.ico")).await;
    assert_eq!(elsewhere.status, 404);

    let paths: Vec<(String, u16)> = h
        .sandbox
        .requests()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    let expected: Vec<(String, u16)> = ["/v3/analyze/profile", "/api/v1/people", "/api/v2/objects"]
        .into_iter()
        .map(|path| (path.to_owned(), 404))
        .collect();
    assert_eq!(
        paths, expected,
        "paths outside both upstreams are not recorded"
    );
}
