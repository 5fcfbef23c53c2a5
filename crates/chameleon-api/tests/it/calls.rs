//! What each call sends: method, path, headers and body.

use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{SECRET, client, object, profile};

#[tokio::test]
async fn every_call_posts_its_body_to_its_path_with_the_secret_header() {
    let server = MockServer::start().await;
    let event = object(json!({"uid": "user_3120", "name": "Email Opened (Customer.io)"}));
    let company = object(json!({"uid": "acme", "seats": 12}));
    let cases = [
        ("/v3/observe/hooks/profiles", json!(profile("user_3120"))),
        ("/v3/observe/hooks/companies", json!(company)),
        ("/v3/observe/hooks/events", json!(event)),
        (
            "/v3/observe/hooks/profiles/batch",
            json!({"profiles": [profile("a"), profile("b")]}),
        ),
        (
            "/v3/observe/hooks/companies/batch",
            json!({"companies": [company]}),
        ),
    ];
    for (route, body) in &cases {
        Mock::given(method("POST"))
            .and(path(*route))
            .and(header("x-account-secret", SECRET))
            .and(header("content-type", "application/json"))
            .and(body_json(body))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .expect(1)
            .named(*route)
            .mount(&server)
            .await;
    }

    let client = client(&server);
    assert_eq!(client.upsert_profile(&profile("user_3120")).await, Ok(()));
    assert_eq!(client.upsert_company(&company).await, Ok(()));
    assert_eq!(client.send_event(&event).await, Ok(()));
    let profiles = client.profile_batch(&[profile("a"), profile("b")]).await;
    assert_eq!(profiles.map(|a| a.errors.len()), Ok(0));
    let companies = client.company_batch(std::slice::from_ref(&company)).await;
    assert_eq!(companies.map(|a| a.errors.len()), Ok(0));

    server.verify().await;
}

#[tokio::test]
async fn the_secret_never_appears_in_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let client = client(&server);
    assert_eq!(client.upsert_profile(&profile("u1")).await, Ok(()));

    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1);
    let url = requests[0].url.as_str();
    assert!(!url.contains(SECRET), "secret in {url}");
    assert_eq!(requests[0].url.query(), None);
    let debug = format!("{client:?}");
    assert!(!debug.contains(SECRET), "secret in {debug}");
}

#[tokio::test]
async fn an_api_url_with_a_path_prefix_keeps_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/stand-in/v3/observe/hooks/events"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    let client = crate::client_with(&server, |c| {
        c.api_url = format!("{}/stand-in/", server.uri())
    });
    let event = object(json!({"uid": "u1", "name": "Signed Up"}));
    assert_eq!(client.send_event(&event).await, Ok(()));
    server.verify().await;
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .expect(0)
        .mount(&server)
        .await;

    let client = client(&server);
    assert_eq!(
        client.profile_batch(&[]).await.map(|a| a.errors),
        Ok(vec![])
    );
    server.verify().await;
}
