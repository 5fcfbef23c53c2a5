//! What each call sends: path, authentication and body.

use customerio_api::Identifier;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{API_KEY, BASIC, by_id, client, client_with, event};

#[tokio::test]
async fn a_v1_event_posts_name_id_timestamp_and_data_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/customers/user_3120/events"))
        .and(header("authorization", BASIC))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "Exited Tour (Chameleon)",
            "id": "01JF2R0000ABCDEFGHJKMNP001",
            "timestamp": 1_764_753_302,
            "data": {"tour_id": "6760aa01b2c3d4e5f6a7b801", "tour_name": "Billing walkthrough"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    assert_eq!(
        client(&server).send_event(&by_id("user_3120", 1)).await,
        Ok(())
    );
    server.verify().await;
}

#[tokio::test]
async fn an_email_identifier_is_url_encoded_in_the_v1_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let client = client(&server);
    let by_email = event(Identifier::Email("mira+tours@example.org".to_owned()), 2);
    assert_eq!(client.send_event(&by_email).await, Ok(()));
    assert_eq!(client.send_event(&by_id("team/a b", 3)).await, Ok(()));

    let requests = server.received_requests().await.unwrap_or_default();
    let paths: Vec<&str> = requests.iter().map(|r| r.url.path()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/customers/mira%2Btours%40example.org/events",
            "/api/v1/customers/team%2Fa%20b/events"
        ]
    );
    for request in &requests {
        assert!(!request.url.as_str().contains(API_KEY));
    }
}

#[tokio::test]
async fn a_batch_posts_person_event_operations() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/batch"))
        .and(header("authorization", BASIC))
        .and(body_json(json!({"batch": [
            {
                "type": "person",
                "identifiers": {"id": "user_3120"},
                "action": "event",
                "name": "Exited Tour (Chameleon)",
                "id": "01JF2R0000ABCDEFGHJKMNP001",
                "timestamp": 1_764_753_302,
                "attributes": {
                    "tour_id": "6760aa01b2c3d4e5f6a7b801",
                    "tour_name": "Billing walkthrough"
                }
            },
            {
                "type": "person",
                "identifiers": {"email": "mira@example.org"},
                "action": "event",
                "name": "Exited Tour (Chameleon)",
                "id": "01JF2R0000ABCDEFGHJKMNP002",
                "timestamp": 1_764_753_302,
                "attributes": {
                    "tour_id": "6760aa01b2c3d4e5f6a7b801",
                    "tour_name": "Billing walkthrough"
                }
            }
        ]})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    let events = [
        by_id("user_3120", 1),
        event(Identifier::Email("mira@example.org".to_owned()), 2),
    ];
    let result = client(&server).send_batch(&events).await;
    assert_eq!(result.map(|r| r.failed), Ok(vec![]));
    server.verify().await;
}

#[tokio::test]
async fn track_url_overrides_the_region_and_keeps_its_path_prefix() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/cio/api/v2/batch"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    let client = client_with(&server, |c| {
        c.region = customerio_api::Region::Eu;
        c.track_url = Some(format!("{}/cio/", server.uri()));
    });
    assert!(client.send_batch(&[by_id("u1", 1)]).await.is_ok());
    server.verify().await;
}

#[tokio::test]
async fn empty_batches_and_unusable_identifiers_send_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

    let client = client(&server);
    assert_eq!(client.send_batch(&[]).await.map(|r| r.failed), Ok(vec![]));
    for identifier in ["", ".", ".."] {
        let error = client.send_event(&by_id(identifier, 1)).await;
        assert!(
            matches!(
                error,
                Err(customerio_api::TrackError::Permanent { status: 400, .. })
            ),
            "{identifier:?}: {error:?}"
        );
    }
    server.verify().await;
}
