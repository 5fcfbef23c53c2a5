//! The envelope: one accepted message as it travels through the queue. The receiver stores the
//! provider's raw body untouched ("store raw, transform late") with the metadata the worker, the
//! relay and operators need; mapping happens only when the message is delivered.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Which way a message flows, and so which work queue holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Customer.io -> Chameleon, consumed by the worker.
    Inbound,
    /// Chameleon -> Customer.io, consumed by the relay.
    Outbound,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    /// The queue-name suffix: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            other => Err(format!(
                "unknown direction {other:?} (expected inbound or outbound)"
            )),
        }
    }
}

/// Where a message came from. Its routing key is the queue contract's (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Source {
    /// One Customer.io reporting webhook event.
    #[serde(rename = "customerio.reporting")]
    CustomerioReporting,
    /// A Customer.io workflow webhook setting Chameleon user properties.
    #[serde(rename = "customerio.profiles")]
    CustomerioProfiles,
    /// A Customer.io workflow webhook setting Chameleon company properties.
    #[serde(rename = "customerio.companies")]
    CustomerioCompanies,
    /// A Customer.io workflow webhook logging one Chameleon user event.
    #[serde(rename = "customerio.events")]
    CustomerioEvents,
    /// One Chameleon outgoing webhook.
    #[serde(rename = "chameleon.webhook")]
    ChameleonWebhook,
    /// A ready-made tour event published straight onto the exchange by another producer.
    #[serde(rename = "chameleon.event")]
    ChameleonEvent,
}

impl Source {
    pub const ALL: [Source; 6] = [
        Source::CustomerioReporting,
        Source::CustomerioProfiles,
        Source::CustomerioCompanies,
        Source::CustomerioEvents,
        Source::ChameleonWebhook,
        Source::ChameleonEvent,
    ];

    /// The routing key, which is also the `source` header.
    pub fn routing_key(self) -> &'static str {
        match self {
            Source::CustomerioReporting => "customerio.reporting",
            Source::CustomerioProfiles => "customerio.profiles",
            Source::CustomerioCompanies => "customerio.companies",
            Source::CustomerioEvents => "customerio.events",
            Source::ChameleonWebhook => "chameleon.webhook",
            Source::ChameleonEvent => "chameleon.event",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            Source::CustomerioReporting
            | Source::CustomerioProfiles
            | Source::CustomerioCompanies
            | Source::CustomerioEvents => Direction::Inbound,
            Source::ChameleonWebhook | Source::ChameleonEvent => Direction::Outbound,
        }
    }

    pub fn from_routing_key(key: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.routing_key() == key)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.routing_key())
    }
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::from_routing_key(s).ok_or_else(|| format!("unknown source {s:?}"))
    }
}

/// One queued message: the raw body and its metadata headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// ULID assigned on receipt; kept across retries and replays.
    pub message_id: String,
    pub source: Source,
    /// When the receiver accepted it, unix milliseconds.
    pub received_at: i64,
    /// Which delivery attempt this copy is for, starting at 1.
    pub attempt: u32,
    /// The provider's own id for the event (`event_id`, idempotency key, webhook `id`).
    pub provider_event_id: Option<String>,
    /// When the first attempt failed, unix milliseconds; set on the first retry.
    pub first_failed_at: Option<i64>,
    /// The provider's body, byte for byte.
    pub body: Bytes,
}

impl Envelope {
    /// A fresh envelope for a body just received.
    pub fn new(source: Source, body: Bytes, provider_event_id: Option<String>) -> Self {
        Self {
            message_id: ulid::Ulid::new().to_string(),
            source,
            received_at: crate::time::now_ms(),
            attempt: 1,
            provider_event_id,
            first_failed_at: None,
            body,
        }
    }

    pub fn direction(&self) -> Direction {
        self.source.direction()
    }

    /// The copy to queue for the next attempt after a failure at `now_ms`.
    pub fn next_attempt(&self, now_ms: i64) -> Envelope {
        Envelope {
            attempt: self.attempt.saturating_add(1),
            first_failed_at: Some(self.first_failed_at.unwrap_or(now_ms)),
            ..self.clone()
        }
    }

    /// The copy to queue when an operator replays a dead letter: same id, attempts start over.
    pub fn replayed(&self) -> Envelope {
        Envelope {
            attempt: 1,
            first_failed_at: None,
            ..self.clone()
        }
    }

    /// How long ago it was received, in milliseconds.
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.received_at)
    }
}

/// Header names on every queued message (DESIGN §4).
pub mod headers {
    pub const MESSAGE_ID: &str = "message_id";
    pub const SOURCE: &str = "source";
    pub const RECEIVED_AT: &str = "received_at";
    pub const ATTEMPT: &str = "attempt";
    pub const PROVIDER_EVENT_ID: &str = "provider_event_id";
    pub const FIRST_FAILED_AT: &str = "first_failed_at";
    pub const DEAD_REASON: &str = "dead_reason";
    pub const DEAD_AT: &str = "dead_at";
    pub const LAST_STATUS: &str = "last_status";
    pub const LAST_ERROR: &str = "last_error";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_round_trip() {
        for source in Source::ALL {
            assert_eq!(Source::from_routing_key(source.routing_key()), Some(source));
            assert_eq!(source.routing_key().parse::<Source>(), Ok(source));
        }
        assert_eq!(Source::from_routing_key("customerio.unknown"), None);
    }

    #[test]
    fn retries_keep_id_and_first_failure() {
        let first = Envelope::new(Source::ChameleonWebhook, Bytes::from_static(b"{}"), None);
        let second = first.next_attempt(10);
        let third = second.next_attempt(20);
        assert_eq!(third.message_id, first.message_id);
        assert_eq!(third.attempt, 3);
        assert_eq!(third.first_failed_at, Some(10));
        let replayed = third.replayed();
        assert_eq!((replayed.attempt, replayed.first_failed_at), (1, None));
        assert_eq!(replayed.message_id, first.message_id);
    }
}
