//! Envelope <-> AMQP message. The body travels as raw bytes; the metadata travels in the message
//! properties and in the headers named by DESIGN §4. Reading is lenient: a message from an
//! outside producer may carry no headers at all, and one the broker dead-lettered by itself
//! carries the broker's `x-death` record instead of our dead-letter headers.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use sync_core::envelope::headers;
use sync_core::time::{format_ms, now_ms, parse_rfc3339_ms};
use sync_core::{Direction, Envelope, Failure, Source};
use ulid::Ulid;

use crate::DeadLetter;

/// AMQP delivery mode of a message written to disk.
const PERSISTENT: u8 = 2;

/// Longest `last_error` kept on a dead letter, in bytes.
///
/// Limitation: a longer upstream error is cut to its first 4096 bytes, because headers travel in
/// one AMQP frame; the rest of the message is lost to operators.
pub(crate) const MAX_ERROR_BYTES: usize = 4096;

/// The properties of a queued envelope: persistent, identified, with the metadata headers.
pub(crate) fn properties(envelope: &Envelope) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(envelope.message_id.as_str().into())
        .with_timestamp(u64::try_from(envelope.received_at / 1000).unwrap_or(0))
        .with_headers(envelope_headers(envelope))
}

/// The properties of a dead letter: the envelope's, plus why and when it died.
pub(crate) fn dead_properties(
    envelope: &Envelope,
    failure: &Failure,
    dead_at: i64,
) -> BasicProperties {
    let mut table = envelope_headers(envelope);
    insert_text(&mut table, headers::DEAD_REASON, &failure.reason);
    insert_text(&mut table, headers::DEAD_AT, &format_ms(dead_at));
    if let Some(status) = failure.status {
        table.insert(
            headers::LAST_STATUS.into(),
            AMQPValue::LongLongInt(i64::from(status)),
        );
    }
    insert_text(
        &mut table,
        headers::LAST_ERROR,
        cut(&failure.error, MAX_ERROR_BYTES),
    );
    properties(envelope).with_headers(table)
}

/// The envelope of a message delivered from a work queue. Missing metadata gets defaults: the
/// source from the routing key, the id from the `message_id` property or a new ULID, received
/// now, first attempt.
pub(crate) fn work_envelope(
    properties: &BasicProperties,
    routing_key: &str,
    body: Vec<u8>,
    direction: Direction,
) -> Envelope {
    let found = Found::read(properties, routing_key, direction);
    Envelope {
        message_id: found.message_id.unwrap_or_else(|| Ulid::new().to_string()),
        source: found.source,
        received_at: found.received_at.unwrap_or_else(now_ms),
        attempt: found.attempt,
        provider_event_id: found.provider_event_id,
        first_failed_at: found.first_failed_at,
        body: Bytes::from(body),
    }
}

/// A message read from a dead queue. One we dead-lettered carries our headers; one the broker
/// dead-lettered (delivery limit) carries only `x-death`, and gets its reason and time from it.
pub(crate) fn dead_letter(
    properties: &BasicProperties,
    routing_key: &str,
    body: Vec<u8>,
    direction: Direction,
) -> DeadLetter {
    let table = properties.headers().as_ref();
    let death = Death::latest(table);
    let found = Found::read(properties, routing_key, direction);

    let dead_at = instant_ms(table, headers::DEAD_AT)
        .or(death.as_ref().and_then(|death| death.time_ms))
        .or_else(|| properties.timestamp().and_then(secs_to_ms))
        .unwrap_or(0);
    let broker_reason = death.as_ref().map(|death| broker_reason(&death.reason));
    let reason = text(table, headers::DEAD_REASON)
        .or_else(|| broker_reason.map(|(reason, _)| reason.to_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let error = text(table, headers::LAST_ERROR)
        .or_else(|| broker_reason.map(|(_, explanation)| explanation.to_owned()))
        .unwrap_or_default();
    let status = integer(table, headers::LAST_STATUS).and_then(|status| u16::try_from(status).ok());

    // A message without an id gets one derived from its content, so that listing it twice (or
    // listing and then replaying it by id) names it the same way.
    let message_id = found
        .message_id
        .unwrap_or_else(|| stable_id(dead_at, &body));
    let envelope = Envelope {
        message_id,
        source: found.source,
        received_at: found.received_at.unwrap_or(dead_at),
        attempt: found.attempt,
        provider_event_id: found.provider_event_id,
        first_failed_at: found.first_failed_at,
        body: Bytes::from(body),
    };
    DeadLetter {
        envelope,
        reason,
        status,
        error,
        dead_at,
    }
}

/// The metadata a message carries, each part optional.
struct Found {
    message_id: Option<String>,
    source: Source,
    received_at: Option<i64>,
    attempt: u32,
    provider_event_id: Option<String>,
    first_failed_at: Option<i64>,
}

impl Found {
    fn read(properties: &BasicProperties, routing_key: &str, direction: Direction) -> Self {
        let table = properties.headers().as_ref();
        let death = Death::latest(table);

        // A dead-lettered message's routing key is the dead queue's name; its original key is in
        // the `x-death` record.
        let source = text(table, headers::SOURCE)
            .and_then(|source| Source::from_routing_key(&source))
            .or_else(|| Source::from_routing_key(routing_key))
            .or_else(|| {
                death
                    .as_ref()
                    .and_then(|death| death.routing_key.as_deref())
                    .and_then(Source::from_routing_key)
            })
            .filter(|source| source.direction() == direction)
            .unwrap_or_else(|| default_source(direction));

        Self {
            message_id: text(table, headers::MESSAGE_ID)
                .or_else(|| properties.message_id().as_ref().map(|id| id.to_string()))
                .filter(|id| !id.is_empty()),
            source,
            received_at: instant_ms(table, headers::RECEIVED_AT),
            attempt: integer(table, headers::ATTEMPT)
                .and_then(|attempt| u32::try_from(attempt).ok())
                .filter(|attempt| *attempt >= 1)
                .unwrap_or(1),
            provider_event_id: text(table, headers::PROVIDER_EVENT_ID),
            first_failed_at: instant_ms(table, headers::FIRST_FAILED_AT),
        }
    }
}

/// Limitation: a message whose routing key names no known source is attributed to its work
/// queue's catch-all source (`chameleon.event` outbound, `customerio.reporting` inbound), so an
/// unexpected inbound producer's message reaches the worker under the wrong source and is
/// dead-lettered there by its mapping.
fn default_source(direction: Direction) -> Source {
    match direction {
        Direction::Inbound => Source::CustomerioReporting,
        Direction::Outbound => Source::ChameleonEvent,
    }
}

/// The broker's most recent dead-lettering of a message (the first `x-death` entry).
struct Death {
    reason: String,
    time_ms: Option<i64>,
    routing_key: Option<String>,
}

impl Death {
    fn latest(table: Option<&FieldTable>) -> Option<Death> {
        let entry = table?
            .inner()
            .get("x-death")?
            .as_array()?
            .as_slice()
            .first()?
            .as_field_table()?;
        let entry = Some(entry);
        Some(Death {
            reason: text(entry, "reason").unwrap_or_default(),
            time_ms: entry
                .and_then(|entry| entry.inner().get("time"))
                .and_then(AMQPValue::as_timestamp)
                .and_then(secs_to_ms),
            routing_key: entry
                .and_then(|entry| entry.inner().get("routing-keys"))
                .and_then(AMQPValue::as_array)
                .and_then(|keys| keys.as_slice().first())
                .and_then(value_text),
        })
    }
}

/// Our reason and explanation for a dead-lettering the broker did by itself.
fn broker_reason(reason: &str) -> (&'static str, &'static str) {
    match reason {
        "delivery_limit" => (
            "delivery_limit",
            "the broker dead-lettered it: the work queue's delivery limit was reached without a \
             settlement (consumers crashed or stopped while holding it)",
        ),
        "expired" => (
            "expired",
            "the broker dead-lettered it: it expired in the work queue",
        ),
        "maxlen" => (
            "maxlen",
            "the broker dead-lettered it: the work queue was full",
        ),
        "rejected" => (
            "rejected",
            "the broker dead-lettered it: a consumer rejected it",
        ),
        _ => (
            "unknown",
            "the broker dead-lettered it for an unknown reason",
        ),
    }
}

fn envelope_headers(envelope: &Envelope) -> FieldTable {
    let mut table = FieldTable::default();
    insert_text(&mut table, headers::MESSAGE_ID, &envelope.message_id);
    insert_text(&mut table, headers::SOURCE, envelope.source.routing_key());
    insert_text(
        &mut table,
        headers::RECEIVED_AT,
        &format_ms(envelope.received_at),
    );
    table.insert(
        headers::ATTEMPT.into(),
        AMQPValue::LongLongInt(i64::from(envelope.attempt)),
    );
    if let Some(id) = &envelope.provider_event_id {
        insert_text(&mut table, headers::PROVIDER_EVENT_ID, id);
    }
    if let Some(at) = envelope.first_failed_at {
        insert_text(&mut table, headers::FIRST_FAILED_AT, &format_ms(at));
    }
    table
}

fn insert_text(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value)),
    );
}

fn text(table: Option<&FieldTable>, name: &str) -> Option<String> {
    table?.inner().get(name).and_then(value_text)
}

fn value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// An integer header of any AMQP integer type, or a decimal string.
fn integer(table: Option<&FieldTable>, name: &str) -> Option<i64> {
    match table?.inner().get(name)? {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        other => value_text(other).and_then(|text| text.trim().parse().ok()),
    }
}

/// An instant header: RFC 3339 text (what we write), an AMQP timestamp (seconds), or an integer
/// of unix milliseconds.
fn instant_ms(table: Option<&FieldTable>, name: &str) -> Option<i64> {
    match table?.inner().get(name)? {
        AMQPValue::Timestamp(secs) => secs_to_ms(*secs),
        value => match value_text(value) {
            Some(text) => parse_rfc3339_ms(text.trim()),
            None => integer(table, name),
        },
    }
}

fn secs_to_ms(secs: u64) -> Option<i64> {
    i64::try_from(secs).ok()?.checked_mul(1000)
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A ULID that depends only on when the message died and what it carries.
fn stable_id(dead_at: i64, body: &[u8]) -> String {
    let high = fnv1a(0xcbf2_9ce4_8422_2325, body);
    let low = fnv1a(high ^ 0x9e37_79b9_7f4a_7c15, body);
    let random = (u128::from(high) << 64) | u128::from(low);
    Ulid::from_parts(u64::try_from(dead_at).unwrap_or(0), random).to_string()
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldArray;

    use super::*;

    fn envelope() -> Envelope {
        let mut envelope = Envelope::new(
            Source::CustomerioEvents,
            Bytes::from_static("{\"name\": \"Zoë\"}\n".as_bytes()),
            Some("evt-42".into()),
        );
        envelope.received_at = 1_733_140_805_123;
        envelope.next_attempt(1_733_140_900_456)
    }

    #[test]
    fn an_envelope_survives_the_round_trip() {
        let envelope = envelope();
        let properties = properties(&envelope);
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(envelope.message_id.as_str())
        );
        let decoded = work_envelope(
            &properties,
            "customerio.events",
            envelope.body.to_vec(),
            Direction::Inbound,
        );
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn a_bare_message_gets_defaults() {
        let before = now_ms();
        let decoded = work_envelope(
            &BasicProperties::default(),
            "chameleon.event",
            b"{}".to_vec(),
            Direction::Outbound,
        );
        assert_eq!(decoded.source, Source::ChameleonEvent);
        assert_eq!(decoded.attempt, 1);
        assert!(decoded.message_id.parse::<Ulid>().is_ok());
        assert!(decoded.received_at >= before);
        assert_eq!(decoded.provider_event_id, None);

        let named = BasicProperties::default().with_message_id("outside-1".into());
        let decoded = work_envelope(&named, "chameleon.webhook", Vec::new(), Direction::Outbound);
        assert_eq!(decoded.message_id, "outside-1");
        assert_eq!(decoded.source, Source::ChameleonWebhook);
    }

    #[test]
    fn a_dead_letter_keeps_reason_status_and_error() {
        let envelope = envelope();
        let failure = Failure::new("upstream_rejected", Some(422), "é".repeat(3000));
        let properties = dead_properties(&envelope, &failure, 1_733_141_000_789);
        let dead = dead_letter(
            &properties,
            "ccsync.inbound.dead",
            envelope.body.to_vec(),
            Direction::Inbound,
        );
        assert_eq!(dead.envelope, envelope);
        assert_eq!(dead.reason, "upstream_rejected");
        assert_eq!(dead.status, Some(422));
        assert_eq!(dead.dead_at, 1_733_141_000_789);
        assert_eq!(dead.error.len(), MAX_ERROR_BYTES);
        assert!(failure.error.starts_with(&dead.error));
    }

    #[test]
    fn a_broker_dead_letter_reads_the_delivery_limit_from_x_death() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        death.insert("time".into(), AMQPValue::Timestamp(1_733_141_000));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "chameleon.event".into(),
            )])),
        );
        let mut older = death.clone();
        older.insert("reason".into(), AMQPValue::LongString("expired".into()));
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::FieldTable(death),
                AMQPValue::FieldTable(older),
            ])),
        );
        let properties = BasicProperties::default().with_headers(table);

        let read = |body: &[u8]| {
            dead_letter(
                &properties,
                "ccsync.outbound.dead",
                body.to_vec(),
                Direction::Outbound,
            )
        };
        let dead = read(b"{\"tour\": 1}");
        assert_eq!(dead.reason, "delivery_limit");
        assert_eq!(dead.status, None);
        assert_eq!(dead.dead_at, 1_733_141_000_000);
        assert_eq!(dead.envelope.source, Source::ChameleonEvent);
        assert!(dead.error.contains("delivery limit"));
        assert_eq!(
            read(b"{\"tour\": 1}").envelope.message_id,
            dead.envelope.message_id
        );
        assert_ne!(
            read(b"{\"tour\": 2}").envelope.message_id,
            dead.envelope.message_id
        );
    }

    #[test]
    fn lenient_reading_of_integers_and_instants() {
        let mut table = FieldTable::default();
        table.insert("attempt".into(), AMQPValue::LongString("3".into()));
        table.insert("received_at".into(), AMQPValue::Timestamp(1_733_140_805));
        table.insert("first_failed_at".into(), AMQPValue::LongInt(1_733));
        let table = Some(&table);
        assert_eq!(integer(table, "attempt"), Some(3));
        assert_eq!(instant_ms(table, "received_at"), Some(1_733_140_805_000));
        assert_eq!(instant_ms(table, "first_failed_at"), Some(1_733));
        assert_eq!(cut("aé", 2), "a");
    }
}
