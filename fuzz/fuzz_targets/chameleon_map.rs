//! Fuzzes `sync_core::outbound::map`, the relay's Chameleon -> Customer.io mapping, with the
//! input as the queued body under both Chameleon sources (`chameleon.webhook` and
//! `chameleon.event`) and several option sets.
//!
//! It asserts that mapping never panics and that whatever it produces fits Customer.io's Track
//! API: the name ends in ` (Chameleon)` and fits 100 bytes; the event id is a ULID derived from
//! the source id alone; the person is identified by a non-blank value, by email only when that
//! is allowed; attribute names fit 150 bytes, attribute strings 1000 bytes at any depth, and all
//! attributes 100,000 bytes as JSON; a webhook carries its `chameleon_webhook_id`; a tour event's
//! time is plausible unix seconds. Only `ping` and filtered topics map to nothing, and only for
//! webhooks. A Customer.io source handed to this mapping is refused as malformed.

#![no_main]

use cio_chameleon_sync_fuzz::longest_string;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sync_core::Source;
use sync_core::outbound::{
    self, Identifier, MAX_ATTRIBUTE_BYTES, MAX_ATTRIBUTE_NAME_BYTES, MAX_ATTRIBUTES_BYTES,
    MAX_NAME_BYTES, NAME_SUFFIX, OutboundError, OutboundOptions, TrackEvent,
};

/// Crockford's base 32, the alphabet of a ULID.
const ULID_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fuzz_target!(|body: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    for opts in option_sets() {
        check_webhook(body, parsed.as_ref(), &opts);
        check_tour_event(body, parsed.as_ref(), &opts);
    }

    let result = outbound::map(
        Source::CustomerioReporting,
        body,
        &OutboundOptions::default(),
    );
    assert!(
        matches!(result, Err(OutboundError::Malformed(_))),
        "a customer.io source mapped as chameleon: {result:?}"
    );
});

fn option_sets() -> [OutboundOptions; 3] {
    [
        OutboundOptions::default(),
        OutboundOptions {
            allow_email_identity: true,
            ..OutboundOptions::default()
        },
        OutboundOptions {
            allow_email_identity: false,
            topics: vec!["tour.*".to_owned(), "response.finished".to_owned()],
            exclude_topics: vec!["tour.button.*".to_owned()],
        },
    ]
}

fn check_webhook(body: &[u8], parsed: Option<&Value>, opts: &OutboundOptions) {
    let result = outbound::map(Source::ChameleonWebhook, body, opts);
    assert_eq!(
        result,
        outbound::map(Source::ChameleonWebhook, body, opts),
        "mapping is not deterministic"
    );
    let kind = parsed.and_then(|v| v.get("kind")?.as_str());

    match result {
        Ok(Some(event)) => {
            let Some(kind) = kind else {
                panic!("mapped a webhook without a string kind: {event:?}");
            };
            assert!(
                opts.relays(kind),
                "relayed a {kind:?} webhook the options filter out"
            );
            let Some(webhook_id) = parsed.and_then(outbound::webhook_id) else {
                panic!("mapped a webhook the receiver would refuse: {event:?}");
            };
            assert_eq!(event.id, outbound::event_ulid(&webhook_id), "event id");
            assert_eq!(
                event.attributes.get("chameleon_webhook_id"),
                Some(&Value::String(webhook_id)),
                "webhook id attribute"
            );
            check_event(&event, opts);
        }
        Ok(None) => {
            let filtered = kind.is_some_and(|kind| !opts.relays(kind));
            assert!(filtered, "a relayed webhook ({kind:?}) mapped to nothing");
        }
        Err(err) => assert_reason(&err),
    }
}

fn check_tour_event(body: &[u8], parsed: Option<&Value>, opts: &OutboundOptions) {
    let result = outbound::map(Source::ChameleonEvent, body, opts);
    assert_eq!(
        result,
        outbound::map(Source::ChameleonEvent, body, opts),
        "mapping is not deterministic"
    );

    match result {
        Ok(Some(event)) => {
            let source_id = parsed.and_then(|v| match v.get("id")? {
                Value::String(text) if !text.trim().is_empty() => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            });
            let Some(source_id) = source_id else {
                panic!("mapped a tour event without a usable id: {event:?}");
            };
            assert_eq!(event.id, outbound::event_ulid(&source_id), "event id");
            assert!(
                (0..100_000_000_000).contains(&event.timestamp),
                "tour event time {}",
                event.timestamp
            );
            check_event(&event, opts);
        }
        Ok(None) => panic!("a tour event mapped to nothing"),
        Err(err) => assert_reason(&err),
    }
}

fn check_event(event: &TrackEvent, opts: &OutboundOptions) {
    assert!(event.name.len() <= MAX_NAME_BYTES, "name {:?}", event.name);
    assert!(event.name.ends_with(NAME_SUFFIX), "name {:?}", event.name);

    let is_ulid = event.id.len() == 26
        && event.id.chars().all(|c| ULID_ALPHABET.contains(c))
        && event.id.as_bytes()[0] <= b'7';
    assert!(is_ulid, "event id {:?} is not a ULID", event.id);

    assert!(
        !event.identifier.value().trim().is_empty(),
        "blank identifier {:?}",
        event.identifier
    );
    if matches!(event.identifier, Identifier::Email(_)) {
        assert!(
            opts.allow_email_identity,
            "identified by email when not allowed"
        );
    }

    if let Some(name) = event
        .attributes
        .keys()
        .find(|name| name.len() > MAX_ATTRIBUTE_NAME_BYTES)
    {
        panic!("attribute name {name:?} is too long");
    }
    let attributes = Value::Object(event.attributes.clone());
    let longest = longest_string(&attributes);
    assert!(
        longest <= MAX_ATTRIBUTE_BYTES,
        "an attribute string is {longest} bytes"
    );
    let size = serde_json::to_vec(&attributes).map_or(usize::MAX, |json| json.len());
    assert!(size <= MAX_ATTRIBUTES_BYTES, "attributes are {size} bytes");
}

fn assert_reason(err: &OutboundError) {
    assert!(
        ["malformed", "no_identity"].contains(&err.reason()),
        "unexpected reason {}",
        err.reason()
    );
}
