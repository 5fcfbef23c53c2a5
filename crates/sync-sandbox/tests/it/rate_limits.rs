//! Rate-limit emulation: the request past the limit in a window answers 429 with a wait.

use reqwest::Method;
use serde_json::json;
use sync_sandbox::SandboxConfig;

use crate::support::{Harness, config, send};

const EVENTS: &str = "/v3/observe/hooks/events";

#[tokio::test]
async fn chameleon_answers_429_with_a_wait_past_its_per_minute_limit() {
    let h = Harness::start_with(SandboxConfig {
        chameleon_requests_per_minute: Some(3),
        ..config()
    })
    .await;
    let event = json!({"uid": "user_3120", "name": "Email Opened (Customer.io)"});

    // Requests with a wrong secret are refused before they count against the account.
    for _ in 0..2 {
        let refused = send(h.request(Method::POST, EVENTS).json(&event)).await;
        assert_eq!(refused.status, 403);
    }
    for _ in 0..3 {
        assert_eq!(h.chameleon(EVENTS, event.clone()).await.status, 200);
    }

    let limited = h.chameleon(EVENTS, event.clone()).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.body["code"], 429);
    assert!(limited.messages()[0].starts_with("Rate Limited"));
    let wait = limited.body["wait"].as_u64().expect("wait in the body");
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        limited.header("x-ratelimit-wait"),
        Some(wait.to_string().as_str())
    );

    // Customer.io has its own budget.
    let other = h
        .customerio(Method::PUT, "/api/v1/customers/u1", json!({"plan": "pro"}))
        .await;
    assert_eq!(other.status, 200);
}

#[tokio::test]
async fn customerio_answers_429_with_retry_after_past_its_per_second_limit() {
    let h = Harness::start_with(SandboxConfig {
        customerio_requests_per_second: Some(2),
        ..config()
    })
    .await;
    let body = json!({"name": "Started Tour (Chameleon)"});

    // Three requests at once share one window unless the machine stalls for a whole second;
    // a stalled round is simply tried again (a later round may start in a used window, so
    // only the first round's count is exact).
    let send_one = || h.customerio(Method::POST, "/api/v1/customers/u1/events", body.clone());
    let mut limited = None;
    for round in 0..5 {
        let (a, b, c) = tokio::join!(send_one(), send_one(), send_one());
        let statuses = [a.status, b.status, c.status];
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        if let Some(answer) = [a, b, c].into_iter().find(|answer| answer.status == 429) {
            if round == 0 {
                assert_eq!(
                    statuses.iter().filter(|s| **s == 200).count(),
                    2,
                    "{statuses:?}"
                );
            }
            limited = Some(answer);
            break;
        }
    }

    let limited = limited.expect("the third request in a one-second window is limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert!(
        limited.body["meta"]["errors"][0].as_str().is_some(),
        "{limited:?}"
    );
}
