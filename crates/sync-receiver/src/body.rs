//! Reading a webhook body's top level without building it. The receiver queues the raw bytes, so
//! it only needs to know that they are one valid JSON object and to read one or two members (the
//! provider's event id, a Chameleon `kind`). [`parse_object`] checks the whole body exactly as
//! strictly as parsing it into a `serde_json::Value` would (UTF-8, escapes, numbers that fit an
//! `f64`, nesting, nothing after the object), but keeps only the members asked for: no tree of
//! maps and strings is allocated for the rest.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not a JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAnObject {
    /// Not JSON at all (syntax, encoding, a number out of range, too deep for the parser), with
    /// the parser's description and position, for the sender.
    Invalid(String),
    /// Valid JSON, but an array, a string, a number, a boolean or `null`.
    OtherType,
}

/// The members of `body` named in `wanted` (the last one wins when a name repeats, as in a
/// `Value`), once the whole body is known to be one valid JSON object. Nesting depth is not
/// limited here beyond the parser's own limit: callers check it first.
pub fn parse_object(body: &[u8], wanted: &[&str]) -> Result<Map<String, Value>, NotAnObject> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let top = TopLevel { wanted }
        .deserialize(&mut deserializer)
        .map_err(invalid)?;
    deserializer.end().map_err(invalid)?;
    top.ok_or(NotAnObject::OtherType)
}

fn invalid(error: serde_json::Error) -> NotAnObject {
    NotAnObject::Invalid(error.to_string())
}

/// The top-level value: `Some` with the wanted members of an object, `None` for any other type.
struct TopLevel<'w> {
    wanted: &'w [&'w str],
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Option<Map<String, Value>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Option<Map<String, Value>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = Map::new();
        while let Some(name) = map.next_key_seed(Wanted {
            wanted: self.wanted,
        })? {
            match name {
                Some(name) => {
                    let value: Value = map.next_value()?;
                    kept.insert(name.to_owned(), value);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        Ok(Some(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Checked.visit_seq(seq).map(|_| None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A member name: `Some` when it is one of the wanted names. Borrowed and escaped names are
/// compared alike, after unescaping.
struct Wanted<'w> {
    wanted: &'w [&'w str],
}

impl<'de, 'w> DeserializeSeed<'de> for Wanted<'w> {
    type Value = Option<&'w str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'w> Visitor<'_> for Wanted<'w> {
    type Value = Option<&'w str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.wanted.iter().copied().find(|wanted| *wanted == name))
    }
}

/// Any JSON value, checked by the parser and dropped without being built. Unlike
/// `serde::de::IgnoredAny`, which `serde_json` skips with a lighter scan, it makes the parser
/// decode every string (so invalid UTF-8 and lone surrogates are refused) and every number (so
/// `1e400` is refused), as parsing into a `Value` does.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What parsing into a `Value` says about `body`, in this module's terms.
    fn by_value(body: &[u8]) -> Result<(), NotAnObject> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(_)) => Ok(()),
            Ok(_) => Err(NotAnObject::OtherType),
            Err(_) => Err(NotAnObject::Invalid(String::new())),
        }
    }

    /// The outcome without the parser's wording, which may differ between the two ways.
    fn kind(outcome: Result<(), NotAnObject>) -> Result<(), NotAnObject> {
        outcome.map_err(|problem| match problem {
            NotAnObject::Invalid(_) => NotAnObject::Invalid(String::new()),
            other => other,
        })
    }

    #[test]
    fn agrees_with_parsing_into_a_value() {
        let digits = "9".repeat(400);
        let cases: Vec<Vec<u8>> = [
            r#"{"event_id":"e1","data":{"a":[1,2.5,-3e2,true,null,"x"]}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"[{"a":1}]"#,
            r#""text""#,
            "42",
            "null",
            "",
            " ",
            r#"{"a":1}{"b":2}"#,
            r#"{"a":1}}"#,
            r#"{"a":1,}"#,
            r#"{"n":1e400}"#,
            r#"{"n":-1e400}"#,
            r#"{"n":[1e999]}"#,
            r#"{"n":01}"#,
            r#"{"n":NaN}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00\ud800"}"#,
            r#"{"s":"\x"}"#,
            r#"{"a":"b"#,
            r#"{'a':1}"#,
            "{\"s\":\"a\u{1}b\"}",
        ]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .chain([
            format!(r#"{{"n":{digits}.0e99999}}"#).into_bytes(),
            b"{\"s\":\"\xff\"}".to_vec(),
            b"{\"s\":\"\xed\xa0\x80\"}".to_vec(),
            b"{\"\xfe\xff\":1}".to_vec(),
            b"{\"s\":\"\xe2\x82\"}".to_vec(),
            b"\xef\xbb\xbf{}".to_vec(),
            b"{}\x00".to_vec(),
            format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            format!("{{\"a\":{}0{}}}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        ])
        .collect();
        for body in cases {
            assert_eq!(
                kind(parse_object(&body, &["a"]).map(|_| ())),
                by_value(&body),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn invalid_bodies_say_what_and_where() {
        let Err(NotAnObject::Invalid(why)) = parse_object(br#"{"uid":"u1","n":1e400}"#, &[]) else {
            panic!("1e400 is out of an f64's range");
        };
        assert!(
            why.contains("number out of range") && why.contains("column"),
            "{why}"
        );
    }

    #[test]
    fn keeps_only_the_wanted_members() {
        let body = br#"{"kind":"ping","id":7,"data":{"id":"inner"},"id":"w1","k\u0069nd2":1}"#;
        let kept = parse_object(body, &["id", "kind", "kind2"]).unwrap();
        assert_eq!(
            Value::Object(kept),
            serde_json::json!({"kind": "ping", "id": "w1", "kind2": 1}),
            "the last repeated member wins; escaped names match"
        );
        assert!(parse_object(body, &[]).unwrap().is_empty());
    }
}
