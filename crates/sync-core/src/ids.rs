//! Provider ids as text. Ids arrive as strings or numbers (Customer.io person ids, Chameleon
//! uids); both directions send them on as strings. A number is an id only when JSON parsing kept
//! it exact: an integer beyond 64 bits arrives as a float, and its digits are already lost.

use serde_json::Value;

/// A usable id: a non-blank string, or an exact integer written as a string. `null`, blanks,
/// fractions, integers too large to be exact, and other types are not.
pub(crate) fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.trim().is_empty() => Some(text.clone()),
        Value::Number(number) if number.is_i64() || number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

/// Whether a value is a number that cannot be an exact id (a fraction, or an integer too large
/// for 64 bits), so that callers can say why instead of treating it as absent.
pub(crate) fn is_inexact_number(value: &Value) -> bool {
    matches!(value, Value::Number(number) if !number.is_i64() && !number.is_u64())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exact_numbers_and_strings_are_ids() {
        assert_eq!(id_text(Some(&json!("u1"))).as_deref(), Some("u1"));
        assert_eq!(id_text(Some(&json!(42))).as_deref(), Some("42"));
        assert_eq!(
            id_text(Some(&json!(18_446_744_073_709_551_615u64))).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(id_text(Some(&json!(" "))), None);
        assert_eq!(id_text(Some(&json!(1.5))), None);
        let huge: Value = serde_json::from_str("12345678901234567890123").unwrap();
        assert_eq!(id_text(Some(&huge)), None, "digits already lost");
        assert!(is_inexact_number(&huge));
        assert!(!is_inexact_number(&json!(7)));
    }
}
