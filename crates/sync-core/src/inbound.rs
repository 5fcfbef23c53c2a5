//! Customer.io -> Chameleon mapping (the worker's rules, DESIGN §5): a queued Customer.io body
//! becomes one Chameleon call (profile upsert, company upsert or event), or nothing when the
//! configuration filters it out. Pure functions over the raw bytes; the worker sends the result.
//!
//! Two kinds of body arrive:
//! - *reporting* events (message activity) become Chameleon events named
//!   `"{Object} {Metric} (Customer.io)"` carrying the event's scalar fields as properties;
//! - *workflow* bodies, written by the Customer.io user in Chameleon's own terms, become profile,
//!   company or event calls whose properties are normalised to what Chameleon keeps
//!   ([`normalise_properties`]).
//!
//! Decisions this module makes where the design leaves room:
//! - A push event's `recipients` array is not forwarded, but the distinct `device_platform`s in
//!   it are, as one comma-separated `device_platform` property (`"ios"`, `"android,ios"`).
//! - `null` fields of a reporting event are left out: they carry no value, and Chameleon would
//!   store them as empty.
//! - The fields this mapping adds to a reporting event (`uid`, `name`, `cio_event_id`,
//!   `occurred_at`) replace any `data` field of the same name.
//! - A workflow profile's `company` object links the profile: its `uid` becomes `company_uid`
//!   unless the body gives `company_uid` itself. The object is then an ordinary property under
//!   the reserved-name rule (`company` is reserved), so by default it is also kept whole as
//!   `cio_company`, and with [`ReservedNames::Reject`] the body is rejected.
//! - Identity fields (`uid`, `email`, `company_uid`, an event's `name`) are taken out before
//!   normalising and sent as written: they are neither renamed nor truncated.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::envelope::Source;
use crate::ids::id_text as identity;
use crate::truncate::truncate_string;

/// Chameleon keeps this many bytes of a string value and cuts the rest.
pub const MAX_VALUE_BYTES: usize = 768;

/// What a reserved property name is prefixed with under [`ReservedNames::Rename`].
pub const RESERVED_PREFIX: &str = "cio_";

/// Attribute names Chameleon reserves for itself (DESIGN §5, API-NOTES §4.3).
pub const RESERVED_NAMES: [&str; 24] = [
    "id",
    "user_id",
    "userId",
    "account_id",
    "accountId",
    "profile_id",
    "profileId",
    "company_id",
    "companyId",
    "company",
    "created_at",
    "createdAt",
    "updated_at",
    "updatedAt",
    "options",
    "at",
    "last_seen_at",
    "last_request_at",
    "now",
    "integration",
    "disabled",
    "chameleon_admin",
    "chameleon_tag_ids",
    "percent",
];

/// Fields of a reporting event's `data` that are never forwarded: the person's identifiers and
/// message bodies.
const REPORTING_SKIPPED: [&str; 6] = [
    "identifiers",
    "customer_id",
    "email_address",
    "recipient",
    "content",
    "headers",
];

/// What happens to a workflow property whose name Chameleon reserves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservedNames {
    /// Send it as `cio_<name>`.
    #[default]
    Rename,
    /// Refuse the whole body with [`InboundError::ReservedName`].
    Reject,
}

/// How the worker maps Customer.io payloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundOptions {
    /// What happens to reserved property names in workflow bodies.
    pub reserved_names: ReservedNames,
    /// Which reporting metrics are forwarded: patterns "object_type.metric" with `*` for either
    /// side ("email.opened", "email.*", "*.clicked"); empty = all.
    pub forward_metrics: Vec<String>,
}

/// A `forward_metrics` entry that is not of the form `object_type.metric`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("forward_metrics pattern {0:?} is not \"object_type.metric\" (`*` for either side)")]
pub struct BadMetricPattern(pub String);

impl InboundOptions {
    /// Check the `forward_metrics` patterns; call it when loading the configuration, since a
    /// pattern that can never match would silently filter everything it was meant to keep.
    pub fn validate(&self) -> Result<(), BadMetricPattern> {
        for pattern in &self.forward_metrics {
            let valid = pattern.split_once('.').is_some_and(|(object, metric)| {
                !object.is_empty() && !metric.is_empty() && !metric.contains('.')
            });
            if !valid {
                return Err(BadMetricPattern(pattern.clone()));
            }
        }
        Ok(())
    }

    /// Whether a reporting event of this object type and metric is forwarded. Names compare
    /// without regard to ASCII case.
    pub fn forwards(&self, object_type: &str, metric: &str) -> bool {
        let side_matches =
            |pattern: &str, value: &str| pattern == "*" || pattern.eq_ignore_ascii_case(value);
        self.forward_metrics.is_empty()
            || self.forward_metrics.iter().any(|pattern| {
                pattern.split_once('.').is_some_and(|(object, name)| {
                    side_matches(object, object_type) && side_matches(name, metric)
                })
            })
    }
}

/// One call to Chameleon's write API; each holds the request body (DESIGN §5).
#[derive(Clone, Debug, PartialEq)]
pub enum ChameleonCall {
    /// `POST /v3/observe/hooks/profiles`: `uid` and/or `email`, `company_uid`, properties.
    Profile(Map<String, Value>),
    /// `POST /v3/observe/hooks/companies`: `uid`, properties.
    Company(Map<String, Value>),
    /// `POST /v3/observe/hooks/events`: `uid`, `name`, properties.
    Event(Map<String, Value>),
}

impl ChameleonCall {
    /// The Chameleon `uid`; absent only for a profile identified by email.
    pub fn uid(&self) -> Option<&str> {
        self.body().get("uid").and_then(Value::as_str)
    }

    /// `"profile"`, `"company"` or `"event"`, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ChameleonCall::Profile(_) => "profile",
            ChameleonCall::Company(_) => "company",
            ChameleonCall::Event(_) => "event",
        }
    }

    /// The request body.
    pub fn body(&self) -> &Map<String, Value> {
        match self {
            ChameleonCall::Profile(body)
            | ChameleonCall::Company(body)
            | ChameleonCall::Event(body) => body,
        }
    }

    pub fn into_body(self) -> Map<String, Value> {
        match self {
            ChameleonCall::Profile(body)
            | ChameleonCall::Company(body)
            | ChameleonCall::Event(body) => body,
        }
    }
}

/// A mapped message and what normalising changed, for logs and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    pub call: ChameleonCall,
    /// String values cut to 768 bytes.
    pub truncated: usize,
    /// Reserved keys renamed.
    pub renamed: usize,
}

/// Why a Customer.io body cannot be mapped. None of these improves on retry: the caller
/// dead-letters the message with [`InboundError::reason`], and an operator fixes the sender (or
/// this mapping) and replays it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("malformed customer.io payload: {0}")]
    Malformed(String),
    #[error("customer.io payload has no usable identity (uid, or email for a profile)")]
    NoIdentity,
    #[error("property {0:?} is a name chameleon reserves, and reserved names are rejected")]
    ReservedName(String),
}

impl InboundError {
    /// The dead-letter reason: `malformed`, `no_identity` or `reserved_name`.
    pub fn reason(&self) -> &'static str {
        match self {
            InboundError::Malformed(_) => "malformed",
            InboundError::NoIdentity => "no_identity",
            InboundError::ReservedName(_) => "reserved_name",
        }
    }
}

/// Map a queued inbound body by its source. `Ok(None)` = filtered out by `forward_metrics`.
pub fn map(
    source: Source,
    body: &[u8],
    opts: &InboundOptions,
) -> Result<Option<Mapped>, InboundError> {
    match source {
        Source::CustomerioReporting => map_reporting(body, opts),
        Source::CustomerioProfiles | Source::CustomerioCompanies | Source::CustomerioEvents => {
            map_workflow(source, body, opts).map(Some)
        }
        Source::ChameleonWebhook | Source::ChameleonEvent => Err(InboundError::Malformed(format!(
            "{source} is not a customer.io source"
        ))),
    }
}

/// Map one reporting event to a Chameleon event. `Ok(None)` = filtered out by
/// `forward_metrics`.
pub fn map_reporting(body: &[u8], opts: &InboundOptions) -> Result<Option<Mapped>, InboundError> {
    let event = parse_object(body)?;
    let object_type = required_str(&event, "object_type")?;
    let metric = required_str(&event, "metric")?;
    if !opts.forwards(object_type, metric) {
        return Ok(None);
    }

    let empty = Map::new();
    let data = match event.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(data)) => data,
        Some(_) => return Err(malformed("data is not an object")),
    };
    let uid = data
        .get("identifiers")
        .and_then(|ids| identity(ids.get("id")))
        .or_else(|| identity(data.get("customer_id")))
        .ok_or(InboundError::NoIdentity)?;

    let mut props: Map<String, Value> = data
        .iter()
        .filter(|(key, value)| !REPORTING_SKIPPED.contains(&key.as_str()) && is_scalar(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(platforms) = device_platforms(data) {
        props
            .entry("device_platform")
            .or_insert(Value::String(platforms));
    }
    if let Some(event_id) = event_id_of(&event) {
        props.insert("cio_event_id".into(), Value::String(event_id));
    }
    if let Some(occurred_at) = event
        .get("timestamp")
        .and_then(unix_secs)
        .and_then(crate::time::format_secs)
    {
        props.insert("occurred_at".into(), Value::String(occurred_at));
    }

    // The provider's field names are not the user's to fix, so a reserved one is always renamed.
    let rename = InboundOptions {
        reserved_names: ReservedNames::Rename,
        forward_metrics: Vec::new(),
    };
    let (mut body, truncated, renamed) = normalise_properties(props, &rename)?;
    let name = format!(
        "{} {} (Customer.io)",
        title_case(object_type),
        title_case(metric)
    );
    body.insert("uid".into(), Value::String(uid));
    body.insert("name".into(), Value::String(name));
    Ok(Some(Mapped {
        call: ChameleonCall::Event(body),
        truncated,
        renamed,
    }))
}

/// Map a workflow body (profiles, companies or events route) to its Chameleon call.
pub fn map_workflow(
    source: Source,
    body: &[u8],
    opts: &InboundOptions,
) -> Result<Mapped, InboundError> {
    let mut fields = parse_object(body)?;
    match source {
        Source::CustomerioProfiles => {
            let uid = take_identity(&mut fields, "uid")?;
            let email = take_string(&mut fields, "email")?;
            let company_uid = match take_identity(&mut fields, "company_uid")? {
                Some(company_uid) => Some(company_uid),
                None => fields
                    .get("company")
                    .and_then(|company| identity(company.get("uid"))),
            };
            if uid.is_none() && email.is_none() {
                return Err(InboundError::NoIdentity);
            }
            let identity = [("uid", uid), ("email", email), ("company_uid", company_uid)];
            finish(fields, identity, opts, ChameleonCall::Profile)
        }
        Source::CustomerioCompanies => {
            let uid = take_identity(&mut fields, "uid")?.ok_or(InboundError::NoIdentity)?;
            finish(fields, [("uid", Some(uid))], opts, ChameleonCall::Company)
        }
        Source::CustomerioEvents => {
            let uid = take_identity(&mut fields, "uid")?.ok_or(InboundError::NoIdentity)?;
            let name = take_string(&mut fields, "name")?
                .ok_or_else(|| malformed("an event needs a non-empty string `name`"))?;
            let identity = [("uid", Some(uid)), ("name", Some(name))];
            finish(fields, identity, opts, ChameleonCall::Event)
        }
        other => Err(InboundError::Malformed(format!(
            "{other} is not a workflow route"
        ))),
    }
}

/// The receiver's dedupe key: reporting `event_id` (string or number, as a string).
pub fn reporting_event_id(body: &Value) -> Option<String> {
    body.as_object().and_then(event_id_of)
}

/// Bring workflow properties within what Chameleon keeps, returning them with the number of
/// strings truncated and of reserved names renamed:
/// - a top-level key Chameleon reserves becomes `cio_<key>` (or the body is refused, by
///   `opts.reserved_names`);
/// - an object may hold scalars and arrays, not objects: deeper levels are flattened into
///   `parent_child` keys, so `{"a":{"b":{"c":1}}}` becomes `{"a":{"b_c":1}}`; an object inside an
///   array is flattened to a single level the same way;
/// - a string value (also inside arrays and objects) over 768 bytes is cut on a character
///   boundary;
/// - everything else keeps its JSON type and value.
///
/// Applying it to its own output changes nothing.
pub fn normalise_properties(
    props: Map<String, Value>,
    opts: &InboundOptions,
) -> Result<(Map<String, Value>, usize, usize), InboundError> {
    let mut truncated = 0;
    let mut renamed = 0;
    let mut written = Map::new();
    let mut renamed_props = Vec::new();

    for (key, value) in props {
        let value = normalise_value(value, &mut truncated);
        if !RESERVED_NAMES.contains(&key.as_str()) {
            written.insert(key, value);
            continue;
        }
        match opts.reserved_names {
            ReservedNames::Reject => return Err(InboundError::ReservedName(key)),
            ReservedNames::Rename => {
                renamed += 1;
                renamed_props.push((format!("{RESERVED_PREFIX}{key}"), value));
            }
        }
    }

    // Renamed keys go in last so the outcome does not depend on the order keys arrived in.
    // Limitation: when a body has both `at` and `cio_at`, the value written as `cio_at` is kept
    // and the renamed `at` is dropped.
    for (key, value) in renamed_props {
        written.entry(key).or_insert(value);
    }
    Ok((written, truncated, renamed))
}

/// Add the identity fields that are present to the normalised properties and wrap the call.
fn finish<const N: usize>(
    fields: Map<String, Value>,
    identity: [(&str, Option<String>); N],
    opts: &InboundOptions,
    call: fn(Map<String, Value>) -> ChameleonCall,
) -> Result<Mapped, InboundError> {
    let (mut body, truncated, renamed) = normalise_properties(fields, opts)?;
    for (key, value) in identity {
        if let Some(value) = value {
            body.insert(key.to_owned(), Value::String(value));
        }
    }
    Ok(Mapped {
        call: call(body),
        truncated,
        renamed,
    })
}

/// A property value: an object keeps one level and whatever is below it is flattened into it
/// (also for an object inside an array), strings are cut, arrays are normalised item by item.
fn normalise_value(value: Value, truncated: &mut usize) -> Value {
    match value {
        Value::Object(object) => {
            let mut flat = Map::new();
            flatten_into(&mut flat, None, object, truncated);
            Value::Object(flat)
        }
        Value::String(mut text) => {
            if truncate_string(&mut text, MAX_VALUE_BYTES) {
                *truncated += 1;
            }
            Value::String(text)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| normalise_value(item, truncated))
                .collect(),
        ),
        other => other,
    }
}

/// Write `object`'s entries into `flat`, nested objects as `prefix_key` entries. Entries written
/// directly at a level go in before flattened ones, so a key the sender wrote wins a collision
/// with a flattened key of the same name.
fn flatten_into(
    flat: &mut Map<String, Value>,
    prefix: Option<&str>,
    object: Map<String, Value>,
    truncated: &mut usize,
) {
    let joined = |key: &str| match prefix {
        Some(prefix) => format!("{prefix}_{key}"),
        None => key.to_owned(),
    };
    let mut nested = Vec::new();
    for (key, value) in object {
        match value {
            Value::Object(inner) => nested.push((joined(&key), inner)),
            other => {
                let value = normalise_value(other, truncated);
                flat.entry(joined(&key)).or_insert(value);
            }
        }
    }
    // Limitation: when two nested objects flatten to the same key (`{"a":{"b_c":{..}}}` beside
    // `{"a":{"b":{"c":{..}}}}`), the first one in the body is kept and the other dropped.
    for (key, inner) in nested {
        flatten_into(flat, Some(&key), inner, truncated);
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, InboundError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(malformed("body is not a JSON object")),
        Err(err) => Err(InboundError::Malformed(format!("body is not JSON: {err}"))),
    }
}

fn required_str<'a>(event: &'a Map<String, Value>, key: &str) -> Result<&'a str, InboundError> {
    match event.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        _ => Err(InboundError::Malformed(format!(
            "`{key}` is missing or not a non-empty string"
        ))),
    }
}

/// Remove an id field from a workflow body: absent, `null` or blank is `None`; a type that
/// cannot be an id is malformed rather than silently ignored.
fn take_identity(
    fields: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<String>, InboundError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) if crate::ids::is_inexact_number(&value) => Err(InboundError::Malformed(
            format!("`{key}` is a number that JSON cannot carry exactly; send it as a string"),
        )),
        Some(value @ (Value::String(_) | Value::Number(_))) => Ok(identity(Some(&value))),
        Some(_) => Err(InboundError::Malformed(format!(
            "`{key}` must be a string or a number"
        ))),
    }
}

/// Remove a string field from a workflow body: absent, `null` or blank is `None`.
fn take_string(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, InboundError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text).filter(|text| !text.trim().is_empty())),
        Some(_) => Err(InboundError::Malformed(format!("`{key}` must be a string"))),
    }
}

fn event_id_of(event: &Map<String, Value>) -> Option<String> {
    identity(event.get("event_id"))
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// Whole unix seconds from a number or a string of digits.
fn unix_secs(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().map(|secs| secs.floor() as i64)),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// The distinct `device_platform`s of a push event's recipients, in order of appearance.
fn device_platforms(data: &Map<String, Value>) -> Option<String> {
    let mut platforms: Vec<&str> = Vec::new();
    for recipient in data.get("recipients")?.as_array()? {
        if let Some(platform) = recipient.get("device_platform").and_then(Value::as_str)
            && !platform.is_empty()
            && !platforms.contains(&platform)
        {
            platforms.push(platform);
        }
    }
    (!platforms.is_empty()).then(|| platforms.join(","))
}

/// `in_app` -> `In App`: underscores as spaces, each word capitalised.
fn title_case(name: &str) -> String {
    name.split(|c: char| c == '_' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn malformed(what: &str) -> InboundError {
    InboundError::Malformed(what.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../../examples/payloads/customerio/", $name))
        };
    }

    fn opts() -> InboundOptions {
        InboundOptions::default()
    }

    fn event(mapped: Mapped) -> Value {
        match mapped.call {
            ChameleonCall::Event(body) => Value::Object(body),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    fn reporting(body: Value) -> Result<Option<Mapped>, InboundError> {
        map_reporting(body.to_string().as_bytes(), &opts())
    }

    fn workflow(source: Source, body: Value) -> Result<Mapped, InboundError> {
        map_workflow(source, body.to_string().as_bytes(), &opts())
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("expected an object, got {other}"),
        }
    }

    #[test]
    fn reporting_email_opened_fixture() {
        let mapped = map_reporting(fixture!("reporting-email-opened.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!((mapped.truncated, mapped.renamed), (0, 0));
        assert_eq!(mapped.call.kind(), "event");
        assert_eq!(mapped.call.uid(), Some("user_7731"));
        assert_eq!(
            event(mapped),
            json!({
                "uid": "user_7731",
                "name": "Email Opened (Customer.io)",
                "campaign_id": 118,
                "action_id": 502,
                "journey_id": "01JD4KZP0B8C7D6E5F4G3H2J1K",
                "delivery_id": "dgSmAQUAAAGTa1b2c3d4e5f6a7b8",
                "subject": "Three things to try this week",
                "proxied": false,
                "prefetched": false,
                "cio_event_id": "01JD4M9X2Q8W7E5R3T1Y6U0I9A",
                "occurred_at": "2024-12-02T12:00:00Z"
            })
        );
    }

    #[test]
    fn reporting_email_clicked_fixture() {
        let mapped = map_reporting(fixture!("reporting-email-clicked.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event(mapped),
            json!({
                "uid": "user_7731",
                "name": "Email Clicked (Customer.io)",
                "broadcast_id": 14,
                "trigger_id": 3307,
                "action_id": 77,
                "delivery_id": "dgSmAQUAAAGTz9y8x7w6v5u4t3s2",
                "subject": "Your workspace report",
                "href": "https://app.example.org/reports?utm_source=cio",
                "link_id": 9,
                "machine": false,
                "cio_event_id": "01JD4MB7K3N2P1Q0R9S8T7U6V5",
                "occurred_at": "2024-12-02T12:05:00Z"
            })
        );
    }

    #[test]
    fn reporting_email_bounced_fixture() {
        let mapped = map_reporting(fixture!("reporting-email-bounced.json"), &opts())
            .unwrap()
            .unwrap();
        assert_eq!(
            event(mapped),
            json!({
                "uid": "user_5150",
                "name": "Email Bounced (Customer.io)",
                "newsletter_id": 31,
                "content_id": 2,
                "delivery_id": "dgSmAQUAAAGTbounce000001",
                "subject": "December product notes",
                "failure_message": "550 5.1.1 mailbox unavailable",
                "cio_event_id": "01JD4MF5Z9Y8X7W6V5T4S3R2Q1",
                "occurred_at": "2024-12-02T12:20:00Z"
            })
        );
    }

    #[test]
    fn reporting_customer_unsubscribed_fixture() {
        let mapped = map_reporting(fixture!("reporting-customer-unsubscribed.json"), &opts())
            .unwrap()
            .unwrap();
        // Every data field is an identifier, so only the added properties remain.
        assert_eq!(
            event(mapped),
            json!({
                "uid": "user_1202",
                "name": "Customer Unsubscribed (Customer.io)",
                "cio_event_id": "01JD4MD0A1B2C3D4E5F6G7H8J9",
                "occurred_at": "2024-12-02T12:11:40Z"
            })
        );
    }

    #[test]
    fn workflow_profile_fixture() {
        let mapped = map_workflow(
            Source::CustomerioProfiles,
            fixture!("workflow-profile.json"),
            &opts(),
        )
        .unwrap();
        assert_eq!((mapped.truncated, mapped.renamed), (0, 2));
        assert_eq!(mapped.call.kind(), "profile");
        assert_eq!(
            Value::Object(mapped.call.into_body()),
            json!({
                "uid": "user_7731",
                "email": "ada@example.org",
                "company_uid": "acme",
                "plan": "growth",
                "upsell_readiness_score": 82,
                "cio_created_at": 1699999999,
                "cio_company": {"uid": "acme", "name": "Acme Ltd"},
                "preferences": {"digest_weekly_enabled": true, "digest_weekly_day": "mon"},
                "trial_ends_at": "2026-12-24T00:00:00Z"
            })
        );
    }

    #[test]
    fn workflow_company_fixture() {
        let mapped = map_workflow(
            Source::CustomerioCompanies,
            fixture!("workflow-company.json"),
            &opts(),
        )
        .unwrap();
        assert_eq!(mapped.call.kind(), "company");
        assert_eq!(mapped.call.uid(), Some("acme"));
        assert_eq!(
            Value::Object(mapped.call.into_body()),
            json!({
                "uid": "acme",
                "name": "Acme Ltd",
                "plan": "enterprise",
                "seats": 140,
                "renewal_at": "2027-03-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn workflow_event_fixture() {
        let mapped = map_workflow(
            Source::CustomerioEvents,
            fixture!("workflow-event.json"),
            &opts(),
        )
        .unwrap();
        assert_eq!(
            event(mapped),
            json!({
                "uid": "user_7731",
                "name": "Reached usage milestone",
                "milestone": "100 reports",
                "reports_created": 100
            })
        );
    }

    #[test]
    fn map_dispatches_by_source() {
        let filtered = InboundOptions {
            forward_metrics: vec!["push.*".into()],
            ..opts()
        };
        let opened = fixture!("reporting-email-opened.json");
        assert!(
            map(Source::CustomerioReporting, opened, &opts())
                .unwrap()
                .is_some()
        );
        assert_eq!(
            map(Source::CustomerioReporting, opened, &filtered),
            Ok(None)
        );
        let company = fixture!("workflow-company.json");
        let mapped = map(Source::CustomerioCompanies, company, &filtered)
            .unwrap()
            .unwrap();
        assert_eq!(mapped.call.kind(), "company");
        for source in [Source::ChameleonWebhook, Source::ChameleonEvent] {
            assert_eq!(
                map(source, company, &opts()).unwrap_err().reason(),
                "malformed"
            );
        }
        assert_eq!(
            map_workflow(Source::CustomerioReporting, company, &opts())
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn unknown_object_types_and_metrics_are_forwarded_by_the_same_rule() {
        let body = json!({
            "event_id": 991,
            "object_type": "carrier_pigeon",
            "metric": "email_deferred",
            "timestamp": 1733140800,
            "data": {"identifiers": {"id": "u1"}, "loft": "north", "payload": {"nested": true}}
        });
        assert_eq!(
            event(reporting(body).unwrap().unwrap()),
            json!({
                "uid": "u1",
                "name": "Carrier Pigeon Email Deferred (Customer.io)",
                "loft": "north",
                "cio_event_id": "991",
                "occurred_at": "2024-12-02T12:00:00Z"
            })
        );
        let in_app = json!({
            "object_type": "in_app", "metric": "clicked",
            "data": {"identifiers": {"id": "u1"}, "tracked_response": "yes", "recipient": "u1"}
        });
        assert_eq!(
            event(reporting(in_app).unwrap().unwrap()),
            json!({"uid": "u1", "name": "In App Clicked (Customer.io)", "tracked_response": "yes"})
        );
    }

    #[test]
    fn push_recipients_give_their_device_platforms() {
        let body = json!({
            "object_type": "push", "metric": "delivered",
            "data": {
                "identifiers": {"id": "u1"},
                "content": "{\"title\":\"hi\"}",
                "recipients": [
                    {"device_id": "d1", "device_platform": "ios"},
                    {"device_id": "d2", "device_platform": "android"},
                    {"device_id": "d3", "device_platform": "ios"}
                ]
            }
        });
        assert_eq!(
            event(reporting(body).unwrap().unwrap()),
            json!({
                "uid": "u1",
                "name": "Push Delivered (Customer.io)",
                "device_platform": "ios,android"
            })
        );
    }

    #[test]
    fn reporting_uid_falls_back_to_customer_id() {
        let with = |data: Value| {
            reporting(json!({"object_type": "email", "metric": "sent", "data": data}))
        };
        let uid = |data: Value| event(with(data).unwrap().unwrap())["uid"].clone();
        assert_eq!(
            uid(json!({"identifiers": {"id": null}, "customer_id": "c9"})),
            json!("c9")
        );
        assert_eq!(
            uid(json!({"identifiers": {"id": ""}, "customer_id": 77})),
            json!("77")
        );
        assert_eq!(
            uid(json!({"identifiers": {"id": 1234}, "customer_id": "c9"})),
            json!("1234")
        );
        for data in [
            json!({"identifiers": {"id": null, "email": "x@example.org"}}),
            json!({"identifiers": {"id": null}, "customer_id": ""}),
            json!({"identifiers": {"id": "  "}, "customer_id": null}),
            json!({}),
        ] {
            assert_eq!(with(data).unwrap_err(), InboundError::NoIdentity);
        }
        let no_data = reporting(json!({"object_type": "email", "metric": "sent"}));
        assert_eq!(no_data.unwrap_err().reason(), "no_identity");
    }

    #[test]
    fn reporting_bodies_of_the_wrong_shape_are_malformed() {
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"metric":"opened","data":{"identifiers":{"id":"u"}}}"#,
            br#"{"object_type":"email","metric":"","data":{"identifiers":{"id":"u"}}}"#,
            br#"{"object_type":"email","metric":7,"data":{"identifiers":{"id":"u"}}}"#,
            br#"{"object_type":"email","metric":"opened","data":[1]}"#,
        ] {
            let err = map_reporting(body, &opts()).unwrap_err();
            assert_eq!(
                err.reason(),
                "malformed",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn reporting_drops_nulls_and_keeps_our_fields_over_data() {
        let body = json!({
            "event_id": "e1", "object_type": "email", "metric": "sent", "timestamp": "1733140800",
            "data": {
                "identifiers": {"id": "u1"}, "campaign_id": null, "headers": {"x": "y"},
                "uid": "spoofed", "name": "spoofed", "cio_event_id": "spoofed", "id": 5
            }
        });
        let mapped = reporting(body).unwrap().unwrap();
        assert_eq!(mapped.renamed, 1);
        assert_eq!(
            event(mapped),
            json!({
                "uid": "u1",
                "name": "Email Sent (Customer.io)",
                "cio_event_id": "e1",
                "cio_id": 5,
                "occurred_at": "2024-12-02T12:00:00Z"
            })
        );
    }

    #[test]
    fn forward_metrics_patterns_filter() {
        let body = |object_type: &str, metric: &str| {
            json!({"object_type": object_type, "metric": metric, "data": {"customer_id": "u"}})
                .to_string()
        };
        let options = InboundOptions {
            forward_metrics: vec!["email.opened".into(), "*.clicked".into(), "PUSH.*".into()],
            ..opts()
        };
        assert_eq!(options.validate(), Ok(()));
        for (object_type, metric, kept) in [
            ("email", "opened", true),
            ("email", "bounced", false),
            ("sms", "clicked", true),
            ("in_app", "clicked", true),
            ("push", "delivered", true),
            ("customer", "unsubscribed", false),
            ("slack", "email_deferred", false),
        ] {
            let mapped = map_reporting(body(object_type, metric).as_bytes(), &options).unwrap();
            assert_eq!(mapped.is_some(), kept, "{object_type}.{metric}");
        }
        let everything = opts();
        assert!(everything.forwards("anything", "new_metric"));
    }

    #[test]
    fn forward_metrics_patterns_are_validated() {
        for pattern in ["opened", ".opened", "email.", "email.opened.twice", ""] {
            let options = InboundOptions {
                forward_metrics: vec!["email.*".into(), pattern.into()],
                ..opts()
            };
            assert_eq!(options.validate(), Err(BadMetricPattern(pattern.into())));
        }
    }

    #[test]
    fn reporting_event_id_is_a_string_or_number() {
        assert_eq!(
            reporting_event_id(&json!({"event_id": "01J"})),
            Some("01J".into())
        );
        assert_eq!(
            reporting_event_id(&json!({"event_id": 42})),
            Some("42".into())
        );
        assert_eq!(reporting_event_id(&json!({"event_id": ""})), None);
        assert_eq!(reporting_event_id(&json!({"event_id": null})), None);
        assert_eq!(reporting_event_id(&json!({"event_id": ["x"]})), None);
        assert_eq!(reporting_event_id(&json!({})), None);
        assert_eq!(reporting_event_id(&json!(["event_id"])), None);
    }

    #[test]
    fn profiles_need_a_uid_or_an_email() {
        let by_email = workflow(
            Source::CustomerioProfiles,
            json!({"email": "a@example.org", "plan": "x"}),
        )
        .unwrap();
        assert_eq!(by_email.call.uid(), None);
        assert_eq!(
            Value::Object(by_email.call.into_body()),
            json!({"email": "a@example.org", "plan": "x"})
        );
        let numeric = workflow(Source::CustomerioProfiles, json!({"uid": 31337})).unwrap();
        assert_eq!(numeric.call.uid(), Some("31337"));
        for body in [
            json!({"plan": "x"}),
            json!({"uid": null, "email": null}),
            json!({"uid": "", "email": " "}),
        ] {
            assert_eq!(
                workflow(Source::CustomerioProfiles, body).unwrap_err(),
                InboundError::NoIdentity
            );
        }
        for body in [
            json!({"uid": true}),
            json!({"uid": {"id": 1}}),
            json!({"email": 5}),
        ] {
            assert_eq!(
                workflow(Source::CustomerioProfiles, body)
                    .unwrap_err()
                    .reason(),
                "malformed"
            );
        }
        assert_eq!(
            workflow(Source::CustomerioProfiles, json!([{"uid": "u"}]))
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }

    #[test]
    fn explicit_company_uid_wins_over_the_company_object() {
        let mapped = workflow(
            Source::CustomerioProfiles,
            json!({"uid": "u", "company_uid": 9, "company": {"uid": "acme"}}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(mapped.call.into_body()),
            json!({"uid": "u", "company_uid": "9", "cio_company": {"uid": "acme"}})
        );
        let no_link = workflow(
            Source::CustomerioProfiles,
            json!({"uid": "u", "company": "acme"}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(no_link.call.into_body()),
            json!({"uid": "u", "cio_company": "acme"})
        );
    }

    #[test]
    fn companies_and_events_need_their_identity() {
        assert_eq!(
            workflow(Source::CustomerioCompanies, json!({"name": "Acme"})).unwrap_err(),
            InboundError::NoIdentity
        );
        let company = workflow(
            Source::CustomerioCompanies,
            json!({"uid": 12, "email": "x"}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(company.call.into_body()),
            json!({"uid": "12", "email": "x"})
        );
        assert_eq!(
            workflow(
                Source::CustomerioEvents,
                json!({"email": "a@example.org", "name": "N"})
            )
            .unwrap_err(),
            InboundError::NoIdentity
        );
        for body in [
            json!({"uid": "u"}),
            json!({"uid": "u", "name": ""}),
            json!({"uid": "u", "name": 3}),
        ] {
            assert_eq!(
                workflow(Source::CustomerioEvents, body)
                    .unwrap_err()
                    .reason(),
                "malformed"
            );
        }
    }

    #[test]
    fn reserved_names_are_renamed_or_rejected() {
        let body = json!({"uid": "u", "createdAt": 1, "percent": 5, "created": 2, "name": "N"});
        let mapped = workflow(Source::CustomerioProfiles, body.clone()).unwrap();
        assert_eq!(mapped.renamed, 2);
        assert_eq!(
            Value::Object(mapped.call.into_body()),
            json!({"uid": "u", "cio_createdAt": 1, "cio_percent": 5, "created": 2, "name": "N"})
        );
        let reject = InboundOptions {
            reserved_names: ReservedNames::Reject,
            ..opts()
        };
        let err = map_workflow(
            Source::CustomerioCompanies,
            json!({"uid": "u", "createdAt": 1}).to_string().as_bytes(),
            &reject,
        )
        .unwrap_err();
        assert_eq!(err, InboundError::ReservedName("createdAt".into()));
        assert_eq!(err.reason(), "reserved_name");
        // Identity fields are not properties, and nested keys are not checked.
        let fine = json!({"uid": "u", "name": "N", "meta": {"id": 1}});
        assert!(
            map_workflow(
                Source::CustomerioEvents,
                fine.to_string().as_bytes(),
                &reject
            )
            .is_ok()
        );
    }

    #[test]
    fn a_written_cio_key_wins_over_a_renamed_one() {
        let (props, _, renamed) =
            normalise_properties(object(json!({"at": 1, "cio_at": 2})), &opts()).unwrap();
        assert_eq!(renamed, 1);
        assert_eq!(Value::Object(props), json!({"cio_at": 2}));
    }

    #[test]
    fn deep_nesting_is_flattened_into_the_second_level() {
        let (props, truncated, renamed) = normalise_properties(
            object(json!({"a": {"b": {"c": 1, "d": {"e": 2}}}, "f": [1, {"g": {"h": null}}]})),
            &opts(),
        )
        .unwrap();
        assert_eq!((truncated, renamed), (0, 0));
        assert_eq!(
            Value::Object(props),
            json!({"a": {"b_c": 1, "b_d_e": 2}, "f": [1, {"g_h": null}]})
        );
        // A key the sender wrote wins over a flattened key of the same name.
        let (props, _, _) =
            normalise_properties(object(json!({"a": {"b": {"c": 1}, "b_c": 2}})), &opts()).unwrap();
        assert_eq!(Value::Object(props), json!({"a": {"b_c": 2}}));
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        // 767 ASCII bytes then a two-byte "é": byte 768 falls inside it, so it goes.
        let accented = format!("{}é", "a".repeat(767));
        // 766 ASCII bytes then a four-byte crab: cut back to 766.
        let crab = format!("{}🦀", "b".repeat(766));
        let exact = "c".repeat(768);
        let long_uid = "u".repeat(800);
        let mapped = workflow(
            Source::CustomerioProfiles,
            json!({
                "uid": long_uid,
                "note": accented,
                "tags": [crab, "short"],
                "deep": {"x": {"y": accented}},
                "exact": exact
            }),
        )
        .unwrap();
        assert_eq!(mapped.truncated, 3);
        assert_eq!(
            Value::Object(mapped.call.into_body()),
            json!({
                "uid": long_uid,
                "note": "a".repeat(767),
                "tags": ["b".repeat(766), "short"],
                "deep": {"x_y": "a".repeat(767)},
                "exact": exact
            })
        );
    }

    #[test]
    fn call_accessors() {
        let call = ChameleonCall::Company(object(json!({"uid": "acme"})));
        assert_eq!((call.kind(), call.uid()), ("company", Some("acme")));
        let call = ChameleonCall::Profile(object(json!({"email": "a@example.org"})));
        assert_eq!((call.kind(), call.uid()), ("profile", None));
    }

    #[test]
    fn title_case_splits_on_underscores() {
        assert_eq!(title_case("in_app"), "In App");
        assert_eq!(
            title_case("cio_subscription_preferences_changed"),
            "Cio Subscription Preferences Changed"
        );
        assert_eq!(title_case("email"), "Email");
        assert_eq!(title_case("a__b"), "A B");
    }

    // === properties of the normaliser ===

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(RESERVED_NAMES.to_vec()).prop_map(String::from),
            Just("cio_at".to_owned()),
            Just("cio_id".to_owned()),
            "[a-c]{1,2}(_[a-c]{1,2})?",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zé🦀 ]{0,12}",
            ("[aé🦀]{1,3}", 150usize..400).prop_map(|(unit, times)| unit.repeat(times)),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 64, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn props() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::btree_map(key(), json_value(), 0..8)
            .prop_map(|map| map.into_iter().collect())
    }

    /// No object holds an object, apart from the property map itself.
    fn flat_below(value: &Value, inside_object: bool) -> bool {
        match value {
            Value::Object(map) => !inside_object && map.values().all(|v| flat_below(v, true)),
            Value::Array(items) => items.iter().all(|v| flat_below(v, false)),
            _ => true,
        }
    }

    fn longest_string(value: &Value) -> usize {
        match value {
            Value::String(text) => text.len(),
            Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
            Value::Object(map) => map.values().map(longest_string).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        #[test]
        fn no_reserved_name_survives(input in props()) {
            let (output, _, renamed) = normalise_properties(input.clone(), &opts()).unwrap();
            let reserved = input.keys().filter(|k| RESERVED_NAMES.contains(&k.as_str())).count();
            prop_assert_eq!(renamed, reserved);
            prop_assert!(output.keys().all(|k| !RESERVED_NAMES.contains(&k.as_str())));
        }

        #[test]
        fn reject_mode_fails_exactly_when_a_reserved_name_is_present(input in props()) {
            let reject = InboundOptions { reserved_names: ReservedNames::Reject, ..opts() };
            let has_reserved = input.keys().any(|k| RESERVED_NAMES.contains(&k.as_str()));
            match normalise_properties(input, &reject) {
                Err(InboundError::ReservedName(name)) => {
                    prop_assert!(has_reserved);
                    prop_assert!(RESERVED_NAMES.contains(&name.as_str()));
                }
                Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                Ok(_) => prop_assert!(!has_reserved),
            }
        }

        #[test]
        fn nothing_nests_deeper_than_two_levels(input in props()) {
            let (output, _, _) = normalise_properties(input, &opts()).unwrap();
            prop_assert!(output.values().all(|v| flat_below(v, false)), "{:?}", output);
        }

        #[test]
        fn no_string_exceeds_the_limit(input in props()) {
            let (output, truncated, _) = normalise_properties(input.clone(), &opts()).unwrap();
            prop_assert!(longest_string(&Value::Object(output)) <= MAX_VALUE_BYTES);
            if longest_string(&Value::Object(input)) > MAX_VALUE_BYTES {
                prop_assert!(truncated > 0);
            }
        }

        #[test]
        fn normalising_twice_changes_nothing(input in props()) {
            let (once, _, _) = normalise_properties(input, &opts()).unwrap();
            let (twice, truncated, renamed) = normalise_properties(once.clone(), &opts()).unwrap();
            prop_assert_eq!(&twice, &once);
            prop_assert_eq!((truncated, renamed), (0, 0));
        }
    }
}
