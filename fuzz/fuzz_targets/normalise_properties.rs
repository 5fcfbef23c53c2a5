//! Fuzzes `sync_core::inbound::normalise_properties`, the rule that brings a workflow body's
//! properties within what Chameleon keeps.
//!
//! The input is read as a JSON object when it is one (so the seed corpus can be plain workflow
//! bodies); any other input drives a generator of objects rich in reserved names, colliding keys,
//! long multi-byte strings and deep nesting. For every object it asserts:
//! - in `Rename` mode no reserved name survives at the top level, and each reserved key in the
//!   input counts as one rename;
//! - objects nest at most two levels, and an object inside an array holds no object;
//! - no string value is over 768 bytes, and every longer string in the input counts as one cut;
//! - normalising the output again changes nothing and counts nothing;
//! - `Reject` mode refuses exactly the objects that have a reserved top-level name, and otherwise
//!   agrees with `Rename`.

#![no_main]

use cio_chameleon_sync_fuzz::{arbitrary_object, count_long_strings, property_problem};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sync_core::inbound::{
    InboundError, InboundOptions, MAX_VALUE_BYTES, RESERVED_NAMES, ReservedNames,
    normalise_properties,
};

fuzz_target!(|input: &[u8]| {
    let props = match serde_json::from_slice::<Map<String, Value>>(input) {
        Ok(props) => props,
        Err(_) => match arbitrary_object(&mut Unstructured::new(input)) {
            Ok(props) => props,
            Err(_) => return,
        },
    };
    check(props);
});

fn check(props: Map<String, Value>) {
    let rename = options(ReservedNames::Rename);
    let reject = options(ReservedNames::Reject);
    let reserved_in_input = props
        .keys()
        .filter(|key| RESERVED_NAMES.contains(&key.as_str()))
        .count();
    let long_in_input = count_long_strings(&Value::Object(props.clone()), MAX_VALUE_BYTES);

    // Renaming never refuses a body.
    let (out, truncated, renamed) = match normalise_properties(props.clone(), &rename) {
        Ok(normalised) => normalised,
        Err(err) => panic!("rename mode refused {props:?}: {err}"),
    };

    if let Some(key) = out
        .keys()
        .find(|key| RESERVED_NAMES.contains(&key.as_str()))
    {
        panic!("reserved name {key:?} survived renaming: {out:?}");
    }
    assert_eq!(renamed, reserved_in_input, "rename count for {props:?}");
    if let Some(problem) = property_problem(&out, MAX_VALUE_BYTES) {
        panic!("{problem} after normalising {props:?}: {out:?}");
    }
    assert_eq!(truncated, long_in_input, "truncation count for {props:?}");

    // What Chameleon is sent must be a fixed point, or a replay would change the data.
    match normalise_properties(out.clone(), &rename) {
        Ok((again, 0, 0)) if again == out => {}
        other => panic!("normalising twice changed {out:?} into {other:?}"),
    }

    match normalise_properties(props.clone(), &reject) {
        Err(InboundError::ReservedName(key)) => {
            assert!(reserved_in_input > 0, "refused {key:?} in {props:?}");
            assert!(RESERVED_NAMES.contains(&key.as_str()), "refused {key:?}");
        }
        Err(err) => panic!("reject mode failed with {err} on {props:?}"),
        Ok((rejected_out, rejected_truncated, 0)) => {
            assert_eq!(reserved_in_input, 0, "reject mode let {props:?} through");
            assert_eq!((&rejected_out, rejected_truncated), (&out, truncated));
        }
        Ok((_, _, renamed)) => panic!("reject mode renamed {renamed} keys of {props:?}"),
    }
}

fn options(reserved_names: ReservedNames) -> InboundOptions {
    InboundOptions {
        reserved_names,
        forward_metrics: Vec::new(),
    }
}
