//! The Chameleon stand-in: each route's success and error answers, credentials, batches.

use reqwest::Method;
use serde_json::{Value, json};
use sync_sandbox::Upstream;

use crate::support::{ACCOUNT_SECRET, Harness, send};

const PROFILES: &str = "/v3/observe/hooks/profiles";
const PROFILE_BATCH: &str = "/v3/observe/hooks/profiles/batch";
const COMPANIES: &str = "/v3/observe/hooks/companies";
const COMPANY_BATCH: &str = "/v3/observe/hooks/companies/batch";
const EVENTS: &str = "/v3/observe/hooks/events";

fn hex_id(value: &Value) -> &str {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("no id string: {value}"));
    assert_eq!(id.len(), 24, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    id
}

fn error_indexes(body: &Value) -> Vec<u64> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"))
        .iter()
        .map(|error| {
            assert_eq!(error["code"], 422, "{error}");
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{error}"
            );
            error["index"].as_u64().expect("numeric index")
        })
        .collect()
}

#[tokio::test]
async fn profile_upserts_answer_a_stable_id_per_identity() {
    let h = Harness::start().await;

    let first = h
        .chameleon(PROFILES, json!({"uid": "user_3120", "plan": "pro"}))
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    let id = hex_id(&first.body["profile"]["id"]).to_owned();

    let again = h
        .chameleon(PROFILES, json!({"uid": "user_3120", "plan": "team"}))
        .await;
    assert_eq!(again.body["profile"]["id"], id.as_str());

    let by_email = h
        .chameleon(PROFILES, json!({"email": "mira@example.org"}))
        .await;
    assert_eq!(by_email.status, 200, "{by_email:?}");
    assert_ne!(hex_id(&by_email.body["profile"]["id"]), id);

    let by_id = h
        .chameleon(PROFILES, json!({"id": id, "plan": "pro"}))
        .await;
    assert_eq!(by_id.status, 200, "{by_id:?}");
}

#[tokio::test]
async fn single_upserts_refuse_bad_items_with_422() {
    let h = Harness::start().await;
    let long = "x".repeat(769);
    let cases = [
        (PROFILES, json!({"plan": "pro"}), "no uid or email or id"),
        (
            PROFILES,
            json!({"uid": 3120}),
            "uid must be a non-empty string",
        ),
        (
            PROFILES,
            json!({"uid": ""}),
            "uid must be a non-empty string",
        ),
        (
            PROFILES,
            json!({"uid": "u1", "created_at": "2026-01-01"}),
            "created_at is a reserved",
        ),
        (
            PROFILES,
            json!({"uid": "u1", "company": {"uid": "acme"}}),
            "company is a reserved",
        ),
        (
            PROFILES,
            json!({"uid": "u1", "bio": long}),
            "bio is 769 bytes",
        ),
        (
            PROFILES,
            json!({"uid": "u1", "a": {"b": {"c": 1}}}),
            "a.b is an object nested",
        ),
        (COMPANIES, json!({"email": "ops@acme.test"}), "no uid or id"),
        (
            COMPANIES,
            json!({"uid": "acme", "updatedAt": 1}),
            "updatedAt is a reserved",
        ),
        (EVENTS, json!({"uid": "u1"}), "name is required"),
        (
            EVENTS,
            json!({"name": "Email Opened (Customer.io)"}),
            "no uid or id",
        ),
        (
            EVENTS,
            json!({"uid": "u1", "name": "x", "percent": 5}),
            "percent is a reserved",
        ),
    ];
    for (path, body, expected) in cases {
        let answer = h.chameleon(path, body.clone()).await;
        assert_eq!(answer.status, 422, "{path} {body}: {answer:?}");
        assert_eq!(answer.body["code"], 422);
        let messages = answer.messages();
        assert!(
            messages[0].contains(expected),
            "{path} {body}: {messages:?}"
        );
    }
}

#[tokio::test]
async fn companies_and_events_answer_their_ids() {
    let h = Harness::start().await;

    let company = h
        .chameleon(COMPANIES, json!({"uid": "acme", "seats": 40}))
        .await;
    assert_eq!(company.status, 200, "{company:?}");
    hex_id(&company.body["company"]["id"]);
    let by_id = h
        .chameleon(COMPANIES, json!({"id": "6750a1b2c3d4e5f6a7b8cc00"}))
        .await;
    assert_eq!(by_id.status, 200, "{by_id:?}");

    let event = json!({"uid": "user_3120", "name": "Email Opened (Customer.io)",
                       "campaign_id": 7, "occurred_at": "2026-12-03T09:15:02Z"});
    let first = h.chameleon(EVENTS, event.clone()).await;
    let second = h.chameleon(EVENTS, event).await;
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{first:?} {second:?}"
    );
    assert_ne!(
        hex_id(&first.body["event"]["id"]),
        hex_id(&second.body["event"]["id"]),
        "each event is a new record"
    );
}

#[tokio::test]
async fn batches_name_bad_items_by_index_and_accept_the_rest() {
    let h = Harness::start().await;
    let profiles = json!({"profiles": [
        {"uid": "u0", "plan": "pro"},
        {"plan": "free"},
        {"uid": "u2", "createdAt": 1_733_140_800},
        {"uid": "u3", "note": "y".repeat(800)},
        {"email": "u4@example.org", "address": {"city": "Lyon"}},
        {"uid": "u5", "id": "6750a1b2c3d4e5f6a7b8cc00"},
        {"uid": "u6", "a": {"b": {"c": true}}},
    ]});
    let answer = h.chameleon(PROFILE_BATCH, profiles).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    hex_id(&answer.body["batch"]["id"]);
    assert_eq!(error_indexes(&answer.body), vec![1, 2, 3, 5, 6]);

    let companies = json!({"companies": [{"uid": "acme"}, {"id": "6750a1b2c3d4e5f6a7b8cc01"}],
                           "on_model_missing": "create"});
    let answer = h.chameleon(COMPANY_BATCH, companies).await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(error_indexes(&answer.body), Vec::<u64>::new());
    assert_eq!(
        h.sandbox.accepted(Upstream::Chameleon).len(),
        2,
        "202 counts as accepted"
    );
}

#[tokio::test]
async fn batches_of_the_wrong_shape_are_refused_whole() {
    let h = Harness::start().await;

    let wrong_key = h
        .chameleon(COMPANY_BATCH, json!({"profiles": [{"uid": "u1"}]}))
        .await;
    assert_eq!(wrong_key.status, 422, "{wrong_key:?}");
    assert!(wrong_key.messages()[0].contains("companies must be an array"));

    let bad_mode = json!({"profiles": [{"uid": "u1"}], "on_model_missing": "upsert"});
    let answer = h.chameleon(PROFILE_BATCH, bad_mode).await;
    assert_eq!(answer.status, 422, "{answer:?}");
}

#[tokio::test]
async fn a_batch_over_16mb_is_refused_with_413() {
    let h = Harness::start().await;
    let item = json!({"uid": "u", "note": "z".repeat(700)});
    let items = vec![item; 16_000_000 / 700 + 10];
    let answer = h
        .chameleon(PROFILE_BATCH, json!({ "profiles": items }))
        .await;
    assert_eq!(answer.status, 413, "{}", answer.status);
    assert_eq!(answer.body["code"], 413);
    assert!(
        answer.messages()[0].starts_with("Each batch must be less than 16mb, "),
        "{:?}",
        answer.messages()
    );

    let recorded = h.sandbox.requests();
    assert!(
        recorded[0]
            .body
            .as_str()
            .is_some_and(|note| note.contains("not recorded"))
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_answer_400() {
    let h = Harness::start().await;
    let with_secret = |body: &'static str, content_type: &'static str| {
        h.request(Method::POST, PROFILES)
            .header("X-Account-Secret", ACCOUNT_SECRET)
            .header("Content-Type", content_type)
            .body(body)
    };

    for (body, content_type) in [
        ("uid=u1", "application/json"),
        ("[{\"uid\":\"u1\"}]", "application/json"),
        ("\"u1\"", "application/json"),
        ("{\"uid\":\"u1\"}", "application/x-www-form-urlencoded"),
    ] {
        let answer = send(with_secret(body, content_type)).await;
        assert_eq!(answer.status, 400, "{body} as {content_type}: {answer:?}");
        assert_eq!(answer.body["code"], 400);
        assert_eq!(answer.messages().len(), 1);
    }
}

#[tokio::test]
async fn a_missing_or_wrong_secret_answers_403() {
    let h = Harness::start().await;
    let body = json!({"uid": "u1", "name": "Email Opened (Customer.io)"});

    let missing = send(h.request(Method::POST, EVENTS).json(&body)).await;
    let wrong = send(
        h.request(Method::POST, EVENTS)
            .header("X-Account-Secret", "not-the-secret")
            .json(&body),
    )
    .await;
    let in_query = send(
        h.request(
            Method::POST,
            &format!("{EVENTS}?account_secret={ACCOUNT_SECRET}"),
        )
        .json(&body),
    )
    .await;
    for answer in [missing, wrong, in_query] {
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_eq!(answer.body["code"], 403);
        assert_eq!(answer.messages().len(), 1);
    }
    assert!(h.sandbox.accepted(Upstream::Chameleon).is_empty());
}

#[tokio::test]
async fn the_secret_in_the_path_form_is_not_served_and_not_recorded() {
    let h = Harness::start().await;
    let answer = h
        .chameleon(
            &format!("/v3/observe/hooks/{ACCOUNT_SECRET}/profiles"),
            json!({"uid": "u1"}),
        )
        .await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(answer.body["code"], 404);

    let recorded = h.sandbox.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v3/observe/hooks/[redacted]/profiles");
}

#[tokio::test]
async fn other_methods_answer_405() {
    let h = Harness::start().await;
    let answer = send(
        h.request(Method::GET, PROFILES)
            .header("X-Account-Secret", ACCOUNT_SECRET),
    )
    .await;
    assert_eq!(answer.status, 405, "{answer:?}");
    assert_eq!(answer.body["code"], 405);
}
