//! A `429` on the wire: the wait it states (read by the call, capped, floored, or the default),
//! and the pause of every user of the transport. These run on the real clock because the fake
//! server does real I/O; the budget's unit tests cover the pause on a paused clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{Call, DEFAULT_WAIT, ExampleError, post, transport};

/// The wait a transport capped at two minutes reports for `answer`, and checks that the
/// transport is paused for that long.
async fn wait_for(answer: ResponseTemplate) -> Duration {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    let transport = transport(|c| c.max_wait = Duration::from_secs(120));

    let wait = match post(&transport, Call::Write, &server.uri()).await {
        Err(ExampleError::RateLimited { wait }) => wait,
        other => panic!("expected a rate limit, got {other:?}"),
    };
    let paused = transport.pause_remaining().unwrap_or_default();
    assert!(
        paused > wait.saturating_sub(Duration::from_secs(2)) && paused <= wait,
        "paused {paused:?} for a wait of {wait:?}"
    );
    wait
}

#[tokio::test]
async fn the_call_reads_the_wait_and_the_transport_caps_floors_or_defaults_it() {
    let both = ResponseTemplate::new(429)
        .set_body_json(json!({"wait": 3}))
        .insert_header("x-wait", "9");
    assert_eq!(wait_for(both).await, Duration::from_secs(3));

    let long = ResponseTemplate::new(429).insert_header("x-wait", "86400");
    assert_eq!(wait_for(long).await, Duration::from_secs(120));

    let zero = ResponseTemplate::new(429).insert_header("x-wait", "0");
    assert_eq!(wait_for(zero).await, upstream_http::MIN_RATE_LIMIT_WAIT);

    let unstated = ResponseTemplate::new(429).set_body_string("<html>slow down</html>");
    assert_eq!(wait_for(unstated).await, DEFAULT_WAIT);
}

#[tokio::test]
async fn a_429_holds_back_every_user_of_the_transport() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("x-wait", "1"))
        .mount(&server)
        .await;
    let transport = Arc::new(transport(|_| {}));
    let started = Instant::now();

    let first = post(&transport, Call::Write, &server.uri()).await;
    assert!(
        matches!(first, Err(ExampleError::RateLimited { .. })),
        "{first:?}"
    );

    // Another task sharing the transport may not send until the second has passed.
    let other = {
        let transport = Arc::clone(&transport);
        let uri = server.uri();
        tokio::spawn(async move { post(&transport, Call::Read, &uri).await.is_err() })
    };
    assert!(matches!(other.await, Ok(true)));
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "sent after {elapsed:?}");
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 2);
}
