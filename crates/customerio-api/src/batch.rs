//! The Track API request bodies (the v1 event and the v2 event operation), Customer.io's size
//! limits on them, and [`plan_batches`], which splits events into v2 batches within those limits.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use sync_core::outbound::TrackEvent;

/// A v2 batch request body must stay under this many bytes.
pub const MAX_BATCH_BYTES: usize = 500 * 1000;

/// Each v2 operation, serialised, must stay under this many bytes.
pub const MAX_OP_BYTES: usize = 32 * 1000;

/// `{"batch":[` and `]}` around the operations.
const BATCH_ENVELOPE_BYTES: usize = r#"{"batch":[]}"#.len();

/// The v1 body: `{"name","id","timestamp","data"}`.
#[derive(Serialize)]
pub(crate) struct V1Event<'a> {
    name: &'a str,
    id: &'a str,
    timestamp: i64,
    data: &'a Map<String, Value>,
}

impl<'a> From<&'a TrackEvent> for V1Event<'a> {
    fn from(event: &'a TrackEvent) -> Self {
        Self {
            name: &event.name,
            id: &event.id,
            timestamp: event.timestamp,
            data: &event.attributes,
        }
    }
}

/// The v2 person event operation: `{"type":"person","identifiers":{..},"action":"event",..}`.
/// Build it with [`batch_operation`] and serialise it.
#[derive(Debug, Serialize)]
pub struct EventOp<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    identifiers: Identifiers<'a>,
    action: &'static str,
    name: &'a str,
    id: &'a str,
    timestamp: i64,
    attributes: &'a Map<String, Value>,
}

impl<'a> From<&'a TrackEvent> for EventOp<'a> {
    fn from(event: &'a TrackEvent) -> Self {
        Self {
            kind: "person",
            identifiers: Identifiers(event),
            action: "event",
            name: &event.name,
            id: &event.id,
            timestamp: event.timestamp,
            attributes: &event.attributes,
        }
    }
}

/// `{"id": ..}` or `{"email": ..}`: exactly one identifier, as v2 requires.
#[derive(Debug)]
struct Identifiers<'a>(&'a TrackEvent);

impl Serialize for Identifiers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let identifier = &self.0.identifier;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(identifier.kind(), identifier.value())?;
        map.end()
    }
}

/// The v2 batch body: `{"batch": [op, ...]}`.
#[derive(Serialize)]
pub(crate) struct Batch<'a> {
    batch: Vec<EventOp<'a>>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(events: &'a [TrackEvent]) -> Self {
        Self {
            batch: events.iter().map(EventOp::from).collect(),
        }
    }
}

/// The v2 event operation for `event`, exactly as [`crate::TrackClient::send_batch`] sends it.
pub fn batch_operation(event: &TrackEvent) -> EventOp<'_> {
    EventOp::from(event)
}

/// Serialised size of an event's v2 operation, in bytes.
pub fn op_bytes(event: &TrackEvent) -> usize {
    // Serialising maps of JSON values cannot fail; a failure would count as oversized.
    serde_json::to_vec(&batch_operation(event)).map_or(usize::MAX, |op| op.len())
}

/// Splits `events` into v2 batches, in order, each under [`MAX_BATCH_BYTES`] as a request
/// body. Returns the batches as indexes into `events`, and apart from them the indexes of events
/// whose operation alone is not under [`MAX_OP_BYTES`]: Customer.io would refuse those, so they
/// are not sent.
pub fn plan_batches(events: &[TrackEvent]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut batches = Vec::new();
    let mut oversized = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = BATCH_ENVELOPE_BYTES;

    for (index, event) in events.iter().enumerate() {
        let bytes = op_bytes(event);
        if bytes >= MAX_OP_BYTES {
            oversized.push(index);
            continue;
        }

        // Every operation after the first is preceded by a comma.
        let added = bytes + usize::from(!current.is_empty());
        if current_bytes + added >= MAX_BATCH_BYTES {
            batches.push(std::mem::take(&mut current));
            current_bytes = BATCH_ENVELOPE_BYTES;
            current.push(index);
            current_bytes += bytes;
        } else {
            current.push(index);
            current_bytes += added;
        }
    }

    if !current.is_empty() {
        batches.push(current);
    }
    (batches, oversized)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sync_core::outbound::Identifier;

    use super::*;

    /// An event whose v2 operation is exactly `bytes` long.
    fn event_of(bytes: usize) -> TrackEvent {
        let mut event = TrackEvent {
            identifier: Identifier::Id("user_3120".to_owned()),
            name: "Completed Tour (Chameleon)".to_owned(),
            id: "01JF2R0000ABCDEFGHJKMNPQRS".to_owned(),
            timestamp: 1_735_725_660,
            attributes: Map::new(),
        };
        event.attributes.insert("pad".to_owned(), json!(""));
        let base = op_bytes(&event);
        event
            .attributes
            .insert("pad".to_owned(), json!("x".repeat(bytes - base)));
        event
    }

    fn body_len(events: &[TrackEvent], batch: &[usize]) -> usize {
        let chosen: Vec<TrackEvent> = batch.iter().map(|i| events[*i].clone()).collect();
        serde_json::to_vec(&Batch::new(&chosen)).map_or(0, |b| b.len())
    }

    #[test]
    fn the_v2_operation_has_customerios_shape() {
        let mut event = event_of(200);
        event.identifier = Identifier::Email("mira@example.org".to_owned());
        event.attributes = Map::from_iter([("tour_id".to_owned(), json!("t1"))]);
        let op = serde_json::to_value(EventOp::from(&event)).unwrap_or_default();
        assert_eq!(
            op,
            json!({
                "type": "person",
                "identifiers": {"email": "mira@example.org"},
                "action": "event",
                "name": "Completed Tour (Chameleon)",
                "id": "01JF2R0000ABCDEFGHJKMNPQRS",
                "timestamp": 1_735_725_660,
                "attributes": {"tour_id": "t1"}
            })
        );
        let v1 = serde_json::to_value(V1Event::from(&event)).unwrap_or_default();
        assert_eq!(
            v1,
            json!({
                "name": "Completed Tour (Chameleon)",
                "id": "01JF2R0000ABCDEFGHJKMNPQRS",
                "timestamp": 1_735_725_660,
                "data": {"tour_id": "t1"}
            })
        );
    }

    #[test]
    fn small_events_share_one_batch_in_order() {
        let events: Vec<_> = (0..5).map(|_| event_of(300)).collect();
        assert_eq!(plan_batches(&events), (vec![vec![0, 1, 2, 3, 4]], vec![]));
        assert_eq!(plan_batches(&[]), (vec![], vec![]));
    }

    #[test]
    fn an_operation_over_the_op_limit_is_set_apart() {
        let events = vec![
            event_of(500),
            event_of(MAX_OP_BYTES),
            event_of(MAX_OP_BYTES - 1),
        ];
        assert_eq!(plan_batches(&events), (vec![vec![0, 2]], vec![1]));
    }

    #[test]
    fn batches_stay_under_the_request_limit() {
        // 40 operations of 31,000 bytes make about 1.24 MB: three requests at least.
        let events: Vec<_> = (0..40).map(|_| event_of(31_000)).collect();
        let (batches, oversized) = plan_batches(&events);
        assert!(oversized.is_empty());
        assert_eq!(batches.len(), 3);
        let flat: Vec<usize> = batches.iter().flatten().copied().collect();
        assert_eq!(flat, (0..40).collect::<Vec<_>>());
        for batch in &batches {
            let len = body_len(&events, batch);
            assert!(len < MAX_BATCH_BYTES, "a batch body of {len} bytes");
        }
        // 16 operations fill a request to 496,000 bytes and more; a 17th would not fit.
        assert_eq!(batches[0].len(), 16);
    }

    #[test]
    fn a_body_one_byte_under_the_limit_is_one_batch_and_at_it_two() {
        // 16 operations of 31,000 bytes make a body of 496,027 bytes; the 17th takes the rest.
        let mut events: Vec<_> = (0..16).map(|_| event_of(31_000)).collect();
        events.push(event_of(3_971));
        let all: Vec<usize> = (0..17).collect();
        assert_eq!(body_len(&events, &all), MAX_BATCH_BYTES - 1);
        assert_eq!(plan_batches(&events), (vec![all], vec![]));

        events[16] = event_of(3_972);
        let (batches, _) = plan_batches(&events);
        assert_eq!(batches, vec![(0..16).collect::<Vec<_>>(), vec![16]]);
    }
}
