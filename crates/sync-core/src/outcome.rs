//! What one delivery attempt ends in ([`Outcome`]), and the instruction the queue receives for
//! the message afterwards ([`Settlement`]). Classification (is this failure transient?) happens in
//! the API clients; scheduling (how long to wait, when to give up) happens in [`crate::retry`].

use std::time::Duration;

/// Why a message failed: kept on dead letters as `dead_reason`, `last_status`, `last_error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// A short stable reason: `upstream_rejected`, `no_identity`, `malformed`, ...
    pub reason: String,
    /// The upstream's HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The upstream's message or the local error, for operators.
    pub error: String,
}

impl Failure {
    pub fn new(reason: impl Into<String>, status: Option<u16>, error: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            status,
            error: error.into(),
        }
    }
}

/// The result of trying to deliver one message upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream accepted it.
    Delivered,
    /// Nothing to deliver by design (a `ping`, a metric filtered out by configuration).
    Filtered { reason: &'static str },
    /// A transient failure: try again, no sooner than `after` when the upstream said so.
    Retry {
        after: Option<Duration>,
        failure: Failure,
    },
    /// A permanent failure: retrying cannot help.
    Dead(Failure),
}

/// What the queue does with a delivered message once its attempt is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// Done (delivered or filtered): remove it.
    Ack,
    /// Queue a copy for another attempt after `delay`, then remove this one.
    Retry { delay: Duration, failure: Failure },
    /// Queue a copy in the dead-letter queue with its reason, then remove this one.
    Dead(Failure),
}
