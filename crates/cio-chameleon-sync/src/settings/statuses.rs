//! `delivery.retryable_statuses` as written by people: single codes and inclusive ranges.
//!
//! A list reads `[408, "500-599"]` in the file and `408,500-599` in the environment, and
//! `config check` prints the effective list the same way, each run of consecutive codes as one
//! range, instead of a hundred numbers.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// One item of the list: a code, or a range of codes written `"FIRST-LAST"`.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum Item {
    Code(i64),
    Text(String),
}

impl Item {
    /// The codes this item stands for, in order.
    fn codes(&self) -> Result<std::ops::RangeInclusive<u16>, String> {
        let code = |value: i64| {
            u16::try_from(value).map_err(|_| format!("{value} is not an HTTP status (100 to 599)"))
        };
        let parse = |text: &str| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| {
                    format!("{text:?} is neither a status code nor a range such as \"500-599\"")
                })
                .and_then(code)
        };
        match self {
            Item::Code(value) => code(*value).map(|value| value..=value),
            Item::Text(text) => match text.split_once('-') {
                None => parse(text).map(|value| value..=value),
                Some((first, last)) => {
                    let (first, last) = (parse(first)?, parse(last)?);
                    if first > last {
                        return Err(format!("range {text:?} ends before it starts"));
                    }
                    Ok(first..=last)
                }
            },
        }
    }
}

/// Reads a list of codes and ranges into the codes, in the order written, each once.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u16>, D::Error> {
    struct List;

    impl<'de> Visitor<'de> for List {
        type Value = Vec<u16>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a list of HTTP status codes and ranges such as \"500-599\"")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Vec<u16>, A::Error> {
            let mut codes = Vec::new();
            while let Some(item) = items.next_element::<Item>()? {
                for code in item.codes().map_err(de::Error::custom)? {
                    if !codes.contains(&code) {
                        codes.push(code);
                    }
                }
            }
            Ok(codes)
        }
    }

    deserializer.deserialize_seq(List)
}

/// Writes the codes back as a list, each run of consecutive codes as one `"FIRST-LAST"` range.
pub fn serialize<S: Serializer>(codes: &[u16], serializer: S) -> Result<S::Ok, S::Error> {
    let runs = runs(codes);
    let mut seq = serializer.serialize_seq(Some(runs.len()))?;
    for (first, last) in runs {
        if first == last {
            seq.serialize_element(&Item::Code(first.into()))?;
        } else {
            seq.serialize_element(&Item::Text(format!("{first}-{last}")))?;
        }
    }
    seq.end()
}

/// Consecutive codes of the list as `(first, last)` pairs, in the list's order.
fn runs(codes: &[u16]) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &code in codes {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(code) => *last = code,
            _ => runs.push((code, code)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        #[serde(with = "super")]
        statuses: Vec<u16>,
    }

    fn read(toml_text: &str) -> Result<Vec<u16>, String> {
        toml::from_str::<Holder>(toml_text)
            .map(|holder| holder.statuses)
            .map_err(|err| err.message().to_owned())
    }

    #[test]
    fn codes_and_ranges_read_in_order_each_once() {
        assert_eq!(
            read(r#"statuses = [408, "500-503", "502", " 409 "]"#).unwrap(),
            vec![408, 500, 501, 502, 503, 409]
        );
        assert_eq!(read("statuses = []").unwrap(), Vec::<u16>::new());
    }

    #[test]
    fn malformed_items_say_what_is_wrong() {
        assert_eq!(
            read(r#"statuses = ["599-500"]"#).unwrap_err(),
            "range \"599-500\" ends before it starts"
        );
        assert_eq!(
            read(r#"statuses = ["5xx"]"#).unwrap_err(),
            "\"5xx\" is neither a status code nor a range such as \"500-599\""
        );
        assert_eq!(
            read("statuses = [70000]").unwrap_err(),
            "70000 is not an HTTP status (100 to 599)"
        );
        assert_eq!(
            read("statuses = [-1]").unwrap_err(),
            "-1 is not an HTTP status (100 to 599)"
        );
        assert!(read(r#"statuses = "500""#).is_err());
    }

    #[test]
    fn consecutive_codes_are_written_as_ranges() {
        let holder = Holder {
            statuses: [408]
                .into_iter()
                .chain(500..=599)
                .chain([409, 410, 302])
                .collect(),
        };
        let text = toml::to_string(&holder).unwrap();
        assert_eq!(
            text.trim(),
            r#"statuses = [408, "500-599", "409-410", 302]"#
        );
        assert_eq!(toml::from_str::<Holder>(&text).unwrap(), holder);
    }
}
