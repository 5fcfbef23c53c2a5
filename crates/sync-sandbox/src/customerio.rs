//! The Customer.io stand-in: the Track API calls of API-NOTES §2, checked against the documented
//! limits and answered in Customer.io's shapes.
//!
//! Every call carries HTTP Basic auth `site_id:api_key` (else `401`) and a JSON object body with
//! `Content-Type: application/json` (else `400`).
//!
//! One example per request shape, with its answers:
//! ```text
//! POST /api/v1/customers/user_3120/events
//! {"name":"Exited Tour (Chameleon)","id":"01JF2R0000ABCDEFGHJKMNPQRS","timestamp":1735725660,
//!  "data":{"tour_id":"t1"}}
//! -> 200 {}, or 400 {"meta":{"errors":[".."]}}
//!
//! PUT /api/v1/customers/user_3120
//! {"email":"mira@example.org","plan":"pro"}
//! -> 200 {}, or 400 {"meta":{"errors":[".."]}}
//!
//! POST /api/v2/batch
//! {"batch":[{"type":"person","identifiers":{"id":"user_3120"},"action":"event",
//!   "name":"Started Tour (Chameleon)","id":"01JF2R0000ABCDEFGHJKMNPQRS","timestamp":1735725660,
//!   "attributes":{"tour_id":"t1"}}]}
//! -> 200 {}; some operations bad:
//!    207 {"errors":[{"batch_index":0,"reason":"..","field":"..","message":".."}]};
//!    the whole request bad: 400 {"errors":[{"reason":"..","field":"..","message":".."}]}
//!
//! POST /api/v2/entity
//! {"type":"person","identifiers":{"email":"mira@example.org"},"action":"identify",
//!  "attributes":{"plan":"pro"}}
//! -> 200 {}, or 400 {"errors":[{"reason":"..","field":"..","message":".."}]}
//! ```
//!
//! The checks: event `name` required and at most [`MAX_EVENT_NAME_BYTES`]; event `id`, when
//! present, a ULID (26 Crockford base32 characters); `timestamp`, when present, whole unix
//! seconds (a millisecond value is refused); event data at most [`MAX_EVENT_DATA_BYTES`] once
//! serialised; person attributes (identify) at most [`MAX_ATTRIBUTES`], names at most
//! [`MAX_NAME_BYTES`], values at most [`MAX_ATTRIBUTE_VALUE_BYTES`]. A batch is at most
//! [`MAX_BATCH_BYTES`] (else `400` whole), each operation at most [`MAX_OPERATION_BYTES`], of type
//! `person` with exactly one of the identifiers `id`, `email`, `cio_id`.
//!
//! Sizes in kilobytes are read as thousands of bytes, the stricter reading: a client that passes
//! here passes upstream.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde_json::{Map, Value, json};

use crate::reply::Reply;

pub const MAX_EVENT_NAME_BYTES: usize = 100;
pub const MAX_EVENT_DATA_BYTES: usize = 100_000;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1000;
/// Person ids and attribute names.
pub const MAX_NAME_BYTES: usize = 150;
pub const MAX_ATTRIBUTES: usize = 300;
pub const MAX_BATCH_BYTES: usize = 500_000;
/// Each batch operation, and the whole `/api/v2/entity` request.
pub const MAX_OPERATION_BYTES: usize = 32_000;

/// Timestamps at or past this are taken for milliseconds (it is the year 2286 in seconds).
const FIRST_MILLISECOND_TIMESTAMP: u64 = 10_000_000_000;

const IDENTIFIER_KEYS: [&str; 3] = ["id", "email", "cio_id"];
const PERSON_ACTIONS: [&str; 7] = [
    "identify",
    "event",
    "page",
    "screen",
    "delete",
    "suppress",
    "unsuppress",
];

/// The Track API calls the sandbox serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// `POST /api/v1/customers/{person}/events`.
    Event { person: String },
    /// `PUT /api/v1/customers/{person}`.
    Identify { person: String },
    /// `POST /api/v2/batch`.
    Batch,
    /// `POST /api/v2/entity`.
    Entity,
}

/// Why one operation or request was refused, in the v2 error shape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    field: String,
    message: String,
}

impl Problem {
    fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason,
            field: field.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.reason, "field": self.field, "message": self.message})
    }
}

/// The `Authorization` header value the configured credentials make.
pub(crate) fn expected_authorization(site_id: &str, api_key: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{site_id}:{api_key}").as_bytes())
    )
}

/// True when the request's HTTP Basic credentials are the configured ones.
pub(crate) fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    match (given.split_once(' '), expected.split_once(' ')) {
        (Some((scheme, credentials)), Some((_, wanted))) => {
            scheme.eq_ignore_ascii_case("basic") && credentials.trim() == wanted
        }
        _ => false,
    }
}

/// An error for any path: the v1 shape under `/api/v1`, the v2 shape elsewhere.
pub(crate) fn error(path: &str, status: u16, reason: &'static str, message: &str) -> Reply {
    if path.starts_with("/api/v1/") {
        Reply::json(status, json!({"meta": {"errors": [message]}}))
    } else {
        let problem = Problem::new(reason, "", message);
        Reply::json(status, json!({"errors": [problem.to_json()]}))
    }
}

pub(crate) fn unauthorized(path: &str) -> Reply {
    error(
        path,
        401,
        "unauthorized",
        "Unauthorized request: HTTP Basic auth with the site id and Track API key is required",
    )
}

pub(crate) fn rate_limited(path: &str, wait_secs: u64) -> Reply {
    error(path, 429, "rate_limited", "Too many requests: slow down")
        .with_header("retry-after", wait_secs)
}

/// Checks a call and answers it as the Track API would.
pub(crate) fn answer(call: &Call, path: &str, headers: &HeaderMap, body: &[u8]) -> Reply {
    let limit = match call {
        Call::Batch => Some(MAX_BATCH_BYTES),
        Call::Entity => Some(MAX_OPERATION_BYTES),
        Call::Event { .. } | Call::Identify { .. } => None,
    };
    if let Some(limit) = limit.filter(|limit| body.len() > *limit) {
        let message = format!(
            "request is {} bytes, over the {limit} bytes allowed",
            body.len()
        );
        return error(path, 400, "too_large", &message);
    }

    let object = match crate::request::json_object(headers, body) {
        Ok(object) => object,
        Err(message) => return error(path, 400, "invalid", &message),
    };

    let checked = match call {
        Call::Event { person } => {
            check_person_id("path", person).and_then(|()| check_event(&object))
        }
        Call::Identify { person } => {
            check_person_id("path", person).and_then(|()| check_attributes("", &object))
        }
        Call::Entity => check_operation(&object),
        Call::Batch => return answer_batch(path, &object),
    };
    match checked {
        Ok(()) => Reply::json(200, json!({})),
        Err(problem) => match call {
            Call::Entity => Reply::json(400, json!({"errors": [problem.to_json()]})),
            _ => Reply::json(400, json!({"meta": {"errors": [problem.message]}})),
        },
    }
}

fn answer_batch(path: &str, body: &Map<String, Value>) -> Reply {
    let operations = match body.get("batch").and_then(Value::as_array) {
        Some(operations) if !operations.is_empty() => operations,
        _ => {
            return error(
                path,
                400,
                "required",
                "batch must be a non-empty array of operations",
            );
        }
    };

    // Only the bad operations are named; Customer.io accepts the others.
    let errors: Vec<Value> = operations
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| {
            let checked = match operation.as_object() {
                Some(operation) => check_operation(operation),
                None => Err(Problem::new(
                    "invalid",
                    "",
                    "operation must be a JSON object",
                )),
            };
            let mut error = checked.err()?.to_json();
            error["batch_index"] = json!(index);
            Some(error)
        })
        .collect();

    if errors.is_empty() {
        Reply::json(200, json!({}))
    } else {
        Reply::json(207, json!({ "errors": errors }))
    }
}

/// The v1 event body: `{"name", "id"?, "type"?, "timestamp"?, "data"?}`.
fn check_event(event: &Map<String, Value>) -> Result<(), Problem> {
    check_event_name(event)?;
    check_event_id(event)?;
    check_timestamp(event)?;
    if let Some(kind) = event.get("type").filter(|kind| !kind.is_null())
        && !matches!(kind.as_str(), Some("event" | "page" | "screen"))
    {
        return Err(Problem::new(
            "invalid",
            "type",
            "type must be event, page or screen",
        ));
    }
    check_event_data("data", event.get("data"))
}

/// One v2 operation (a batch item or the body of `/api/v2/entity`).
fn check_operation(operation: &Map<String, Value>) -> Result<(), Problem> {
    let size = Value::Object(operation.clone()).to_string().len();
    if size > MAX_OPERATION_BYTES {
        return Err(Problem::new(
            "too_large",
            "",
            format!("operation is {size} bytes, over the {MAX_OPERATION_BYTES} bytes allowed"),
        ));
    }

    if operation.get("type").and_then(Value::as_str) != Some("person") {
        return Err(Problem::new(
            "invalid",
            "type",
            "type must be person (the only type the sandbox serves)",
        ));
    }
    check_identifiers(operation.get("identifiers"))?;

    let action = operation
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !PERSON_ACTIONS.contains(&action) {
        return Err(Problem::new(
            "invalid",
            "action",
            format!("action must be one of {}", PERSON_ACTIONS.join(", ")),
        ));
    }
    check_event_id(operation)?;
    check_timestamp(operation)?;

    // Events carry event data in `attributes`; identify carries person attributes.
    match action {
        "event" | "page" | "screen" => {
            check_event_name(operation)?;
            check_event_data("attributes", operation.get("attributes"))
        }
        _ => match operation.get("attributes") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(attributes)) => check_attributes("attributes", attributes),
            Some(_) => Err(Problem::new(
                "invalid",
                "attributes",
                "attributes must be an object",
            )),
        },
    }
}

fn check_identifiers(identifiers: Option<&Value>) -> Result<(), Problem> {
    let Some(identifiers) = identifiers.and_then(Value::as_object) else {
        return Err(Problem::new(
            "required",
            "identifiers",
            "identifiers must be an object",
        ));
    };
    let given: Vec<(&str, &Value)> = IDENTIFIER_KEYS
        .iter()
        .filter_map(|key| {
            Some((
                *key,
                identifiers.get(*key).filter(|value| !value.is_null())?,
            ))
        })
        .collect();
    let [(key, value)] = given.as_slice() else {
        return Err(Problem::new(
            "invalid",
            "identifiers",
            format!(
                "identifiers must hold exactly one of id, email, cio_id; {} given",
                given.len()
            ),
        ));
    };
    match value.as_str() {
        Some(value) => check_person_id(&format!("identifiers.{key}"), value),
        None => Err(Problem::new(
            "invalid",
            format!("identifiers.{key}"),
            format!("identifiers.{key} must be a string"),
        )),
    }
}

fn check_person_id(field: &str, person: &str) -> Result<(), Problem> {
    if person.is_empty() || person.len() > MAX_NAME_BYTES {
        return Err(Problem::new(
            "invalid",
            field,
            format!(
                "person identifier must be 1 to {MAX_NAME_BYTES} bytes, got {}",
                person.len()
            ),
        ));
    }
    Ok(())
}

fn check_event_name(event: &Map<String, Value>) -> Result<(), Problem> {
    match event.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() && name.len() <= MAX_EVENT_NAME_BYTES => Ok(()),
        Some(name) if !name.is_empty() => Err(Problem::new(
            "too_long",
            "name",
            format!(
                "event name is {} bytes, over the {MAX_EVENT_NAME_BYTES} bytes allowed",
                name.len()
            ),
        )),
        _ => Err(Problem::new("required", "name", "event name is required")),
    }
}

fn check_event_id(event: &Map<String, Value>) -> Result<(), Problem> {
    match event.get("id") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(id)) if is_ulid(id) => Ok(()),
        Some(other) => Err(Problem::new(
            "invalid",
            "id",
            format!("event id must be a ULID (26 Crockford base32 characters), got {other}"),
        )),
    }
}

fn check_timestamp(event: &Map<String, Value>) -> Result<(), Problem> {
    match event.get("timestamp") {
        None | Some(Value::Null) => Ok(()),
        Some(value)
            if value
                .as_u64()
                .is_some_and(|t| t < FIRST_MILLISECOND_TIMESTAMP) =>
        {
            Ok(())
        }
        Some(other) => Err(Problem::new(
            "invalid",
            "timestamp",
            format!("timestamp must be whole unix seconds, got {other}"),
        )),
    }
}

fn check_event_data(field: &str, data: Option<&Value>) -> Result<(), Problem> {
    match data {
        None | Some(Value::Null) => Ok(()),
        Some(data @ Value::Object(_)) => {
            let size = data.to_string().len();
            if size > MAX_EVENT_DATA_BYTES {
                return Err(Problem::new(
                    "too_large",
                    field,
                    format!("event data is {size} bytes, over the {MAX_EVENT_DATA_BYTES} allowed"),
                ));
            }
            Ok(())
        }
        Some(_) => Err(Problem::new(
            "invalid",
            field,
            format!("{field} must be an object"),
        )),
    }
}

/// Person attributes: count, name length, and value length (strings by their bytes, other
/// values by their JSON text).
fn check_attributes(parent: &str, attributes: &Map<String, Value>) -> Result<(), Problem> {
    let field = |name: &str| {
        if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        }
    };
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Problem::new(
            "too_large",
            parent,
            format!(
                "{} attributes, over the {MAX_ATTRIBUTES} allowed",
                attributes.len()
            ),
        ));
    }
    for (name, value) in attributes {
        if name.len() > MAX_NAME_BYTES {
            return Err(Problem::new(
                "too_long",
                field(name),
                format!("attribute name is over {MAX_NAME_BYTES} bytes"),
            ));
        }
        let size = match value {
            Value::String(text) => text.len(),
            other => other.to_string().len(),
        };
        if size > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(Problem::new(
                "too_long",
                field(name),
                format!(
                    "attribute {name} is {size} bytes, over the {MAX_ATTRIBUTE_VALUE_BYTES} allowed"
                ),
            ));
        }
    }
    Ok(())
}

/// A ULID: 26 Crockford base32 characters (no I, L, O, U), the first at most 7 so that the
/// value fits 128 bits. Either case is accepted.
fn is_ulid(text: &str) -> bool {
    const ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    text.len() == 26
        && text.starts_with(|c: char| ('0'..='7').contains(&c))
        && text
            .chars()
            .all(|c| ALPHABET.contains(c.to_ascii_uppercase()))
}

/// Standard base64 with padding, for the expected Basic credentials.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let bytes = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let bits = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (bits >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A short description of a call for the log: event name and person, or batch size.
pub(crate) fn summary(call: &Call, body: &Value) -> String {
    let text = |value: &Value, key: &str| {
        value
            .get(key)
            .map(Value::to_string)
            .unwrap_or_else(|| "-".into())
    };
    match call {
        Call::Event { person } => format!("name={} person={person}", text(body, "name")),
        Call::Identify { person } => {
            let attributes = body.as_object().map_or(0, Map::len);
            format!("person={person} attributes={attributes}")
        }
        Call::Batch => {
            let ops = body
                .get("batch")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            format!("ops={ops}")
        }
        Call::Entity => format!(
            "action={} name={} identifiers={}",
            text(body, "action"),
            text(body, "name"),
            text(body, "identifiers")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn event_op() -> Value {
        json!({"type": "person", "identifiers": {"id": "user_3120"}, "action": "event",
               "name": "Exited Tour (Chameleon)", "id": "01JF2R0000ABCDEFGHJKMNPQRS",
               "timestamp": 1_735_725_660, "attributes": {"tour_id": "t1"}})
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"site:key"), "c2l0ZTprZXk=");
    }

    #[test]
    fn basic_auth_must_match_the_configured_pair() {
        let expected = expected_authorization("site", "key");
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, &expected));
        headers.insert(AUTHORIZATION, "basic c2l0ZTprZXk=".parse().unwrap());
        assert!(authorized(&headers, &expected));
        headers.insert(AUTHORIZATION, "Basic c2l0ZTpvdGhlcg==".parse().unwrap());
        assert!(!authorized(&headers, &expected));
        headers.insert(AUTHORIZATION, "Bearer c2l0ZTprZXk=".parse().unwrap());
        assert!(!authorized(&headers, &expected));
    }

    #[test]
    fn ulids_are_26_crockford_characters() {
        assert!(is_ulid("01JF2R0000ABCDEFGHJKMNPQRS"));
        assert!(is_ulid("01jf2r0000abcdefghjkmnpqrs"));
        assert!(
            !is_ulid("01JD4M9X2Q8W7E5R3T1Y6U0I9A"),
            "I and U are not Crockford"
        );
        assert!(!is_ulid("81JF2R0000ABCDEFGHJKMNPQRS"), "overflows 128 bits");
        assert!(!is_ulid("01JF2R0000ABCDEFGHJKMNPQR"));
        assert!(!is_ulid("6750a1b2c3d4e5f6a7b8cc00"));
    }

    #[test]
    fn a_good_event_operation_passes_and_each_flaw_is_named() {
        assert_eq!(check_operation(&object(event_op())), Ok(()));
        let flaws = [
            ("type", json!("object"), "type"),
            (
                "identifiers",
                json!({"id": "u1", "email": "a@example.org"}),
                "identifiers",
            ),
            ("identifiers", json!({}), "identifiers"),
            ("identifiers", json!({"id": 42}), "identifiers.id"),
            ("action", json!("track"), "action"),
            ("name", json!("x".repeat(101)), "name"),
            ("id", json!("user_3120"), "id"),
            ("timestamp", json!(1_735_725_660_000_u64), "timestamp"),
            ("timestamp", json!("2026-12-03T09:15:02Z"), "timestamp"),
            ("attributes", json!([1]), "attributes"),
        ];
        for (key, value, field) in flaws {
            let mut op = event_op();
            op[key] = value;
            let problem = check_operation(&object(op)).unwrap_err();
            assert_eq!(problem.field, field, "{key}: {problem:?}");
        }
    }

    #[test]
    fn identify_attributes_are_limited_but_event_data_only_in_total() {
        let long = "x".repeat(1001);
        let identify = json!({"type": "person", "identifiers": {"email": "a@example.org"},
                              "action": "identify", "attributes": {"bio": long}});
        let problem = check_operation(&object(identify)).unwrap_err();
        assert_eq!(
            (problem.reason, problem.field.as_str()),
            ("too_long", "attributes.bio")
        );

        let mut event = event_op();
        event["attributes"] = json!({"answer": long});
        assert_eq!(check_operation(&object(event)), Ok(()));
    }

    #[test]
    fn v1_events_need_a_name_and_keep_their_limits() {
        assert!(check_event(&object(json!({"name": "Started Tour (Chameleon)"}))).is_ok());
        assert!(check_event(&object(json!({"data": {}}))).is_err());
        let big = json!({"name": "n", "data": {"blob": "x".repeat(MAX_EVENT_DATA_BYTES)}});
        assert_eq!(check_event(&object(big)).unwrap_err().reason, "too_large");
        assert!(check_event(&object(json!({"name": "n", "type": "click"}))).is_err());
    }
}
