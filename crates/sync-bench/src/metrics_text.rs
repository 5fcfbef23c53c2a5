//! Reading the daemon's `/metrics` page (Prometheus text format): the sum of one counter over
//! the series whose labels match.

/// The sum of every sample of `name` whose labels include each `(label, value)` of `want`.
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| sample(line.trim()))
        .filter(|sample| sample.name == name)
        .filter(|sample| {
            want.iter()
                .all(|(label, value)| sample.labels.iter().any(|(l, v)| l == label && v == value))
        })
        .map(|sample| sample.value)
        // A fold from +0.0, because an empty float `sum` is -0.0 and would print as "-0".
        .fold(0.0, |total, value| total + value)
}

/// One sample line.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

/// `name{label="value",...} 12` or `name 12`; comments and unreadable lines give `None`.
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The labels after `{`, and what follows the closing `}`.
fn labels(mut text: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (label, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => {
                    let (_, escaped) = chars.next()?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                (index, '"') => break index,
                (_, other) => value.push(other),
            }
        };
        labels.push((label.trim(), value));
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# TYPE ccsync_outcomes_total counter
ccsync_outcomes_total{direction="inbound",source="customerio.profiles",outcome="delivered"} 40000
ccsync_outcomes_total{direction="inbound",source="customerio.reporting",outcome="delivered"} 7
ccsync_outcomes_total{direction="inbound",source="customerio.profiles",outcome="dead_lettered"} 3
ccsync_outcomes_total{direction="outbound",source="chameleon.webhook",outcome="delivered"} 1.5e4
ccsync_updates_coalesced_total 35000
ccsync_odd{note="a \"quoted\", comma"} 2
"#;

    #[test]
    fn sums_the_matching_series() {
        let inbound = [("direction", "inbound"), ("outcome", "delivered")];
        assert_eq!(sum(PAGE, "ccsync_outcomes_total", &inbound), 40_007.0);
        let profiles = [("source", "customerio.profiles"), ("outcome", "delivered")];
        assert_eq!(sum(PAGE, "ccsync_outcomes_total", &profiles), 40_000.0);
        let outbound = [("direction", "outbound")];
        assert_eq!(sum(PAGE, "ccsync_outcomes_total", &outbound), 15_000.0);
        assert_eq!(sum(PAGE, "ccsync_updates_coalesced_total", &[]), 35_000.0);
        assert_eq!(sum(PAGE, "ccsync_outcomes", &[]), 0.0, "names match whole");
        assert_eq!(format!("{:.0}", sum(PAGE, "missing", &[])), "0");
        assert_eq!(
            sum(PAGE, "ccsync_odd", &[("note", "a \"quoted\", comma")]),
            2.0
        );
        assert_eq!(sum("garbage{ 1\n", "garbage", &[]), 0.0);
    }
}
