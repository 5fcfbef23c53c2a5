//! What the fuzz targets in `fuzz_targets/` share: the invariants they assert about mapped
//! payloads, and a generator of JSON objects shaped to reach the normaliser's corner cases
//! (reserved names, keys that collide once flattened, long multi-byte strings, deep nesting).
//!
//! Every check here answers a question with a plain value; the targets turn a wrong answer into
//! a panic with the offending output, which libFuzzer then saves as a crash input.

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// How deep generated objects and arrays nest; deep enough to need two rounds of flattening.
const MAX_GENERATED_DEPTH: usize = 6;

/// Keys the generator prefers: reserved names, their renamed forms, and pieces that collide once
/// nested objects are flattened into `parent_child` keys.
const INTERESTING_KEYS: [&str; 16] = [
    "id",
    "at",
    "cio_at",
    "company",
    "cio_company",
    "createdAt",
    "percent",
    "uid",
    "email",
    "name",
    "a",
    "b",
    "b_c",
    "c",
    "",
    "é",
];

/// Characters repeated to build long strings: one, two, three and four bytes wide, so that the
/// 768-byte cut falls inside a character as often as not.
const WIDE_CHARS: [char; 4] = ['x', 'é', '€', '🦀'];

/// The length in bytes of the longest string value inside `value`, at any depth (keys excluded).
pub fn longest_string(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(map) => map.values().map(longest_string).max().unwrap_or(0),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// How many string values inside `value`, at any depth, are longer than `max_bytes`.
pub fn count_long_strings(value: &Value, max_bytes: usize) -> usize {
    match value {
        Value::String(text) => usize::from(text.len() > max_bytes),
        Value::Array(items) => items.iter().map(|v| count_long_strings(v, max_bytes)).sum(),
        Value::Object(map) => map.values().map(|v| count_long_strings(v, max_bytes)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// How many objects nest directly inside one another, starting at `value`. An array ends the
/// chain: Chameleon drops objects inside arrays, so they do not add to a profile's depth (they
/// are checked on their own by [`objects_in_arrays_are_flat`]).
pub fn object_depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(object_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether every object found inside an array, at any depth, holds no object itself.
pub fn objects_in_arrays_are_flat(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().all(|item| {
            let flat = !matches!(item, Value::Object(_)) || object_depth(item) <= 1;
            flat && objects_in_arrays_are_flat(item)
        }),
        Value::Object(map) => map.values().all(objects_in_arrays_are_flat),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => true,
    }
}

/// The problem with a set of Chameleon properties, if any: what `normalise_properties` promises
/// about its output, minus the reserved-name rule (which depends on the options).
pub fn property_problem(props: &Map<String, Value>, max_string_bytes: usize) -> Option<String> {
    let whole = Value::Object(props.clone());
    let depth = object_depth(&whole);
    if depth > 2 {
        return Some(format!("objects nest {depth} levels deep"));
    }
    if !objects_in_arrays_are_flat(&whole) {
        return Some("an object inside an array holds an object".to_owned());
    }
    let longest = longest_string(&whole);
    if longest > max_string_bytes {
        return Some(format!("a string value is {longest} bytes"));
    }
    None
}

/// A JSON object built from fuzzer bytes, biased towards the keys and values that matter to the
/// normaliser.
pub fn arbitrary_object(u: &mut Unstructured<'_>) -> Result<Map<String, Value>> {
    object_at(u, 0)
}

fn object_at(u: &mut Unstructured<'_>, depth: usize) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    let entries = u.int_in_range(0..=6)?;
    for _ in 0..entries {
        let key = arbitrary_key(u)?;
        let value = value_at(u, depth + 1)?;
        map.insert(key, value);
    }
    Ok(map)
}

fn value_at(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    // Past the depth limit only scalars are drawn, so generation always ends.
    let kinds = if depth >= MAX_GENERATED_DEPTH { 5 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => arbitrary_number(u)?,
        3 => Value::String(u.arbitrary()?),
        4 => Value::String(long_string(u)?),
        5 => {
            let len = u.int_in_range(0..=4)?;
            let items = (0..len)
                .map(|_| value_at(u, depth + 1))
                .collect::<Result<Vec<_>>>()?;
            Value::Array(items)
        }
        _ => Value::Object(object_at(u, depth)?),
    })
}

fn arbitrary_key(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(&INTERESTING_KEYS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

fn arbitrary_number(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.arbitrary()? {
        return Ok(Value::Number(Number::from(u.arbitrary::<i64>()?)));
    }
    // Non-finite floats have no JSON form; they become null, as serde_json would write them.
    let float: f64 = u.arbitrary()?;
    Ok(Number::from_f64(float).map_or(Value::Null, Value::Number))
}

/// A string around the 768-byte limit (and sometimes far past it) made of one wide character.
fn long_string(u: &mut Unstructured<'_>) -> Result<String> {
    let wide = *u.choose(&WIDE_CHARS)?;
    let bytes = u.int_in_range(700..=2_000)?;
    let mut text = String::new();
    while text.len() + wide.len_utf8() <= bytes {
        text.push(wide);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn depth_counts_objects_in_objects_only() {
        assert_eq!(object_depth(&json!({"a": {"b": 1}})), 2);
        assert_eq!(object_depth(&json!({"a": {"b": {"c": 1}}})), 3);
        assert_eq!(object_depth(&json!({"a": [{"b": {"c": 1}}]})), 1);
        assert!(!objects_in_arrays_are_flat(
            &json!({"a": [{"b": {"c": 1}}]})
        ));
        assert!(objects_in_arrays_are_flat(&json!({"a": [[{"b_c": 1}]]})));
    }

    #[test]
    fn long_strings_are_counted_at_any_depth() {
        let long = "é".repeat(400);
        let value = json!({"a": [long.clone(), {"b": long.clone()}], "c": "short"});
        assert_eq!(count_long_strings(&value, 768), 2);
        assert_eq!(longest_string(&value), 800);
    }
}
