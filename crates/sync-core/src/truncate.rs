//! Cutting strings to an upstream's byte limit without splitting a character: Chameleon keeps
//! 768 bytes of a value, Customer.io 1000 bytes of an attribute and 100 of an event name.

use serde_json::Value;

/// The longest prefix of `text` that fits in `max_bytes` and ends on a character boundary.
pub fn prefix_within(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Cut `text` to at most `max_bytes` on a character boundary; true when something was cut.
pub fn truncate_string(text: &mut String, max_bytes: usize) -> bool {
    let keep = prefix_within(text, max_bytes).len();
    if keep == text.len() {
        return false;
    }
    text.truncate(keep);
    true
}

/// Cut every string inside `value` (array items and object values at any depth, not keys) to
/// `max_bytes`; returns how many strings were cut.
pub fn truncate_strings(value: &mut Value, max_bytes: usize) -> usize {
    match value {
        Value::String(text) => usize::from(truncate_string(text, max_bytes)),
        Value::Array(items) => items
            .iter_mut()
            .map(|item| truncate_strings(item, max_bytes))
            .sum(),
        Value::Object(map) => map
            .values_mut()
            .map(|item| truncate_strings(item, max_bytes))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cuts_on_a_character_boundary() {
        // "é" is two bytes: a limit that falls inside it keeps the character out.
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("aé", 3), "aé");
        assert_eq!(prefix_within("🦀🦀", 7), "🦀");
        assert_eq!(prefix_within("abc", 0), "");

        let mut text = "x".repeat(10);
        assert!(truncate_string(&mut text, 4));
        assert_eq!(text, "xxxx");
        assert!(!truncate_string(&mut text, 4));
    }

    #[test]
    fn cuts_strings_at_any_depth_but_not_keys() {
        let long = "é".repeat(5);
        let mut value = json!({ long.clone(): [long.clone(), {"k": long.clone()}], "n": 1 });
        assert_eq!(truncate_strings(&mut value, 3), 2);
        assert_eq!(value, json!({ long: ["é", {"k": "é"}], "n": 1 }));
    }
}
