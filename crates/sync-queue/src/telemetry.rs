//! The queue's counters, shared by both backends so their metrics cannot drift apart. Labels
//! are bounded: a direction, and a short fixed reason.

use sync_core::Direction;

pub(crate) fn published(direction: Direction) {
    metrics::counter!("ccsync_queue_published_total", "direction" => direction.as_str())
        .increment(1);
}

pub(crate) fn publish_failed(direction: Direction, reason: &'static str) {
    metrics::counter!(
        "ccsync_queue_publish_failures_total",
        "direction" => direction.as_str(),
        "reason" => reason
    )
    .increment(1);
}

pub(crate) fn retried(direction: Direction) {
    metrics::counter!("ccsync_queue_retried_total", "direction" => direction.as_str()).increment(1);
}

pub(crate) fn dead_lettered(direction: Direction, reason: &str) {
    metrics::counter!(
        "ccsync_queue_dead_lettered_total",
        "direction" => direction.as_str(),
        "reason" => reason_label(reason)
    )
    .increment(1);
}

/// Failure reasons are short snake-case words chosen in code; anything else (which would make
/// the label set unbounded) is counted as `other`.
fn reason_label(reason: &str) -> String {
    let short_word = !reason.is_empty()
        && reason.len() <= 64
        && reason
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if short_word {
        reason.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_outside_the_fixed_shape_become_other() {
        assert_eq!(
            reason_label("upstream_rejected_after_max_attempts"),
            "upstream_rejected_after_max_attempts"
        );
        assert_eq!(reason_label("Bad Request: 400"), "other");
        assert_eq!(reason_label(""), "other");
    }
}
