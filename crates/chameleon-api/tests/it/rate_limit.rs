//! The rate budget on the wire: the pace between requests, and a `429` that pauses the whole
//! client for the wait it states. These run on the real clock because the fake server does real
//! I/O; the budget's own tests cover the same rules on tokio's paused clock.

use std::time::{Duration, Instant};

use chameleon_api::ChameleonError;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{client, client_with, profile};

/// A fake Chameleon that answers the first request with `first` and every later one with 200.
async fn limited_once(first: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn too_many() -> ResponseTemplate {
    ResponseTemplate::new(429)
}

fn rate_limited_body(extra: serde_json::Value) -> serde_json::Value {
    let mut body = json!({
        "code": 429,
        "messages": ["Rate Limited: Please refer to the API docs for more information"]
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

async fn requests_seen(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

#[tokio::test]
async fn a_429_with_a_body_wait_holds_the_next_call_back_that_long() {
    let server =
        limited_once(too_many().set_body_json(rate_limited_body(json!({"wait": 1})))).await;
    let client = client(&server);
    let started = Instant::now();

    let first = client.upsert_profile(&profile("u1")).await;
    assert_eq!(
        first,
        Err(ChameleonError::RateLimited {
            wait: Duration::from_secs(1)
        })
    );

    // A clone shares the pause: it may not send until the wait has passed.
    let second = client.clone().upsert_profile(&profile("u2")).await;
    assert_eq!(second, Ok(()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "sent after {:?}",
        started.elapsed()
    );
    assert_eq!(requests_seen(&server).await, 2);
}

#[tokio::test]
async fn each_wait_header_pauses_the_client_for_its_value() {
    for (name, seconds) in [
        ("x-ratelimit-wait", 12),
        ("x-retry-after", 19),
        ("retry-after", 7),
    ] {
        let server =
            limited_once(too_many().insert_header(name, seconds.to_string().as_str())).await;
        let client = client(&server);
        let wait = Duration::from_secs(seconds);

        let first = client.upsert_profile(&profile("u1")).await;
        assert_eq!(first, Err(ChameleonError::RateLimited { wait }), "{name}");
        let remaining = client.pause_remaining().unwrap_or_default();
        assert!(
            remaining > wait - Duration::from_secs(2) && remaining <= wait,
            "{name}"
        );

        // The next call waits out the pause instead of sending.
        let next = tokio::time::timeout(
            Duration::from_millis(300),
            client.upsert_profile(&profile("u2")),
        )
        .await;
        assert!(
            next.is_err(),
            "{name}: the next call finished during the pause"
        );
        assert_eq!(requests_seen(&server).await, 1, "{name}");
    }
}

#[tokio::test]
async fn stated_waits_are_capped_and_a_missing_one_defaults() {
    let cases = [
        (
            too_many().insert_header("retry-after", "86400"),
            Duration::from_secs(300),
        ),
        (
            too_many().set_body_string("<html>slow down</html>"),
            Duration::from_secs(60),
        ),
        (
            too_many().set_body_json(rate_limited_body(json!({"limit": 4}))),
            Duration::from_secs(4),
        ),
    ];
    for (answer, expected) in cases {
        let server = limited_once(answer).await;
        let error = client(&server).send_event(&profile("u1")).await;
        assert_eq!(error, Err(ChameleonError::RateLimited { wait: expected }));
    }
}

#[tokio::test]
async fn sixty_per_minute_sends_three_calls_over_at_least_two_seconds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;

    let client = client_with(&server, |c| c.requests_per_minute = 60);
    let started = Instant::now();
    for uid in ["a", "b", "c"] {
        assert_eq!(client.upsert_profile(&profile(uid)).await, Ok(()));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "three calls took {elapsed:?}"
    );
    server.verify().await;
}
