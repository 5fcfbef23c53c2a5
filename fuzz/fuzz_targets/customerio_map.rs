//! Fuzzes `sync_core::inbound::map`, the worker's Customer.io -> Chameleon mapping, with the
//! input as the queued body under each of the four Customer.io sources, in both reserved-name
//! modes, with and without a `forward_metrics` filter.
//!
//! It asserts that mapping never panics and that whatever it produces is a call Chameleon can
//! take: the call kind fits the source; an identity is present (`uid`, or `email` for a
//! profile); an event has a name; the properties beside the identity fields hold no reserved
//! name, nest at most two levels and carry no string over 768 bytes; nothing is filtered but a
//! reporting event under a `forward_metrics` filter that does not name it; the same body maps
//! the same way twice. A Chameleon source handed to this mapping is refused as malformed.

#![no_main]

use cio_chameleon_sync_fuzz::property_problem;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sync_core::Source;
use sync_core::inbound::{
    self, ChameleonCall, InboundError, InboundOptions, MAX_VALUE_BYTES, Mapped, RESERVED_NAMES,
    ReservedNames,
};

const CUSTOMERIO_SOURCES: [Source; 4] = [
    Source::CustomerioReporting,
    Source::CustomerioProfiles,
    Source::CustomerioCompanies,
    Source::CustomerioEvents,
];

/// The only object type forwarded when the filter is on.
const FORWARDED_OBJECT: &str = "email";

fuzz_target!(|body: &[u8]| {
    for reserved_names in [ReservedNames::Rename, ReservedNames::Reject] {
        for forward_metrics in [Vec::new(), vec![format!("{FORWARDED_OBJECT}.*")]] {
            let opts = InboundOptions {
                reserved_names,
                forward_metrics,
            };
            for source in CUSTOMERIO_SOURCES {
                check(source, body, &opts);
            }
        }
    }

    for source in [Source::ChameleonWebhook, Source::ChameleonEvent] {
        let result = inbound::map(source, body, &InboundOptions::default());
        assert!(
            matches!(result, Err(InboundError::Malformed(_))),
            "{source} mapped as customer.io: {result:?}"
        );
    }
});

fn check(source: Source, body: &[u8], opts: &InboundOptions) {
    let result = inbound::map(source, body, opts);
    assert_eq!(
        result,
        inbound::map(source, body, opts),
        "mapping is not deterministic"
    );

    match result {
        Ok(Some(mapped)) => check_mapped(source, &mapped),
        Ok(None) => {
            assert_eq!(
                source,
                Source::CustomerioReporting,
                "{source} body was filtered"
            );
            let object_type = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("object_type")?.as_str().map(str::to_owned));
            let forwarded = opts.forward_metrics.is_empty()
                || object_type.is_some_and(|t| t.eq_ignore_ascii_case(FORWARDED_OBJECT));
            assert!(!forwarded, "a forwarded reporting event was filtered out");
        }
        Err(err) => {
            assert!(
                ["malformed", "no_identity", "reserved_name"].contains(&err.reason()),
                "unexpected reason {}",
                err.reason()
            );
        }
    }
}

fn check_mapped(source: Source, mapped: &Mapped) {
    let body = mapped.call.body();
    let identity_keys: &[&str] = match (&mapped.call, source) {
        (ChameleonCall::Event(_), Source::CustomerioReporting | Source::CustomerioEvents) => {
            &["uid", "name"]
        }
        (ChameleonCall::Profile(_), Source::CustomerioProfiles) => &["uid", "email", "company_uid"],
        (ChameleonCall::Company(_), Source::CustomerioCompanies) => &["uid"],
        (call, source) => panic!("{source} mapped to a {} call", call.kind()),
    };

    let non_blank = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .is_some_and(|text| !text.trim().is_empty())
    };
    let identified = match source {
        Source::CustomerioProfiles => non_blank("uid") || non_blank("email"),
        _ => non_blank("uid"),
    };
    assert!(identified, "{source} mapped without an identity: {body:?}");
    if matches!(mapped.call, ChameleonCall::Event(_)) {
        assert!(non_blank("name"), "an event without a name: {body:?}");
    }
    if source == Source::CustomerioReporting {
        let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
        assert!(
            name.ends_with(" (Customer.io)"),
            "reporting event named {name:?}"
        );
    }

    // Identity fields are sent as written; everything else went through the normaliser.
    let props: Map<String, Value> = body
        .iter()
        .filter(|(key, _)| !identity_keys.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if let Some(key) = props.keys().find(|k| RESERVED_NAMES.contains(&k.as_str())) {
        panic!("reserved name {key:?} sent to chameleon: {body:?}");
    }
    if let Some(problem) = property_problem(&props, MAX_VALUE_BYTES) {
        panic!("{problem} in the {source} call: {body:?}");
    }
}
