//! The bodies the benchmarks send, built deterministically: the same arguments always give the
//! same bytes, and every body is one the worker or the relay maps without complaint, so a
//! benchmark measures the path a real message takes and never the dead-letter path.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Ordinary text used to pad a body to its size (plain ASCII: one byte per character, nothing to
/// escape).
const FILLER: &str = "Three things to try this week: saved views, scheduled exports, team spaces. ";

/// Plans a profile update can name.
const PLANS: [&str; 4] = ["free", "starter", "growth", "enterprise"];

/// A Customer.io `event_id` unique to one run, load task and sequence number.
pub fn event_id(run: &str, task: usize, seq: u64) -> String {
    format!("bench-{run}-{task:03}-{seq:010}")
}

/// A Customer.io reporting webhook (`email` `opened`) of exactly `size` bytes when `size` is at
/// least the unpadded event's length (about 330 bytes); smaller sizes get the unpadded event.
pub fn reporting_event(event_id: &str, person: usize, size: usize) -> Vec<u8> {
    ReportingBodies::new(event_id.len(), size).render(event_id, person)
}

/// Reporting events of one size, rendered without building a JSON tree each time: the padding
/// is worked out once for event ids of one length, so the load tasks spend their CPU on HTTP,
/// not on making bodies.
#[derive(Clone, Debug)]
pub struct ReportingBodies {
    /// Padding for an event id of `id_len` bytes and a person number of five digits.
    filler: String,
    id_len: usize,
}

impl ReportingBodies {
    /// Bodies of `size` bytes for event ids of `id_len` bytes.
    pub fn new(id_len: usize, size: usize) -> Self {
        let unpadded = Self {
            filler: String::new(),
            id_len,
        }
        .render(&"0".repeat(id_len), 0)
        .len();
        Self {
            filler: filler(size.saturating_sub(unpadded)),
            id_len,
        }
    }

    /// The body for one event. `event_id` must need no JSON escaping (the ids of [`event_id`]
    /// never do); an id of another length than the one given to [`ReportingBodies::new`], or a
    /// person number over five digits, changes the size.
    pub fn render(&self, event_id: &str, person: usize) -> Vec<u8> {
        debug_assert_eq!(event_id.len(), self.id_len);
        format!(
            concat!(
                r#"{{"event_id":"{id}","object_type":"email","metric":"opened","#,
                r#""timestamp":1733140800,"data":{{"campaign_id":118,"action_id":502,"#,
                r#""delivery_id":"dgSmAQUAAAGT{person:016}","identifiers":{{"id":"user_{person:05}"}},"#,
                r#""subject":"{filler}","recipient":"user_{person:05}@example.org","#,
                r#""proxied":false,"prefetched":false}}}}"#
            ),
            id = event_id,
            person = person,
            filler = self.filler,
        )
        .into_bytes()
    }
}

/// A Customer.io workflow body for the profiles route: `uid` and a few properties drawn from
/// `rng`.
pub fn profile_update(uid: usize, rng: &mut StdRng) -> Vec<u8> {
    encode(&json!({
        "uid": format!("user_{uid:05}"),
        "plan": PLANS[rng.random_range(0..PLANS.len())],
        "seats": rng.random_range(1..500),
        "upsell_readiness_score": rng.random_range(0..100),
        "trial_ends_at": "2026-12-24T00:00:00Z"
    }))
}

/// `count` profile updates spread over `uids` uids, the same ones for the same seed.
pub fn profile_updates(count: usize, uids: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let uids = uids.max(1);
    (0..count)
        .map(|_| {
            let uid = rng.random_range(0..uids);
            profile_update(uid, &mut rng)
        })
        .collect()
}

/// A Chameleon `tour.completed` webhook numbered `index` (its `id` is unique per index), about
/// the person `user_<person>`, sent at `sent_at` (RFC 3339).
pub fn tour_completed(index: usize, person: usize, sent_at: &str) -> Vec<u8> {
    let id = |offset: u128| format!("{:024x}", 0x6750_a1b2_0000_0000_0000_0000_u128 + offset);
    encode(&json!({
        "id": id(index as u128 * 8),
        "kind": "tour.completed",
        "sent_at": sent_at,
        "data": {
            "action": {"id": id(index as u128 * 8 + 1), "group_kind": "launcher", "group_id": null},
            "profile": {"id": id(index as u128 * 8 + 2), "uid": format!("user_{person:05}")},
            "tour": {"id": "6750a1b2c3d4e5f6a7b8c9d4", "name": "Reports onboarding"},
            "step": {"id": "6750a1b2c3d4e5f6a7b8c9e2", "title": "You're all set"}
        }
    }))
}

fn filler(len: usize) -> String {
    FILLER.chars().cycle().take(len).collect()
}

fn encode(value: &Value) -> Vec<u8> {
    // Serialising a `Value` built in this file cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use sync_core::Source;
    use sync_core::inbound::{self, ChameleonCall, InboundOptions};
    use sync_core::outbound::{self, OutboundOptions};

    use super::*;

    #[test]
    fn reporting_events_have_the_asked_size_and_map_to_a_chameleon_event() {
        let id = event_id("run1", 7, 42);
        let body = reporting_event(&id, 12, 1024);
        assert_eq!(body.len(), 1024);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(inbound::reporting_event_id(&value), Some(id));

        let mapped = inbound::map(
            Source::CustomerioReporting,
            &body,
            &InboundOptions::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(mapped.call.kind(), "event");
        assert_eq!(mapped.call.uid(), Some("user_00012"));
        assert_eq!(mapped.truncated, 0, "the padding stays under 768 bytes");

        assert!(
            reporting_event("x", 1, 10).len() > 10,
            "too small: unpadded"
        );
        assert_eq!(reporting_event("x", 1, 4096).len(), 4096);
    }

    #[test]
    fn event_ids_differ_by_run_task_and_sequence() {
        let ids = [
            event_id("a", 1, 1),
            event_id("b", 1, 1),
            event_id("a", 2, 1),
            event_id("a", 1, 2),
        ];
        for (i, id) in ids.iter().enumerate() {
            assert!(!ids[i + 1..].contains(id), "{id} repeats");
        }
    }

    #[test]
    fn profile_updates_are_seeded_spread_and_mappable() {
        let first = profile_updates(2_000, 50, 7);
        assert_eq!(first, profile_updates(2_000, 50, 7));
        assert_ne!(first, profile_updates(2_000, 50, 8));

        let mut uids = std::collections::HashSet::new();
        for body in &first {
            let mapped = inbound::map(Source::CustomerioProfiles, body, &InboundOptions::default())
                .unwrap()
                .unwrap();
            let ChameleonCall::Profile(profile) = mapped.call else {
                panic!("not a profile update");
            };
            assert_eq!(mapped.renamed, 0);
            uids.insert(profile["uid"].as_str().unwrap().to_owned());
        }
        assert_eq!(uids.len(), 50, "every uid gets updates");
    }

    #[test]
    fn tour_webhooks_have_unique_ids_and_map_to_customerio_events() {
        let sent_at = "2026-12-02T12:03:41.004Z";
        let first = tour_completed(0, 3, sent_at);
        let second = tour_completed(1, 3, sent_at);
        let id = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap()["id"].clone();
        assert_ne!(id(&first), id(&second));
        assert_eq!(id(&first).as_str().unwrap().len(), 24);

        let event = outbound::map(
            Source::ChameleonWebhook,
            &first,
            &OutboundOptions::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(event.name, "Completed Tour (Chameleon)");
        assert_eq!(event.identifier.value(), "user_00003");
    }
}
