//! What is sent, and how each kind of answer becomes a result.

use std::collections::HashMap;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use upstream_http::StatusSet;

use crate::{Call, ExampleError, post, transport};

#[tokio::test]
async fn a_2xx_is_accepted_with_its_status_and_body_and_the_request_carries_json_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/items"))
        .and(header("content-type", "application/json"))
        .and(header("accept", "application/json"))
        .and(header("x-key", "k-1"))
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(201).set_body_string("made"))
        .expect(1)
        .mount(&server)
        .await;

    let transport = transport(|c| {
        c.headers.insert("x-key", HeaderValue::from_static("k-1"));
    });
    let accepted = post(&transport, Call::Read, &format!("{}/items", server.uri())).await;
    let Ok(accepted) = accepted else {
        panic!("expected an accepted answer, got {accepted:?}");
    };
    assert_eq!(accepted.status, StatusCode::CREATED);
    assert_eq!(accepted.body, Bytes::from_static(b"made"));
    server.verify().await;

    let requests = server.received_requests().await.unwrap_or_default();
    let agent = requests[0]
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    assert!(
        agent.is_some_and(|a| a.starts_with("cio-chameleon-sync/")),
        "{agent:?}"
    );
}

#[tokio::test]
async fn a_408_and_every_5xx_are_transient_with_the_upstreams_message() {
    let cases = [
        (
            ResponseTemplate::new(503).set_body_json(json!({"error": "down for upkeep"})),
            503,
            "item write: 503 down for upkeep",
        ),
        (
            ResponseTemplate::new(408),
            408,
            "item write: 408 Request Timeout",
        ),
        (
            ResponseTemplate::new(500).set_body_string("<html>\n oops </html>"),
            500,
            "item write: 500 <html> oops </html>",
        ),
    ];
    for (answer, status, message) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let error = post(&transport(|_| {}), Call::Write, &server.uri()).await;
        assert_eq!(
            error,
            Err(ExampleError::Transient {
                status: Some(status),
                message: message.to_owned()
            })
        );
    }
}

#[tokio::test]
async fn the_configured_statuses_are_transient_and_no_others() {
    let retryable = match StatusSet::new([409, 429]) {
        Ok(set) => set,
        Err(error) => panic!("{error}"),
    };
    let cases = [
        (409, "transient"),
        (503, "permanent"),
        (408, "permanent"),
        (429, "rate limited"),
    ];
    for (status, class) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let transport = transport(|c| c.retryable_statuses = retryable);
        assert_eq!(transport.retryable_statuses(), retryable);

        let error = post(&transport, Call::Write, &server.uri()).await;
        let seen = match &error {
            Err(ExampleError::Transient {
                status: Some(s), ..
            }) if *s == status => "transient",
            Err(ExampleError::Permanent { status: s, .. }) if *s == status => "permanent",
            // Listed or not, a 429 pauses the client.
            Err(ExampleError::RateLimited { .. }) => "rate limited",
            _ => "something else",
        };
        assert_eq!(seen, class, "{status}: {error:?}");
    }
}

#[tokio::test]
async fn any_other_status_is_permanent_and_names_the_upstream_and_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "no such item"})))
        .mount(&server)
        .await;

    let error = post(&transport(|_| {}), Call::Read, &server.uri()).await;
    let Err(error) = error else {
        panic!("expected an error, got {error:?}");
    };
    assert_eq!(
        error,
        ExampleError::Permanent {
            status: 404,
            message: "item read: 404 no such item".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "example.org rejected item read: 404 no such item"
    );
}

#[tokio::test]
async fn a_redirect_is_permanent_and_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/old"))
        .respond_with(
            ResponseTemplate::new(301).insert_header("location", format!("{}/new", server.uri())),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/new"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

    let error = post(
        &transport(|_| {}),
        Call::Write,
        &format!("{}/old", server.uri()),
    )
    .await;
    assert!(
        matches!(error, Err(ExampleError::Permanent { status: 301, .. })),
        "{error:?}"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_body_that_cannot_be_json_is_a_config_error() {
    let transport = transport(|_| {});
    assert_eq!(
        transport.json_body(Call::Write, &json!({"uid": "u1"})),
        Ok(br#"{"uid":"u1"}"#.to_vec())
    );

    // JSON object keys must be strings; a map keyed by pairs cannot be written.
    let odd = HashMap::from([((1, 2), "x")]);
    let error = transport.json_body(Call::Write, &odd);
    match error {
        Err(ExampleError::Config(message)) => {
            assert!(
                message.starts_with("item write body could not be encoded: "),
                "{message}"
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}
