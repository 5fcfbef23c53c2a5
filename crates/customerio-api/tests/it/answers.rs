//! How answers are classified: accepted, partly refused (`207`), transient, permanent, or rate
//! limited with a pause of the whole client.

use std::time::{Duration, Instant};

use customerio_api::{MAX_BATCH_BYTES, OpError, TrackError};
use serde_json::json;
use sync_core::Outcome;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{by_id, client, client_with};

async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_207_names_only_the_failed_operations() {
    let server = answering(ResponseTemplate::new(207).set_body_json(json!({
        "errors": [
            {"batch_index": 2, "reason": "invalid", "field": "id", "message": "must be a ULID"},
            {"batch_index": 0, "reason": "required", "field": "identifiers", "message": "missing"}
        ]
    })))
    .await;

    let events = [by_id("a", 1), by_id("b", 2), by_id("c", 3)];
    let result = client(&server).send_batch(&events).await;
    assert_eq!(
        result.map(|r| r.failed),
        Ok(vec![
            OpError {
                index: 0,
                reason: "required".to_owned(),
                field: Some("identifiers".to_owned()),
                message: "missing".to_owned()
            },
            OpError {
                index: 2,
                reason: "invalid".to_owned(),
                field: Some("id".to_owned()),
                message: "must be a ULID".to_owned()
            },
        ])
    );
}

#[tokio::test]
async fn a_207_that_names_no_operation_is_retried_whole() {
    let server = answering(ResponseTemplate::new(207).set_body_string("partial")).await;
    let error = client(&server).send_batch(&[by_id("a", 1)]).await;
    assert!(
        matches!(
            error,
            Err(TrackError::Transient {
                status: Some(207),
                ..
            })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_400_is_permanent_with_customerios_message() {
    let server = answering(
        ResponseTemplate::new(400)
            .set_body_json(json!({"meta": {"errors": ["event name is too long"]}})),
    )
    .await;

    let error = client(&server).send_event(&by_id("u1", 1)).await;
    let Err(error) = error else {
        panic!("expected an error, got {error:?}");
    };
    assert_eq!(
        error,
        TrackError::Permanent {
            status: 400,
            message: "event: 400 event name is too long".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "customer.io rejected event: 400 event name is too long"
    );
    assert!(matches!(error.into_outcome(), Outcome::Dead(f) if f.status == Some(400)));
}

#[tokio::test]
async fn a_400_or_401_rejects_a_whole_batch() {
    for status in [400, 401] {
        let server = answering(ResponseTemplate::new(status)).await;
        let error = client(&server)
            .send_batch(&[by_id("a", 1), by_id("b", 2)])
            .await;
        assert!(
            matches!(error, Err(TrackError::Permanent { status: s, .. }) if s == status),
            "{status}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_503_and_a_408_are_transient() {
    for status in [503, 408, 500] {
        let server = answering(
            ResponseTemplate::new(status).set_body_raw(b"<html>down</html>".to_vec(), "text/html"),
        )
        .await;
        let error = client(&server).send_batch(&[by_id("a", 1)]).await;
        assert_eq!(
            error,
            Err(TrackError::Transient {
                status: Some(status),
                message: format!("batch: {status} <html>down</html>")
            })
        );
    }
}

#[tokio::test]
async fn no_answer_in_time_is_transient_and_names_no_person() {
    let server = answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(30))).await;
    let client = client_with(&server, |c| c.timeout = Duration::from_millis(300));
    let error = client.send_event(&by_id("mira@example.org", 1)).await;
    assert_eq!(
        error,
        Err(TrackError::Transient {
            status: None,
            message: "event: no answer within 300ms".to_owned()
        })
    );
}

#[tokio::test]
async fn a_429_honours_retry_after_and_pauses_the_whole_client() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let client = client(&server);
    let started = Instant::now();
    let first = client.send_batch(&[by_id("a", 1)]).await;
    assert_eq!(
        first,
        Err(TrackError::RateLimited {
            wait: Duration::from_secs(1)
        })
    );
    assert!(client.pause_remaining().is_some());

    // A clone shares the pause: it may not send until the wait has passed.
    assert_eq!(client.clone().send_event(&by_id("b", 2)).await, Ok(()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "sent after {:?}",
        started.elapsed()
    );
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 2);
}

#[tokio::test]
async fn a_429_wait_is_capped_and_defaults_when_unstated() {
    let cases = [
        (
            ResponseTemplate::new(429).insert_header("retry-after", "3600"),
            120,
        ),
        (ResponseTemplate::new(429), 10),
    ];
    for (answer, expected) in cases {
        let server = answering(answer).await;
        let client = client_with(&server, |c| c.max_wait = Duration::from_secs(120));
        let error = client.send_event(&by_id("a", 1)).await;
        let wait = Duration::from_secs(expected);
        assert_eq!(error, Err(TrackError::RateLimited { wait }));
        let remaining = client.pause_remaining().unwrap_or_default();
        assert!(remaining > wait - Duration::from_secs(2) && remaining <= wait);
    }
}

#[tokio::test]
async fn a_batch_over_the_request_limit_is_refused_without_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

    let mut big = by_id("a", 1);
    big.attributes
        .insert("notes".to_owned(), json!("x".repeat(MAX_BATCH_BYTES)));
    let error = client(&server).send_batch(&[big]).await;
    assert!(
        matches!(error, Err(TrackError::Permanent { status: 413, .. })),
        "{error:?}"
    );
    server.verify().await;
}
