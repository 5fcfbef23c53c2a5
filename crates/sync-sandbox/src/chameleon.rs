//! The Chameleon stand-in: the observe-hook writes of API-NOTES §4.2, checked by the data rules
//! of DESIGN §5 and answered in Chameleon's shapes.
//!
//! Every call carries `X-Account-Secret` (else `403 {"code":403,"messages":[..]}`) and a JSON
//! object body with `Content-Type: application/json` (else `400`). The secret-in-the-path form
//! of the real API is not served, because the daemon must never put the secret in a URL.
//!
//! One example per request shape, with its answer:
//! ```text
//! POST /v3/observe/hooks/profiles
//! {"uid":"user_3120","email":"mira@example.org","plan":"pro"}
//! -> 200 {"profile":{"id":"6760aa010000000000000001"}}
//!
//! POST /v3/observe/hooks/profiles/batch
//! {"profiles":[{"uid":"u1","plan":"pro"},{"plan":"free"}],"on_model_missing":"create"}
//! -> 202 {"batch":{"id":".."},"errors":[{"code":422,"index":1,"message":"no uid or email .."}]}
//!
//! POST /v3/observe/hooks/companies
//! {"uid":"acme","seats":40}
//! -> 200 {"company":{"id":".."}}
//!
//! POST /v3/observe/hooks/companies/batch
//! {"companies":[{"uid":"acme"},{"uid":"globex","plan":"team"}]}
//! -> 202 {"batch":{"id":".."},"errors":[]}
//!
//! POST /v3/observe/hooks/events
//! {"uid":"user_3120","name":"Email Opened (Customer.io)","campaign_id":7}
//! -> 200 {"event":{"id":".."}}
//! ```
//!
//! The rules, strict on purpose so that a mapping bug fails a test instead of being quietly
//! repaired (cut, dropped, renamed) by the real API:
//! - identity: profiles need `uid` or `email` (single upserts also `id`), companies `uid` or
//!   `id`, events `name` and `uid` or `id`; an identity present must be a non-empty string;
//! - reserved names (DESIGN §5) are refused at the top level, except `id` where it is the
//!   identity key of the call;
//! - strings over [`MAX_STRING_BYTES`] are refused wherever they are (value, array item, value
//!   of a nested object);
//! - an object inside an object-valued property is refused (Chameleon keeps one level);
//! - batches over [`MAX_BATCH_BYTES`] answer `413` whole.
//!
//! A single upsert with a bad item answers `422 {"code":422,"messages":[..]}`; a batch answers
//! `202` naming each bad item by index and accepts the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};

use crate::reply::Reply;

/// Batches must be under 16 MB. Read as 16,000,000 bytes, the stricter of the two readings,
/// so that a client that passes here also passes upstream.
pub const MAX_BATCH_BYTES: usize = 16_000_000;

/// Chameleon keeps 768 bytes of each string; the sandbox refuses longer ones.
pub const MAX_STRING_BYTES: usize = 768;

/// Attribute names Chameleon reserves in identify calls (DESIGN §5): the list the worker's
/// mapping keeps to, so the sandbox and the mapping cannot drift apart.
pub use sync_core::inbound::RESERVED_NAMES;

const RATE_LIMITED: &str = "Rate Limited: Please refer to the API docs \
     https://developers.chameleon.io/concepts/rate-limiting for more information";

/// The Chameleon calls the sandbox serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Profile,
    ProfileBatch,
    Company,
    CompanyBatch,
    Event,
}

/// What a call writes, which decides its identity keys and its answer's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Model {
    Profile,
    Company,
    Event,
}

impl Model {
    fn key(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Company => "company",
            Self::Event => "event",
        }
    }
}

impl Call {
    fn model(self) -> Model {
        match self {
            Self::Profile | Self::ProfileBatch => Model::Profile,
            Self::Company | Self::CompanyBatch => Model::Company,
            Self::Event => Model::Event,
        }
    }

    /// The keys that name the person or company, in the order they are looked up.
    fn identity_keys(self) -> &'static [&'static str] {
        match self {
            Self::Profile => &["uid", "email", "id"],
            Self::ProfileBatch => &["uid", "email"],
            Self::Company | Self::CompanyBatch | Self::Event => &["uid", "id"],
        }
    }

    /// The key that holds the items of a batch call.
    fn batch_key(self) -> Option<&'static str> {
        match self {
            Self::ProfileBatch => Some("profiles"),
            Self::CompanyBatch => Some("companies"),
            Self::Profile | Self::Company | Self::Event => None,
        }
    }
}

/// The ids the stand-in hands out: 24 hex digits like Chameleon's, stable per identity so that
/// upserting the same uid twice answers the same id.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    next: AtomicU64,
    known: Mutex<HashMap<(Model, String), String>>,
}

impl Directory {
    fn new_id(&self) -> String {
        let serial = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let secs = sync_core::time::now_ms() / 1000;
        format!("{:08x}{serial:016x}", secs as u32)
    }

    fn id_of(&self, model: Model, identity: &str) -> String {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .entry((model, identity.to_owned()))
            .or_insert_with(|| self.new_id())
            .clone()
    }
}

/// True when the request carries the account secret in `X-Account-Secret`.
pub(crate) fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    headers
        .get("x-account-secret")
        .is_some_and(|value| value.as_bytes() == secret.as_bytes())
}

/// An error in Chameleon's shape: `{"code":<status>,"messages":[..]}`.
pub(crate) fn error(status: u16, message: impl Into<String>) -> Reply {
    Reply::json(
        status,
        json!({"code": status, "messages": [message.into()]}),
    )
}

pub(crate) fn forbidden() -> Reply {
    error(
        403,
        "Forbidden: the X-Account-Secret header is missing or not this account's secret",
    )
}

pub(crate) fn rate_limited(wait_secs: u64) -> Reply {
    Reply::json(
        429,
        json!({"code": 429, "messages": [RATE_LIMITED], "wait": wait_secs}),
    )
    .with_header("x-ratelimit-wait", wait_secs)
}

pub(crate) fn too_large() -> Reply {
    error(
        413,
        "Each batch must be less than 16mb, send it as several smaller batches",
    )
}

/// Checks a call and answers it as Chameleon would.
pub(crate) fn answer(call: Call, headers: &HeaderMap, body: &[u8], directory: &Directory) -> Reply {
    if call.batch_key().is_some() && body.len() > MAX_BATCH_BYTES {
        return too_large();
    }

    let object = match crate::request::json_object(headers, body) {
        Ok(object) => object,
        Err(message) => return error(400, message),
    };

    match call.batch_key() {
        None => answer_single(call, &object, directory),
        Some(key) => answer_batch(call, key, &object, directory),
    }
}

fn answer_single(call: Call, item: &Map<String, Value>, directory: &Directory) -> Reply {
    let model = call.model();
    match check_item(call, item) {
        Ok(identity) => {
            let id = match model {
                Model::Event => directory.new_id(),
                Model::Profile | Model::Company => directory.id_of(model, &identity),
            };
            Reply::json(200, json!({ model.key(): {"id": id} }))
        }
        Err(message) => error(422, message),
    }
}

fn answer_batch(call: Call, key: &str, body: &Map<String, Value>, directory: &Directory) -> Reply {
    let Some(items) = body.get(key).and_then(Value::as_array) else {
        return error(
            422,
            format!("{key} must be an array of {}s", call.model().key()),
        );
    };
    if let Some(mode) = body.get("on_model_missing")
        && !matches!(mode.as_str(), Some("create" | "ignore"))
    {
        return error(422, "on_model_missing must be \"create\" or \"ignore\"");
    }

    // Good items are written, bad ones reported by index: a partial success, like upstream.
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let checked = match item.as_object() {
            Some(item) => check_item(call, item),
            None => Err(format!("{} must be a JSON object", call.model().key())),
        };
        match checked {
            Ok(identity) => {
                directory.id_of(call.model(), &identity);
            }
            Err(message) => errors.push(json!({"code": 422, "index": index, "message": message})),
        }
    }
    Reply::json(
        202,
        json!({"batch": {"id": directory.new_id()}, "errors": errors}),
    )
}

/// Checks one profile, company or event, answering the identity that names it.
fn check_item(call: Call, item: &Map<String, Value>) -> Result<String, String> {
    let identity_keys = call.identity_keys();

    // Every identity present must be usable, not just the first: a numeric uid is a mapping bug.
    let mut identity = None;
    for key in identity_keys {
        match item.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(value)) if !value.is_empty() => {
                identity.get_or_insert_with(|| format!("{key}:{value}"));
            }
            Some(_) => return Err(format!("{key} must be a non-empty string")),
        }
    }
    let Some(identity) = identity else {
        return Err(format!(
            "no {} given: a {} needs one to be identified",
            identity_keys.join(" or "),
            call.model().key()
        ));
    };

    if call.model() == Model::Event {
        match item.get("name") {
            Some(Value::String(name)) if !name.is_empty() => {}
            _ => return Err("name is required and must be a non-empty string".to_owned()),
        }
    }

    for key in item.keys() {
        if RESERVED_NAMES.contains(&key.as_str()) && !identity_keys.contains(&key.as_str()) {
            return Err(format!("{key} is a reserved attribute name"));
        }
    }

    for (key, value) in item {
        check_value(key, value, 0)?;
    }
    Ok(identity)
}

/// Checks a property value at `depth` objects below the item (0: a top-level property).
fn check_value(path: &str, value: &Value, depth: usize) -> Result<(), String> {
    match value {
        Value::String(text) if text.len() > MAX_STRING_BYTES => Err(format!(
            "{path} is {} bytes, longer than the {MAX_STRING_BYTES} bytes Chameleon keeps",
            text.len()
        )),
        Value::Object(_) if depth >= 1 => Err(format!(
            "{path} is an object nested deeper than Chameleon keeps (one level)"
        )),
        Value::Object(fields) => fields
            .iter()
            .try_for_each(|(key, value)| check_value(&format!("{path}.{key}"), value, depth + 1)),
        // Chameleon drops objects inside arrays rather than refusing them, so only strings count.
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.is_string())
            .try_for_each(|(index, item)| check_value(&format!("{path}[{index}]"), item, depth)),
        _ => Ok(()),
    }
}

/// A short description of a call for the log: event name and uid, or batch size.
pub(crate) fn summary(call: Call, body: &Value) -> String {
    let text = |key: &str| {
        body.get(key)
            .map(Value::to_string)
            .unwrap_or_else(|| "-".into())
    };
    match call.batch_key() {
        Some(key) => {
            let items = body.get(key).and_then(Value::as_array).map_or(0, Vec::len);
            format!("items={items}")
        }
        None if call == Call::Event => format!("name={} uid={}", text("name"), text("uid")),
        None if body.get("uid").is_some() => format!("uid={}", text("uid")),
        None if body.get("email").is_some() => format!("email={}", text("email")),
        None => format!("id={}", text("id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers
    }

    fn send(call: Call, body: Value) -> Reply {
        answer(
            call,
            &json_headers(),
            body.to_string().as_bytes(),
            &Directory::default(),
        )
    }

    fn item(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn identities_follow_the_call() {
        assert!(check_item(Call::Profile, &item(json!({"email": "a@example.org"}))).is_ok());
        assert!(
            check_item(
                Call::Profile,
                &item(json!({"id": "6750a1b2c3d4e5f6a7b8cc00"}))
            )
            .is_ok()
        );
        assert!(check_item(Call::ProfileBatch, &item(json!({"id": "x"}))).is_err());
        assert!(check_item(Call::Company, &item(json!({"id": "x"}))).is_ok());
        assert!(check_item(Call::Company, &item(json!({"email": "a@example.org"}))).is_err());
        assert!(check_item(Call::Event, &item(json!({"uid": "u1"}))).is_err());
        assert!(check_item(Call::Event, &item(json!({"uid": "u1", "name": "Opened"}))).is_ok());
        let numeric = check_item(Call::Profile, &item(json!({"uid": 42}))).unwrap_err();
        assert!(
            numeric.contains("uid must be a non-empty string"),
            "{numeric}"
        );
    }

    #[test]
    fn reserved_names_are_refused_except_the_calls_own_id() {
        let refused = check_item(Call::Profile, &item(json!({"uid": "u1", "createdAt": 1})));
        assert_eq!(
            refused.unwrap_err(),
            "createdAt is a reserved attribute name"
        );
        assert!(check_item(Call::ProfileBatch, &item(json!({"uid": "u1", "id": "x"}))).is_err());
        assert!(
            check_item(
                Call::Profile,
                &item(json!({"uid": "u1", "cio_createdAt": 1}))
            )
            .is_ok()
        );
    }

    #[test]
    fn long_strings_and_deep_objects_are_refused_wherever_they_are() {
        let long = "é".repeat(385);
        let cases = [
            json!({"uid": "u1", "note": long}),
            json!({"uid": "u1", "tags": ["ok", long]}),
            json!({"uid": "u1", "address": {"street": long}}),
            json!({"uid": "u1", "a": {"b": {"c": 1}}}),
        ];
        for case in cases {
            assert!(
                check_item(Call::Profile, &item(case.clone())).is_err(),
                "{case}"
            );
        }
        let fine =
            json!({"uid": "u1", "note": "é".repeat(384), "a": {"b_c": 1, "list": [{"x": 1}]}});
        assert_eq!(
            check_item(Call::Profile, &item(fine)),
            Ok("uid:u1".to_owned())
        );
    }

    #[test]
    fn a_batch_reports_bad_items_by_index_and_accepts_the_rest() {
        let reply = send(
            Call::ProfileBatch,
            json!({"profiles": [{"uid": "u1"}, {"plan": "free"}, {"uid": "u3"}, 7]}),
        );
        assert_eq!(reply.status, 202);
        let indexes: Vec<u64> = reply.json_body()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|error| error["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, vec![1, 3]);
        assert_eq!(reply.json_body()["batch"]["id"].as_str().unwrap().len(), 24);
    }

    #[test]
    fn the_same_uid_keeps_its_id() {
        let directory = Directory::default();
        let first = directory.id_of(Model::Profile, "uid:u1");
        assert_eq!(directory.id_of(Model::Profile, "uid:u1"), first);
        assert_ne!(directory.id_of(Model::Company, "uid:u1"), first);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()) && first.len() == 24);
    }

    #[test]
    fn summaries_name_the_event_or_the_batch_size() {
        let event = json!({"name": "Email Opened (Customer.io)", "uid": "u1"});
        assert_eq!(
            summary(Call::Event, &event),
            "name=\"Email Opened (Customer.io)\" uid=\"u1\""
        );
        assert_eq!(
            summary(Call::CompanyBatch, &json!({"companies": [{}, {}]})),
            "items=2"
        );
    }
}
