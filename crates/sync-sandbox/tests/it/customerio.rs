//! The Customer.io stand-in: v1 events and identify, v2 batch and entity, Basic auth.

use reqwest::Method;
use serde_json::{Value, json};
use sync_sandbox::Upstream;

use crate::support::{API_KEY, Harness, SITE_ID, send};

const EVENTS: &str = "/api/v1/customers/user_3120/events";
const IDENTIFY: &str = "/api/v1/customers/user_3120";
const BATCH: &str = "/api/v2/batch";
const ENTITY: &str = "/api/v2/entity";
const ULID: &str = "01JF2R0000ABCDEFGHJKMNPQRS";

fn event_op(person: &str) -> Value {
    json!({"type": "person", "identifiers": {"id": person}, "action": "event",
           "name": "Started Tour (Chameleon)", "id": ULID, "timestamp": 1_735_725_660,
           "attributes": {"tour_id": "6760aa01b2c3d4e5f6a7b801",
                          "tour_name": "Billing walkthrough"}})
}

fn v1_errors(body: &Value) -> Vec<String> {
    body["meta"]["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no meta.errors: {body}"))
        .iter()
        .map(|error| error.as_str().expect("string error").to_owned())
        .collect()
}

#[tokio::test]
async fn v1_events_are_accepted_with_an_empty_object() {
    let h = Harness::start().await;
    let full = json!({"name": "Exited Tour (Chameleon)", "id": ULID, "timestamp": 1_735_725_660,
                      "data": {"tour_id": "t1", "step_id": "s4"}});
    for body in [full, json!({"name": "Completed Tour (Chameleon)"})] {
        let answer = h.customerio(Method::POST, EVENTS, body.clone()).await;
        assert_eq!((answer.status, &answer.body), (200, &json!({})), "{body}");
    }
    let encoded = h
        .customerio(
            Method::POST,
            "/api/v1/customers/mira%40example.org/events",
            json!({"name": "n"}),
        )
        .await;
    assert_eq!(encoded.status, 200, "{encoded:?}");
}

#[tokio::test]
async fn v1_events_that_break_a_rule_answer_400_with_meta_errors() {
    let h = Harness::start().await;
    let cases = [
        (json!({"data": {"a": 1}}), "name is required"),
        (json!({"name": "n".repeat(101)}), "over the 100 bytes"),
        (
            json!({"name": "n", "id": "6760aa01b2c3d4e5f6a7b800"}),
            "ULID",
        ),
        (
            json!({"name": "n", "id": "01JD4M9X2Q8W7E5R3T1Y6U0I9A"}),
            "ULID",
        ),
        (
            json!({"name": "n", "timestamp": 1_735_725_660_000_u64}),
            "whole unix seconds",
        ),
        (
            json!({"name": "n", "data": {"blob": "b".repeat(100_000)}}),
            "over the 100000",
        ),
        (
            json!({"name": "n", "data": "flat"}),
            "data must be an object",
        ),
    ];
    for (body, expected) in cases {
        let answer = h.customerio(Method::POST, EVENTS, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        let errors = v1_errors(&answer.body);
        assert!(errors[0].contains(expected), "{body}: {errors:?}");
    }
}

#[tokio::test]
async fn identify_takes_flat_attributes_within_limits() {
    let h = Harness::start().await;
    let good = h
        .customerio(
            Method::PUT,
            IDENTIFY,
            json!({"email": "mira@example.org", "plan": "pro"}),
        )
        .await;
    assert_eq!((good.status, &good.body), (200, &json!({})));

    let long = h
        .customerio(Method::PUT, IDENTIFY, json!({"bio": "b".repeat(1001)}))
        .await;
    assert_eq!(long.status, 400, "{long:?}");
    assert!(v1_errors(&long.body)[0].contains("attribute bio is 1001 bytes"));

    let wrong_method = h
        .customerio(Method::POST, IDENTIFY, json!({"plan": "pro"}))
        .await;
    assert_eq!(wrong_method.status, 405, "{wrong_method:?}");
}

#[tokio::test]
async fn missing_or_wrong_credentials_answer_401() {
    let h = Harness::start().await;
    let body = json!({"name": "Started Tour (Chameleon)"});
    let answers = [
        send(h.request(Method::POST, EVENTS).json(&body)).await,
        send(
            h.request(Method::POST, EVENTS)
                .basic_auth(SITE_ID, Some("wrong"))
                .json(&body),
        )
        .await,
        send(
            h.request(Method::POST, EVENTS)
                .basic_auth("other-site", Some(API_KEY))
                .json(&body),
        )
        .await,
        send(
            h.request(Method::POST, EVENTS)
                .bearer_auth(API_KEY)
                .json(&body),
        )
        .await,
    ];
    for answer in answers {
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(v1_errors(&answer.body).len(), 1);
    }

    let v2 = send(
        h.request(Method::POST, BATCH)
            .json(&json!({"batch": [event_op("u1")]})),
    )
    .await;
    assert_eq!(v2.status, 401, "{v2:?}");
    assert_eq!(v2.body["errors"][0]["reason"], "unauthorized");
    assert!(h.sandbox.accepted(Upstream::Customerio).is_empty());
}

#[tokio::test]
async fn a_good_batch_answers_200() {
    let h = Harness::start().await;
    let identify = json!({"type": "person", "identifiers": {"email": "mira@example.org"},
                          "action": "identify", "attributes": {"plan": "pro"}});
    let answer = h
        .customerio(
            Method::POST,
            BATCH,
            json!({"batch": [event_op("u1"), identify]}),
        )
        .await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({})),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_batch_with_bad_operations_answers_207_naming_them() {
    let h = Harness::start().await;
    let mut two_identifiers = event_op("u1");
    two_identifiers["identifiers"]["email"] = json!("u1@example.org");
    let mut no_name = event_op("u3");
    no_name.as_object_mut().unwrap().remove("name");
    let mut bad_id = event_op("u4");
    bad_id["id"] = json!("user_3120");
    let mut too_big = event_op("u6");
    too_big["attributes"]["blob"] = json!("b".repeat(33_000));

    let batch = json!({"batch": [
        event_op("u0"), two_identifiers, event_op("u2"), no_name, bad_id, event_op("u5"), too_big,
    ]});
    let answer = h.customerio(Method::POST, BATCH, batch).await;
    assert_eq!(answer.status, 207, "{answer:?}");

    let errors = answer.body["errors"].as_array().unwrap();
    let named: Vec<(u64, &str, &str)> = errors
        .iter()
        .map(|error| {
            assert!(
                error["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{error}"
            );
            (
                error["batch_index"].as_u64().unwrap(),
                error["reason"].as_str().unwrap(),
                error["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        vec![
            (1, "invalid", "identifiers"),
            (3, "required", "name"),
            (4, "invalid", "id"),
            (6, "too_large", ""),
        ]
    );
    assert_eq!(
        h.sandbox.accepted(Upstream::Customerio).len(),
        1,
        "207 is a partial success"
    );
}

#[tokio::test]
async fn a_batch_that_is_too_large_or_empty_is_refused_whole() {
    let h = Harness::start().await;
    let ops: Vec<Value> = (0..30)
        .map(|i| {
            let mut op = event_op(&format!("u{i}"));
            op["attributes"]["blob"] = json!("b".repeat(20_000));
            op
        })
        .collect();
    let too_large = h
        .customerio(Method::POST, BATCH, json!({ "batch": ops }))
        .await;
    assert_eq!(too_large.status, 400, "{}", too_large.status);
    assert_eq!(too_large.body["errors"][0]["reason"], "too_large");

    for body in [json!({"batch": []}), json!({"ops": [event_op("u1")]})] {
        let answer = h.customerio(Method::POST, BATCH, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert!(answer.body["errors"][0]["message"].as_str().is_some());
    }
}

#[tokio::test]
async fn entity_takes_one_operation() {
    let h = Harness::start().await;
    let good = h.customerio(Method::POST, ENTITY, event_op("u1")).await;
    assert_eq!((good.status, &good.body), (200, &json!({})));

    let mut bad = event_op("u1");
    bad["type"] = json!("object");
    let answer = h.customerio(Method::POST, ENTITY, bad).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let error = &answer.body["errors"][0];
    assert_eq!(
        (error["reason"].as_str(), error["field"].as_str()),
        (Some("invalid"), Some("type"))
    );
    assert!(error.get("batch_index").is_none());
}
