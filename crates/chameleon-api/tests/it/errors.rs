//! How answers are classified: accepted, refused per item, transient or permanent.

use std::time::Duration;

use chameleon_api::{ChameleonError, ItemError, MAX_BATCH_BYTES};
use serde_json::json;
use sync_core::Outcome;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{client, client_for, client_with, object, profile};

#[tokio::test]
async fn a_202_batch_answer_lists_the_refused_items() {
    let server = MockServer::start().await;
    let answer = json!({
        "batch": {"id": "5f3c4232c712de665632a6d8"},
        "errors": [
            {"code": 422, "index": 2, "message": "no identifier found"},
            {"code": 422, "index": 0, "message": "uid is blank"}
        ]
    });
    Mock::given(method("POST"))
        .and(path("/v3/observe/hooks/profiles/batch"))
        .respond_with(ResponseTemplate::new(202).set_body_json(answer))
        .mount(&server)
        .await;

    let items = [profile("a"), profile("b"), object(json!({"plan": "pro"}))];
    let answer = client(&server).profile_batch(&items).await;
    let errors = answer.map(|a| a.errors);
    assert_eq!(
        errors,
        Ok(vec![
            ItemError {
                index: 0,
                code: 422,
                message: "uid is blank".to_owned()
            },
            ItemError {
                index: 2,
                code: 422,
                message: "no identifier found".to_owned()
            },
        ])
    );
}

#[tokio::test]
async fn a_422_is_permanent_with_chameleons_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(422)
                .set_body_json(json!({"code": 422, "messages": ["no identifier found"]})),
        )
        .mount(&server)
        .await;

    let error = client(&server).profile_batch(&[profile("a")]).await;
    let Err(error) = error else {
        panic!("expected an error, got {error:?}");
    };
    assert_eq!(
        error,
        ChameleonError::Permanent {
            status: 422,
            message: "profile batch: 422 no identifier found".to_owned()
        }
    );
    assert_eq!(
        error.to_string(),
        "chameleon rejected profile batch: 422 no identifier found"
    );
    assert!(matches!(error.into_outcome(), Outcome::Dead(f) if f.status == Some(422)));
}

#[tokio::test]
async fn a_403_for_a_bad_secret_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"code": 403, "messages": ["Account secret is invalid"]})),
        )
        .mount(&server)
        .await;

    let error = client(&server)
        .send_event(&object(json!({"uid": "u", "name": "n"})))
        .await;
    assert_eq!(
        error,
        Err(ChameleonError::Permanent {
            status: 403,
            message: "event: 403 Account secret is invalid".to_owned()
        })
    );
}

#[tokio::test]
async fn a_503_with_an_html_body_is_transient() {
    let server = MockServer::start().await;
    let html = "<html><head><title>503 Service Temporarily Unavailable</title></head>\n\
                <body><center><h1>503 Service Temporarily Unavailable</h1></center></body></html>";
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_raw(html.as_bytes().to_vec(), "text/html"),
        )
        .mount(&server)
        .await;

    let error = client(&server)
        .upsert_company(&object(json!({"uid": "acme"})))
        .await;
    match error {
        Err(ChameleonError::Transient {
            status: Some(503),
            message,
        }) => {
            assert!(
                message.starts_with("company upsert: 503 <html><head>"),
                "{message}"
            );
            assert!(message.chars().count() <= 200 + "company upsert: 503 ".len());
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_408_and_every_5xx_are_transient() {
    for status in [408, 500, 502, 504] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let error = client(&server).upsert_profile(&profile("u")).await;
        assert!(
            matches!(error, Err(ChameleonError::Transient { status: Some(s), .. }) if s == status),
            "{status}: {error:?}"
        );
    }
}

#[tokio::test]
async fn the_configured_retryable_statuses_decide_what_is_transient() {
    for (status, transient) in [(409, true), (503, false), (429, false)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).insert_header("retry-after", "1"))
            .mount(&server)
            .await;
        let client = client_with(&server, |c| c.retryable_statuses = vec![409, 429]);
        let error = client.upsert_profile(&profile("u")).await;
        match error {
            Err(ChameleonError::Transient {
                status: Some(s), ..
            }) if transient => {
                assert_eq!(s, status);
            }
            Err(ChameleonError::Permanent { status: s, .. }) if !transient => {
                assert_eq!(s, status);
            }
            // Listed or not, a 429 stays a rate limit.
            Err(ChameleonError::RateLimited { .. }) if status == 429 => {}
            other => panic!("{status}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "https://example.org/"))
        .mount(&server)
        .await;
    let error = client(&server).upsert_profile(&profile("u")).await;
    assert!(
        matches!(error, Err(ChameleonError::Permanent { status: 301, .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_answer_in_time_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;

    let client = client_with(&server, |c| c.timeout = Duration::from_millis(300));
    let error = client.upsert_profile(&profile("u")).await;
    assert_eq!(
        error,
        Err(ChameleonError::Transient {
            status: None,
            message: "profile upsert: no answer within 300ms".to_owned()
        })
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was just free has nobody listening on it.
    let port = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener.local_addr().map(|a| a.port()),
        Err(error) => Err(error),
    };
    let Ok(port) = port else {
        panic!("no free local port: {port:?}");
    };
    let client = client_for(format!("http://127.0.0.1:{port}"), |_| {});

    let error = client.upsert_profile(&profile("u")).await;
    match error {
        Err(ChameleonError::Transient {
            status: None,
            message,
        }) => {
            assert!(message.starts_with("profile upsert: "), "{message}");
            assert!(!message.contains("127.0.0.1"), "url in {message}");
            // The first try and three quick reconnects.
            assert!(message.ends_with(" (4 tries)"), "{message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_over_the_size_limit_is_refused_without_sending() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&server)
        .await;

    let big = object(json!({"uid": "u", "notes": "x".repeat(MAX_BATCH_BYTES)}));
    let error = client(&server).profile_batch(&[big]).await;
    assert!(
        matches!(error, Err(ChameleonError::Permanent { status: 413, .. })),
        "{error:?}"
    );
    server.verify().await;
}
