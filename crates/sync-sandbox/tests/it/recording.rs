//! The journal: what was received, in order, answered how, and never a credential.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use sync_sandbox::Upstream;

use crate::support::{ACCOUNT_SECRET, API_KEY, Harness, send};

#[tokio::test]
async fn requests_are_recorded_in_order_with_their_bodies_and_statuses() {
    let h = Harness::start().await;
    let before = sync_core::time::now_ms();

    let profile = json!({"uid": "user_3120", "plan": "pro"});
    let event = json!({"name": "Started Tour (Chameleon)", "data": {"tour_id": "t1"}});
    h.chameleon("/v3/observe/hooks/profiles", profile.clone())
        .await;
    h.customerio(
        Method::POST,
        "/api/v1/customers/user_3120/events",
        event.clone(),
    )
    .await;
    h.chameleon("/v3/observe/hooks/events", json!({"uid": "u1"}))
        .await;

    let recorded = h.sandbox.requests();
    let summary: Vec<(u64, Upstream, &str, &str, u16)> = recorded
        .iter()
        .map(|r| {
            (
                r.seq,
                r.upstream,
                r.method.as_str(),
                r.path.as_str(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                1,
                Upstream::Chameleon,
                "POST",
                "/v3/observe/hooks/profiles",
                200
            ),
            (
                2,
                Upstream::Customerio,
                "POST",
                "/api/v1/customers/user_3120/events",
                200
            ),
            (
                3,
                Upstream::Chameleon,
                "POST",
                "/v3/observe/hooks/events",
                422
            ),
        ]
    );
    assert_eq!(recorded[0].body, profile);
    assert_eq!(recorded[1].body, event);
    let after = sync_core::time::now_ms();
    assert!(
        recorded
            .iter()
            .all(|r| (before..=after).contains(&r.received_at_ms))
    );
}

#[tokio::test]
async fn accepted_keeps_2xx_answers_of_one_upstream() {
    let h = Harness::start().await;
    h.chameleon("/v3/observe/hooks/profiles", json!({"uid": "u1"}))
        .await;
    h.chameleon("/v3/observe/hooks/profiles", json!({"plan": "pro"}))
        .await;
    h.chameleon(
        "/v3/observe/hooks/profiles/batch",
        json!({"profiles": [{"plan": "x"}]}),
    )
    .await;
    h.customerio(Method::PUT, "/api/v1/customers/u1", json!({"plan": "pro"}))
        .await;

    let chameleon: Vec<u16> = h
        .sandbox
        .accepted(Upstream::Chameleon)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(chameleon, vec![200, 202]);
    let customerio = h.sandbox.accepted(Upstream::Customerio);
    assert_eq!(customerio.len(), 1);
    assert_eq!(customerio[0].method, "PUT");
}

#[tokio::test]
async fn no_credential_is_recorded_anywhere() {
    let h = Harness::start().await;
    h.chameleon("/v3/observe/hooks/profiles", json!({"uid": "u1"}))
        .await;
    h.customerio(Method::POST, "/api/v2/batch", json!({"batch": []}))
        .await;
    send(
        h.request(Method::POST, "/v3/observe/hooks/events")
            .header("X-Account-Secret", "a-wrong-secret-9e1")
            .json(&json!({"uid": "u1", "name": "n"})),
    )
    .await;
    send(
        h.request(Method::POST, &format!("/api/v1/customers/{API_KEY}/events"))
            .basic_auth("a-wrong-site", Some("a-wrong-key-44c"))
            .json(&json!({"name": "n"})),
    )
    .await;

    let recorded = h.sandbox.requests();
    assert_eq!(recorded.len(), 4);
    let dump = serde_json::to_string(&recorded).unwrap();
    let over_http = send(h.request(Method::GET, "/_sandbox/requests")).await;
    for text in [dump, over_http.body.to_string()] {
        for secret in [
            ACCOUNT_SECRET,
            API_KEY,
            "a-wrong-secret-9e1",
            "a-wrong-key-44c",
            "Basic",
        ] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_recorded_as_text() {
    let h = Harness::start().await;
    send(
        h.request(Method::POST, "/v3/observe/hooks/profiles")
            .header("X-Account-Secret", ACCOUNT_SECRET)
            .header("Content-Type", "application/json")
            .body("uid=u1&plan=pro"),
    )
    .await;
    let recorded = h.sandbox.requests();
    assert_eq!(recorded[0].status, 400);
    assert_eq!(recorded[0].body, json!("uid=u1&plan=pro"));
}

#[tokio::test]
async fn clear_forgets_requests_but_not_their_numbering() {
    let h = Harness::start().await;
    h.chameleon("/v3/observe/hooks/profiles", json!({"uid": "u1"}))
        .await;
    h.sandbox.clear();
    assert!(h.sandbox.requests().is_empty());

    h.chameleon("/v3/observe/hooks/profiles", json!({"uid": "u2"}))
        .await;
    let recorded = h.sandbox.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].seq, 2);
}

#[tokio::test]
async fn wait_for_returns_once_the_condition_holds_or_the_timeout_passes() {
    let h = Harness::start().await;
    let http = h.http.clone();
    let url = format!("{}/v3/observe/hooks/events", h.base);
    let sender = tokio::spawn(async move {
        http.post(url)
            .header("X-Account-Secret", ACCOUNT_SECRET)
            .json(&json!({"uid": "u1", "name": "Email Opened (Customer.io)"}))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });

    let seen = h
        .sandbox
        .wait_for(
            |requests| {
                requests
                    .iter()
                    .any(|r| r.body["name"] == "Email Opened (Customer.io)")
            },
            Duration::from_secs(30),
        )
        .await;
    assert!(seen);
    assert_eq!(sender.await.unwrap().unwrap(), 200);

    let never = h
        .sandbox
        .wait_for(|requests| requests.len() > 5, Duration::from_millis(200))
        .await;
    assert!(!never);
}
