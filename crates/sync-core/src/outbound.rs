//! Chameleon -> Customer.io mapping (the relay's rules, DESIGN §5): a queued Chameleon webhook,
//! or a ready-made tour event from another producer, becomes one Customer.io person event
//! ([`TrackEvent`]), or nothing for `ping` and topics the configuration filters out. Pure
//! functions over the raw bytes; the relay sends the result.
//!
//! Decisions this module makes where the design leaves room:
//! - Event names follow Chameleon's own Customer.io integration (`Started Tour (Chameleon)`);
//!   a name over Customer.io's 100 bytes is cut before its ` (Chameleon)` suffix, which stays.
//! - Attribute strings (at any depth) are cut to 1000 bytes on a character boundary. When the
//!   attributes still exceed Customer.io's 100,000 bytes of event data, the event is refused as
//!   [`OutboundError::Malformed`] rather than sent with attributes silently dropped: the dead
//!   letter keeps the whole body for whoever produced it. Only a `chameleon.event` can get there,
//!   since a webhook yields a few short attributes.
//! - `topics` and `exclude_topics` filter webhooks by their `kind`; an entry may be a topic, a
//!   prefix ending in `.*` (`tour.*`, matching `tour.started` and `tour.button.clicked`), or `*`.
//!   Tour events published on `chameleon.event` are not filtered: their producer chose to send
//!   them.
//! - The `chameleon.event` schema is documented in `docs/tour-event-schema.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::envelope::Source;
use crate::ids::id_text;
use crate::truncate::{prefix_within, truncate_strings};

/// Customer.io's limit on an event name, in bytes.
pub const MAX_NAME_BYTES: usize = 100;

/// Customer.io's limit on one attribute value, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 1000;

/// Customer.io's limit on an attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 150;

/// Customer.io's limit on an event's data (the `attributes` object as JSON), in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 100_000;

/// What every relayed event name ends with.
pub const NAME_SUFFIX: &str = " (Chameleon)";

/// Hashed in front of every source id, so these ULIDs cannot coincide with ids derived the same
/// way for another purpose.
const ULID_NAMESPACE: &[u8] = b"cio-chameleon-sync/customerio-event-id/";

/// The top-level fields of a `chameleon.event` body.
const TOUR_EVENT_FIELDS: [&str; 6] = ["id", "name", "uid", "email", "timestamp", "properties"];

/// A `chameleon.event` timestamp this large is unix milliseconds sent by mistake (it would be
/// past the year 5000 in seconds).
const MAX_TIMESTAMP_SECS: i64 = 100_000_000_000;

/// How the relay maps Chameleon events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundOptions {
    /// Use `data.profile.email` when `uid` is absent.
    pub allow_email_identity: bool,
    /// Topics relayed; empty = all (`ping` never). Entries: `tour.started`, `tour.*`, `*`.
    pub topics: Vec<String>,
    /// Topics never relayed, even when `topics` names them. Same entries as `topics`.
    pub exclude_topics: Vec<String>,
}

impl OutboundOptions {
    /// Whether a webhook of this `kind` is relayed.
    pub fn relays(&self, topic: &str) -> bool {
        let matches = |patterns: &[String]| patterns.iter().any(|p| topic_matches(p, topic));
        topic != "ping"
            && (self.topics.is_empty() || matches(&self.topics))
            && !matches(&self.exclude_topics)
    }
}

/// Who a Customer.io event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identifier {
    /// The person's Customer.io id (Chameleon's `uid`).
    Id(String),
    /// The person's email, when `allow_email_identity` is on and there is no uid.
    Email(String),
}

impl Identifier {
    /// The key under Customer.io's `identifiers`: `"id"` or `"email"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identifier::Id(_) => "id",
            Identifier::Email(_) => "email",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Identifier::Id(value) | Identifier::Email(value) => value,
        }
    }
}

/// One Customer.io person event, within Customer.io's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackEvent {
    pub identifier: Identifier,
    /// At most 100 bytes, ending in ` (Chameleon)`.
    pub name: String,
    /// ULID.
    pub id: String,
    /// Unix seconds.
    pub timestamp: i64,
    pub attributes: Map<String, Value>,
}

/// Why a Chameleon body cannot be mapped. Neither improves on retry: the caller dead-letters the
/// message with [`OutboundError::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("malformed chameleon payload: {0}")]
    Malformed(String),
    #[error("chameleon payload has no usable identity (no profile uid, and email not allowed)")]
    NoIdentity,
}

impl OutboundError {
    /// The dead-letter reason: `malformed` or `no_identity`.
    pub fn reason(&self) -> &'static str {
        match self {
            OutboundError::Malformed(_) => "malformed",
            OutboundError::NoIdentity => "no_identity",
        }
    }
}

/// Map a queued outbound body by its source. `Ok(None)` = `ping` or a filtered topic.
pub fn map(
    source: Source,
    body: &[u8],
    opts: &OutboundOptions,
) -> Result<Option<TrackEvent>, OutboundError> {
    match source {
        Source::ChameleonWebhook => map_webhook(body, opts),
        Source::ChameleonEvent => map_tour_event(body, opts),
        other => Err(OutboundError::Malformed(format!(
            "{other} is not a chameleon source"
        ))),
    }
}

/// Map one Chameleon outgoing webhook. `Ok(None)` = `ping` or a filtered topic.
pub fn map_webhook(
    body: &[u8],
    opts: &OutboundOptions,
) -> Result<Option<TrackEvent>, OutboundError> {
    let webhook = parse_object(body)?;
    let kind = match webhook.get("kind") {
        Some(Value::String(kind)) if !kind.trim().is_empty() => kind.as_str(),
        _ => return Err(malformed("`kind` is missing or not a non-empty string")),
    };
    if !opts.relays(kind) {
        return Ok(None);
    }

    let webhook_id = id_text(webhook.get("id"))
        .ok_or_else(|| malformed("`id` is missing or not a non-empty string"))?;
    let timestamp = match webhook.get("sent_at") {
        Some(Value::String(sent_at)) => rfc3339_secs(sent_at),
        _ => None,
    }
    .ok_or_else(|| malformed("`sent_at` is missing or not an RFC 3339 time"))?;
    let empty = Map::new();
    let data = match webhook.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(data)) => data,
        Some(_) => return Err(malformed("`data` is not an object")),
    };

    let profile = data.get("profile");
    let identifier = identify(
        profile.and_then(|p| p.get("uid")),
        profile.and_then(|p| p.get("email")),
        opts,
    )?;

    let attributes = webhook_attributes(&webhook_id, data);
    let name = fit_name(&webhook_event_name(kind));
    finish(
        identifier,
        name,
        event_ulid(&webhook_id),
        timestamp,
        attributes,
    )
    .map(Some)
}

/// Map one ready-made tour event published on `chameleon.event` (schema in
/// `docs/tour-event-schema.md`). Always `Some` on success; the `Option` matches
/// [`map_webhook`].
pub fn map_tour_event(
    body: &[u8],
    opts: &OutboundOptions,
) -> Result<Option<TrackEvent>, OutboundError> {
    let event = parse_object(body)?;
    if let Some(unknown) = event
        .keys()
        .find(|k| !TOUR_EVENT_FIELDS.contains(&k.as_str()))
    {
        return Err(OutboundError::Malformed(format!(
            "unknown field `{unknown}` (expected {})",
            TOUR_EVENT_FIELDS.join(", ")
        )));
    }

    let source_id = id_text(event.get("id"))
        .ok_or_else(|| malformed("`id` is missing or not a non-empty string"))?;
    let name = match event.get("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.as_str(),
        _ => return Err(malformed("`name` is missing or not a non-empty string")),
    };
    let timestamp = tour_event_secs(event.get("timestamp"))?;
    let attributes = match event.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(properties)) => properties.clone(),
        Some(_) => return Err(malformed("`properties` is not an object")),
    };

    let identifier = identify(event.get("uid"), event.get("email"), opts)?;
    let name = fit_name(name.strip_suffix(NAME_SUFFIX).unwrap_or(name));
    finish(
        identifier,
        name,
        event_ulid(&source_id),
        timestamp,
        attributes,
    )
    .map(Some)
}

/// Deterministic ULID from a source id: the first 128 bits of SHA-256 over a namespace and the
/// id. The same webhook delivered twice, or replayed, gets the same Customer.io event id, which
/// Customer.io then counts once. The ULID's time part is meaningless, which Customer.io allows.
pub fn event_ulid(source_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(ULID_NAMESPACE)
        .chain_update(source_id.as_bytes())
        .finalize();
    let mut high = [0u8; 16];
    high.copy_from_slice(&digest[..16]);
    ulid::Ulid::from(u128::from_be_bytes(high)).to_string()
}

/// The receiver's dedupe key and shape check: the webhook's `id`, when it also has a `kind`.
pub fn webhook_id(body: &Value) -> Option<String> {
    let webhook = body.as_object()?;
    let has_kind = webhook
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|kind| !kind.trim().is_empty());
    if !has_kind {
        return None;
    }
    id_text(webhook.get("id"))
}

/// `tour.started` -> `Started Tour`, `survey.button.clicked` -> `Clicked Survey Button`,
/// `response.finished` -> `Responded to Survey`; any other topic as written. No suffix yet.
fn webhook_event_name(kind: &str) -> String {
    let noun = |experience: &str| match experience {
        "tour" => Some("Tour"),
        "survey" => Some("Survey"),
        "embed" => Some("Embed"),
        _ => None,
    };
    let verb = |action: &str| match action {
        "started" => Some("Started"),
        "completed" => Some("Completed"),
        "exited" => Some("Exited"),
        "snoozed" => Some("Snoozed"),
        _ => None,
    };
    let parts: Vec<&str> = kind.split('.').collect();
    match parts.as_slice() {
        ["response", "finished"] => "Responded to Survey".to_owned(),
        [experience, "button", "clicked"] => match noun(experience) {
            Some(noun) => format!("Clicked {noun} Button"),
            None => kind.to_owned(),
        },
        [experience, action] => match (verb(action), noun(experience)) {
            (Some(verb), Some(noun)) => format!("{verb} {noun}"),
            _ => kind.to_owned(),
        },
        _ => kind.to_owned(),
    }
}

/// The attributes of a webhook event: the experience, step, trigger, button and response fields
/// that are present, plus the webhook id.
fn webhook_attributes(webhook_id: &str, data: &Map<String, Value>) -> Map<String, Value> {
    let mut attributes = Map::new();
    let field = |object: &str, key: &str| data.get(object).and_then(|o| o.get(key));

    for experience in ["tour", "survey", "embed"] {
        copy(
            &mut attributes,
            &format!("{experience}_id"),
            field(experience, "id"),
        );
        copy(
            &mut attributes,
            &format!("{experience}_name"),
            field(experience, "name"),
        );
    }
    copy(&mut attributes, "step_id", field("step", "id"));
    copy(&mut attributes, "via", field("action", "group_kind"));
    copy(&mut attributes, "via_id", field("action", "id"));
    for (from, to) in [
        ("id", "button_id"),
        ("text", "button_text"),
        ("tour_action", "button_action"),
        ("position", "button_position"),
    ] {
        copy(&mut attributes, to, field("button", from));
    }
    for (from, to) in [
        ("id", "response_id"),
        ("button_text", "response_button_text"),
        ("button_order", "response_button_order"),
        ("input_text", "response_input_text"),
        ("finished_at", "response_finished_at"),
    ] {
        copy(&mut attributes, to, field("response", from));
    }
    // A response names its survey even when the webhook carries no survey object.
    if !attributes.contains_key("survey_id") {
        copy(&mut attributes, "survey_id", field("response", "survey_id"));
    }
    copy(&mut attributes, "url", data.get("url"));
    attributes.insert(
        "chameleon_webhook_id".into(),
        Value::String(webhook_id.to_owned()),
    );
    attributes
}

/// Copy a scalar (string, number, boolean) under `key`; absent, `null` and structured values are
/// left out.
fn copy(attributes: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    if let Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) = value {
        attributes.insert(key.to_owned(), value.clone());
    }
}

/// Who the event is about: the uid, else the email when allowed.
fn identify(
    uid: Option<&Value>,
    email: Option<&Value>,
    opts: &OutboundOptions,
) -> Result<Identifier, OutboundError> {
    if let Some(uid) = id_text(uid) {
        return Ok(Identifier::Id(uid));
    }
    if opts.allow_email_identity
        && let Some(Value::String(email)) = email
        && !email.trim().is_empty()
    {
        return Ok(Identifier::Email(email.clone()));
    }
    Err(OutboundError::NoIdentity)
}

/// Bring the event within Customer.io's limits and assemble it.
fn finish(
    identifier: Identifier,
    name: String,
    id: String,
    timestamp: i64,
    mut attributes: Map<String, Value>,
) -> Result<TrackEvent, OutboundError> {
    if let Some(key) = attributes
        .keys()
        .find(|k| k.len() > MAX_ATTRIBUTE_NAME_BYTES)
    {
        return Err(OutboundError::Malformed(format!(
            "attribute name {:?}... is over customer.io's {MAX_ATTRIBUTE_NAME_BYTES} bytes",
            prefix_within(key, 40)
        )));
    }

    for value in attributes.values_mut() {
        truncate_strings(value, MAX_ATTRIBUTE_BYTES);
    }
    let size = serde_json::to_vec(&attributes)
        .map_err(|err| OutboundError::Malformed(format!("attributes do not serialise: {err}")))?
        .len();
    if size > MAX_ATTRIBUTES_BYTES {
        return Err(OutboundError::Malformed(format!(
            "attributes are {size} bytes, over customer.io's {MAX_ATTRIBUTES_BYTES}"
        )));
    }

    Ok(TrackEvent {
        identifier,
        name,
        id,
        timestamp,
        attributes,
    })
}

/// `base` with the suffix, cut before the suffix to fit Customer.io's name limit.
fn fit_name(base: &str) -> String {
    let room = MAX_NAME_BYTES - NAME_SUFFIX.len();
    format!("{}{NAME_SUFFIX}", prefix_within(base, room))
}

fn topic_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" || pattern == topic {
        return true;
    }
    pattern.strip_suffix(".*").is_some_and(|prefix| {
        topic
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// A `chameleon.event` time: unix seconds (a number) or an RFC 3339 string.
fn tour_event_secs(value: Option<&Value>) -> Result<i64, OutboundError> {
    let secs = match value {
        Some(Value::Number(number)) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|secs| secs.floor() as i64)),
        Some(Value::String(text)) => rfc3339_secs(text),
        _ => None,
    }
    .ok_or_else(|| malformed("`timestamp` is missing or neither unix seconds nor RFC 3339"))?;
    if !(0..MAX_TIMESTAMP_SECS).contains(&secs) {
        return Err(malformed(
            "`timestamp` is out of range (unix seconds expected, not milliseconds)",
        ));
    }
    Ok(secs)
}

/// Whole unix seconds of an RFC 3339 time, rounded down.
fn rfc3339_secs(text: &str) -> Option<i64> {
    crate::time::parse_rfc3339_ms(text).map(|ms| ms.div_euclid(1000))
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, OutboundError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(malformed("body is not a JSON object")),
        Err(err) => Err(OutboundError::Malformed(format!("body is not JSON: {err}"))),
    }
}

fn malformed(what: &str) -> OutboundError {
    OutboundError::Malformed(what.to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../../examples/payloads/chameleon/", $name))
        };
    }

    fn opts() -> OutboundOptions {
        OutboundOptions::default()
    }

    fn attributes(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("expected an object, got {other}"),
        }
    }

    fn webhook(body: Value, opts: &OutboundOptions) -> Result<Option<TrackEvent>, OutboundError> {
        map_webhook(body.to_string().as_bytes(), opts)
    }

    fn tour_event(body: Value) -> Result<Option<TrackEvent>, OutboundError> {
        map_tour_event(body.to_string().as_bytes(), &opts())
    }

    fn is_crockford_ulid(text: &str) -> bool {
        text.len() == 26
            && text
                .bytes()
                .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
            && text.parse::<ulid::Ulid>().is_ok()
    }

    #[test]
    fn tour_started_fixture() {
        let event = map_webhook(fixture!("tour-started.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            TrackEvent {
                identifier: Identifier::Id("user_7731".into()),
                name: "Started Tour (Chameleon)".into(),
                id: "2S0TPZTNZ636HW73QPD3E3QWPP".into(),
                timestamp: 1_796_212_805,
                attributes: attributes(json!({
                    "tour_id": "6750a1b2c3d4e5f6a7b8c9d4",
                    "tour_name": "Reports onboarding",
                    "step_id": "6750a1b2c3d4e5f6a7b8c9d6",
                    "via": "launcher",
                    "via_id": "6750a1b2c3d4e5f6a7b8c9d1",
                    "chameleon_webhook_id": "6750a1b2c3d4e5f6a7b8c9d0"
                })),
            }
        );
    }

    #[test]
    fn tour_completed_fixture() {
        let event = map_webhook(fixture!("tour-completed.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            TrackEvent {
                identifier: Identifier::Id("user_7731".into()),
                name: "Completed Tour (Chameleon)".into(),
                id: "62KEMVYE500JVF26JBAGW25H1R".into(),
                timestamp: 1_796_213_021,
                attributes: attributes(json!({
                    "tour_id": "6750a1b2c3d4e5f6a7b8c9d4",
                    "tour_name": "Reports onboarding",
                    "step_id": "6750a1b2c3d4e5f6a7b8c9e2",
                    "via": "launcher",
                    "via_id": "6750a1b2c3d4e5f6a7b8c9e1",
                    "chameleon_webhook_id": "6750a1b2c3d4e5f6a7b8c9e0"
                })),
            }
        );
    }

    #[test]
    fn tour_exited_fixture() {
        let event = map_webhook(fixture!("tour-exited.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            TrackEvent {
                identifier: Identifier::Id("user_1202".into()),
                name: "Exited Tour (Chameleon)".into(),
                id: "4XY2AHCRG4N844WENXHT6MM44Y".into(),
                // sent_at 12:01:10.500 rounds down.
                timestamp: 1_796_212_870,
                attributes: attributes(json!({
                    "tour_id": "6750a1b2c3d4e5f6a7b8c9d4",
                    "tour_name": "Reports onboarding",
                    "step_id": "6750a1b2c3d4e5f6a7b8c9d6",
                    "via": "api_js",
                    "via_id": "6750a1b2c3d4e5f6a7b8c9f1",
                    "chameleon_webhook_id": "6750a1b2c3d4e5f6a7b8c9f0"
                })),
            }
        );
    }

    #[test]
    fn tour_button_clicked_fixture() {
        let event = map_webhook(fixture!("tour-button-clicked.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            TrackEvent {
                identifier: Identifier::Id("user_7731".into()),
                name: "Clicked Tour Button (Chameleon)".into(),
                id: "4KKPM86S2S9A23QE880BF73C0K".into(),
                timestamp: 1_796_212_920,
                attributes: attributes(json!({
                    "tour_id": "6750a1b2c3d4e5f6a7b8c9d4",
                    "tour_name": "Reports onboarding",
                    "step_id": "6750a1b2c3d4e5f6a7b8c9d6",
                    "via_id": "6750a1b2c3d4e5f6a7b8ca01",
                    "button_id": "6750a1b2c3d4e5f6a7b8ca02",
                    "button_text": "Show me",
                    "button_action": "next",
                    "button_position": "bottom_right",
                    "chameleon_webhook_id": "6750a1b2c3d4e5f6a7b8ca00"
                })),
            }
        );
    }

    #[test]
    fn response_finished_fixture() {
        let event = map_webhook(fixture!("response-finished.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event,
            TrackEvent {
                identifier: Identifier::Id("user_7731".into()),
                name: "Responded to Survey (Chameleon)".into(),
                id: "51XNBA6E69H3T5CHWT96MEM98H".into(),
                timestamp: 1_796_217_300,
                attributes: attributes(json!({
                    "survey_id": "6750a1b2c3d4e5f6a7b8cb01",
                    "survey_name": "Reports satisfaction",
                    "response_id": "6750a1b2c3d4e5f6a7b8cb02",
                    "response_button_text": "9",
                    "response_button_order": 9,
                    "response_input_text": "Much faster than before",
                    "response_finished_at": "2026-12-02T13:14:58.000Z",
                    "chameleon_webhook_id": "6750a1b2c3d4e5f6a7b8cb00"
                })),
            }
        );
    }

    #[test]
    fn ping_is_never_relayed() {
        let everything = OutboundOptions {
            topics: vec!["*".into(), "ping".into()],
            ..opts()
        };
        for options in [opts(), everything] {
            assert_eq!(map_webhook(fixture!("ping.json"), &options), Ok(None));
            assert_eq!(
                map(Source::ChameleonWebhook, fixture!("ping.json"), &options),
                Ok(None)
            );
        }
    }

    #[test]
    fn map_dispatches_by_source() {
        let body = fixture!("tour-started.json");
        assert!(
            map(Source::ChameleonWebhook, body, &opts())
                .unwrap()
                .is_some()
        );
        // A webhook is not a tour event: its fields are not the schema's.
        assert_eq!(
            map(Source::ChameleonEvent, body, &opts())
                .unwrap_err()
                .reason(),
            "malformed"
        );
        assert_eq!(
            map(Source::CustomerioEvents, body, &opts())
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn topics_are_filtered() {
        let only_tours = OutboundOptions {
            topics: vec!["tour.*".into(), "response.finished".into()],
            exclude_topics: vec!["tour.button.clicked".into()],
            ..opts()
        };
        for (topic, relayed) in [
            ("tour.started", true),
            ("tour.exited", true),
            ("tour.button.clicked", false),
            ("response.finished", true),
            ("survey.started", false),
            ("tourist.started", false),
            ("tour", false),
        ] {
            assert_eq!(only_tours.relays(topic), relayed, "{topic}");
        }
        let no_surveys = OutboundOptions {
            exclude_topics: vec!["survey.*".into()],
            ..opts()
        };
        assert!(no_surveys.relays("alert.triggered"));
        assert!(!no_surveys.relays("survey.completed"));
        assert!(!no_surveys.relays("ping"));

        // A filtered topic is not mapped at all, so a missing profile does not matter.
        let helpbar = json!({"id": "h1", "kind": "helpbar.search",
            "sent_at": "2026-12-02T12:00:00Z", "data": {"profile": null}});
        assert_eq!(webhook(helpbar.clone(), &only_tours), Ok(None));
        assert_eq!(webhook(helpbar, &opts()), Err(OutboundError::NoIdentity));
    }

    #[test]
    fn names_follow_chameleons_integration() {
        for (kind, name) in [
            ("tour.started", "Started Tour (Chameleon)"),
            ("tour.completed", "Completed Tour (Chameleon)"),
            ("tour.exited", "Exited Tour (Chameleon)"),
            ("tour.snoozed", "Snoozed Tour (Chameleon)"),
            ("tour.button.clicked", "Clicked Tour Button (Chameleon)"),
            ("survey.started", "Started Survey (Chameleon)"),
            ("survey.snoozed", "Snoozed Survey (Chameleon)"),
            ("survey.button.clicked", "Clicked Survey Button (Chameleon)"),
            ("embed.completed", "Completed Embed (Chameleon)"),
            ("embed.button.clicked", "Clicked Embed Button (Chameleon)"),
            ("response.finished", "Responded to Survey (Chameleon)"),
            ("alert.triggered", "alert.triggered (Chameleon)"),
            ("demo.form.submitted", "demo.form.submitted (Chameleon)"),
            ("tour.previewed", "tour.previewed (Chameleon)"),
        ] {
            assert_eq!(fit_name(&webhook_event_name(kind)), name, "{kind}");
        }
    }

    #[test]
    fn survey_and_unknown_topics_carry_what_is_present() {
        let body = json!({
            "id": 4242, "kind": "survey.exited", "sent_at": "2026-12-02T12:00:00+01:00",
            "data": {
                "action": {"id": "a1", "group_kind": null},
                "profile": {"uid": 99},
                "survey": {"id": "s1", "name": "NPS", "steps": [{"id": "x"}]},
                "step": {"id": null},
                "url": "https://app.example.org/reports"
            }
        });
        let event = webhook(body, &opts()).unwrap().unwrap();
        assert_eq!(event.identifier, Identifier::Id("99".into()));
        assert_eq!(event.name, "Exited Survey (Chameleon)");
        assert_eq!(event.timestamp, 1_796_209_200);
        assert_eq!(event.id, event_ulid("4242"));
        assert_eq!(
            Value::Object(event.attributes),
            json!({
                "survey_id": "s1",
                "survey_name": "NPS",
                "via_id": "a1",
                "url": "https://app.example.org/reports",
                "chameleon_webhook_id": "4242"
            })
        );
        let alert = json!({"id": "w9", "kind": "alert.triggered", "sent_at": "2026-12-02T12:00:00Z",
            "data": {"profile": {"uid": "u"}, "alert_group": {"id": "g"}}});
        let event = webhook(alert, &opts()).unwrap().unwrap();
        assert_eq!(event.name, "alert.triggered (Chameleon)");
        assert_eq!(
            Value::Object(event.attributes),
            json!({"chameleon_webhook_id": "w9"})
        );
    }

    #[test]
    fn email_identity_only_when_allowed() {
        let body = json!({"id": "w1", "kind": "tour.started", "sent_at": "2026-12-02T12:00:00Z",
            "data": {"profile": {"id": "p1", "email": "ada@example.org"}}});
        assert_eq!(
            webhook(body.clone(), &opts()),
            Err(OutboundError::NoIdentity)
        );
        assert_eq!(OutboundError::NoIdentity.reason(), "no_identity");
        let allow = OutboundOptions {
            allow_email_identity: true,
            ..opts()
        };
        let event = webhook(body, &allow).unwrap().unwrap();
        assert_eq!(
            event.identifier,
            Identifier::Email("ada@example.org".into())
        );
        assert_eq!(
            (event.identifier.kind(), event.identifier.value()),
            ("email", "ada@example.org")
        );

        // The uid wins when both are there; blanks and nulls are no identity.
        let both = map_webhook(fixture!("tour-started.json"), &allow)
            .unwrap()
            .unwrap();
        assert_eq!(
            (both.identifier.kind(), both.identifier.value()),
            ("id", "user_7731")
        );
        for profile in [
            json!({"uid": "", "email": " "}),
            json!({"uid": null}),
            json!(null),
        ] {
            let body = json!({"id": "w1", "kind": "tour.started",
                "sent_at": "2026-12-02T12:00:00Z", "data": {"profile": profile}});
            assert_eq!(webhook(body, &allow), Err(OutboundError::NoIdentity));
        }
    }

    #[test]
    fn malformed_webhooks_are_refused() {
        for body in [
            json!([]),
            json!({"id": "w", "sent_at": "2026-12-02T12:00:00Z", "data": {}}),
            json!({"kind": "tour.started", "sent_at": "2026-12-02T12:00:00Z", "data": {}}),
            json!({"id": "w", "kind": "tour.started", "data": {}}),
            json!({"id": "w", "kind": "tour.started", "sent_at": "noon", "data": {}}),
            json!({"id": "w", "kind": "tour.started", "sent_at": "2026-12-02T12:00:00Z",
                "data": 1}),
        ] {
            let err = webhook(body.clone(), &opts()).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{body}");
        }
        assert_eq!(
            map_webhook(b"{", &opts()).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn same_webhook_id_gives_the_same_ulid() {
        let first = map_webhook(fixture!("tour-exited.json"), &opts())
            .unwrap()
            .unwrap();
        let again = map_webhook(fixture!("tour-exited.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(first.id, again.id);
        assert!(is_crockford_ulid(&first.id), "{}", first.id);
        assert_eq!(event_ulid("6750a1b2c3d4e5f6a7b8c9f0"), first.id);
        assert_ne!(event_ulid("6750a1b2c3d4e5f6a7b8c9f1"), first.id);
        for id in ["", "x", "step-seen-42", "🦀"] {
            assert!(is_crockford_ulid(&event_ulid(id)), "{id:?}");
        }
    }

    #[test]
    fn webhook_id_needs_an_id_and_a_kind() {
        assert_eq!(
            webhook_id(&json!({"id": "abc", "kind": "ping"})),
            Some("abc".into())
        );
        assert_eq!(
            webhook_id(&json!({"id": 12, "kind": "ping"})),
            Some("12".into())
        );
        assert_eq!(webhook_id(&json!({"id": "abc"})), None);
        assert_eq!(webhook_id(&json!({"id": "abc", "kind": ""})), None);
        assert_eq!(webhook_id(&json!({"id": "", "kind": "ping"})), None);
        assert_eq!(webhook_id(&json!({"id": null, "kind": "ping"})), None);
        assert_eq!(webhook_id(&json!("abc")), None);
    }

    #[test]
    fn tour_event_maps_with_the_suffix() {
        let body = json!({
            "id": "step-seen-42",
            "name": "Step Seen",
            "uid": "user_7731",
            "timestamp": 1733140805,
            "properties": {"tour_id": "t1", "step_number": 3, "tags": ["a", "b"]}
        });
        assert_eq!(
            tour_event(body).unwrap().unwrap(),
            TrackEvent {
                identifier: Identifier::Id("user_7731".into()),
                name: "Step Seen (Chameleon)".into(),
                id: "75G1SB3RNTMV3E7MTNXJRM8C0F".into(),
                timestamp: 1_733_140_805,
                attributes: attributes(
                    json!({"tour_id": "t1", "step_number": 3, "tags": ["a", "b"]})
                ),
            }
        );
        let suffixed = json!({"id": "e2", "name": "Step Seen (Chameleon)", "uid": 7,
            "timestamp": "2024-12-02T12:00:05.999Z"});
        let event = tour_event(suffixed).unwrap().unwrap();
        assert_eq!(event.name, "Step Seen (Chameleon)");
        assert_eq!(event.identifier, Identifier::Id("7".into()));
        assert_eq!(event.timestamp, 1_733_140_805);
        assert!(event.attributes.is_empty());
        assert_eq!(event.id, event_ulid("e2"));
    }

    #[test]
    fn the_documented_example_holds() {
        let doc = include_str!("../../../docs/tour-event-schema.md");
        let blocks: Vec<Value> = doc
            .split("```json")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .map(|block| serde_json::from_str(block).unwrap())
            .collect();
        let [published, delivered] = blocks.as_slice() else {
            panic!("expected two JSON examples, found {}", blocks.len());
        };
        let event = tour_event(published.clone()).unwrap().unwrap();
        assert_eq!(
            &json!({
                "type": "person",
                "identifiers": {event.identifier.kind(): event.identifier.value()},
                "action": "event",
                "name": event.name,
                "id": event.id,
                "timestamp": event.timestamp,
                "attributes": event.attributes,
            }),
            delivered
        );
    }

    #[test]
    fn tour_event_identity_follows_the_webhook_rule() {
        let body = json!({"id": "e", "name": "N", "email": "a@example.org", "timestamp": 1});
        assert_eq!(tour_event(body.clone()), Err(OutboundError::NoIdentity));
        let allow = OutboundOptions {
            allow_email_identity: true,
            ..opts()
        };
        let event = map_tour_event(body.to_string().as_bytes(), &allow)
            .unwrap()
            .unwrap();
        assert_eq!(event.identifier, Identifier::Email("a@example.org".into()));
    }

    #[test]
    fn malformed_tour_events_are_refused() {
        let base = json!({"id": "e", "name": "N", "uid": "u", "timestamp": 1733140805});
        let with = |key: &str, value: Value| {
            let mut body = base.clone();
            body[key] = value;
            body
        };
        let without = |key: &str| {
            let mut body = base.clone();
            body.as_object_mut().unwrap().remove(key);
            body
        };
        assert!(tour_event(base.clone()).is_ok());
        for body in [
            without("id"),
            without("name"),
            without("timestamp"),
            with("id", json!("")),
            with("name", json!(" ")),
            with("timestamp", json!("yesterday")),
            with("timestamp", json!(1_733_140_805_000_i64)),
            with("timestamp", json!(-5)),
            with("properties", json!([1])),
            with("props", json!({})),
        ] {
            assert_eq!(
                tour_event(body.clone()).unwrap_err().reason(),
                "malformed",
                "{body}"
            );
        }
    }

    #[test]
    fn long_names_are_cut_before_the_suffix() {
        let long = "é".repeat(60);
        let body = json!({"id": "e", "name": long, "uid": "u", "timestamp": 1});
        let event = tour_event(body).unwrap().unwrap();
        assert!(event.name.len() <= MAX_NAME_BYTES);
        // 88 bytes of room: 44 two-byte characters.
        assert_eq!(event.name, format!("{}{NAME_SUFFIX}", "é".repeat(44)));
        let topic = format!("custom.{}", "x".repeat(120));
        let name = fit_name(&webhook_event_name(&topic));
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(name.ends_with(NAME_SUFFIX));
    }

    #[test]
    fn attribute_values_are_cut_to_the_limit() {
        // 999 ASCII bytes then a two-byte "é" straddling the 1000-byte limit.
        let straddling = format!("{}é", "a".repeat(999));
        let body = json!({"id": "e", "name": "N", "uid": "u", "timestamp": 1,
            "properties": {"note": straddling, "nested": {"list": [straddling]}, "ok": "short"}});
        let event = tour_event(body).unwrap().unwrap();
        assert_eq!(
            Value::Object(event.attributes),
            json!({"note": "a".repeat(999), "nested": {"list": ["a".repeat(999)]}, "ok": "short"})
        );
    }

    #[test]
    fn oversized_attributes_are_refused() {
        // 120 attributes of 1000 bytes each are within every per-value limit but over 100 KB.
        let properties: Map<String, Value> = (0..120)
            .map(|i| (format!("field_{i}"), Value::String("v".repeat(1000))))
            .collect();
        let body = json!({"id": "e", "name": "N", "uid": "u", "timestamp": 1,
            "properties": properties});
        let err = tour_event(body).unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(
            err.to_string().contains("over customer.io's 100000"),
            "{err}"
        );

        let long_key = json!({"id": "e", "name": "N", "uid": "u", "timestamp": 1,
            "properties": {"k".repeat(151): 1}});
        assert_eq!(tour_event(long_key).unwrap_err().reason(), "malformed");
    }
}
