//! The journal: every request the stand-ins received, in arrival order, with the status they
//! answered. Tests read it to see what a client really sent; nothing secret is kept in it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Which provider a request was addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Upstream {
    /// Chameleon's REST API (`/v3/...`).
    Chameleon,
    /// Customer.io's Track API (`/api/...`).
    Customerio,
}

impl Upstream {
    /// The upstream that owns a request path, if either does.
    pub fn of_path(path: &str) -> Option<Self> {
        if path.starts_with("/v3/") {
            Some(Self::Chameleon)
        } else if path.starts_with("/api/") {
            Some(Self::Customerio)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chameleon => "chameleon",
            Self::Customerio => "customerio",
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the sandbox saw it. Headers are not kept at all, so credentials never are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// Arrival order, from 1, unique within one sandbox.
    pub seq: u64,
    pub upstream: Upstream,
    pub method: String,
    /// The request path without its query string, with any configured credential masked.
    pub path: String,
    /// The status the sandbox answered.
    pub status: u16,
    /// The body as JSON; a body that is not JSON is kept as a string, an empty one as `null`.
    pub body: serde_json::Value,
    /// When the request arrived, unix milliseconds.
    pub received_at_ms: i64,
}

impl Recorded {
    /// True when the sandbox answered 2xx (for batches: at least part of it was accepted).
    pub fn is_accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The shared, append-only record of requests, with a wake-up for anyone waiting on it.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    next_seq: AtomicU64,
    entries: Mutex<Vec<Recorded>>,
    changed: Notify,
}

impl Journal {
    /// Reserves the sequence number of a request that just arrived.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Adds an answered request and wakes the waiters.
    pub(crate) fn push(&self, entry: Recorded) {
        self.lock().push(entry);
        self.changed.notify_waiters();
    }

    /// Everything recorded, in arrival order (a slow request is recorded once it is answered,
    /// but still sorts by when it arrived).
    pub(crate) fn snapshot(&self) -> Vec<Recorded> {
        let mut entries = self.lock().clone();
        entries.sort_by_key(|entry| entry.seq);
        entries
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.changed.notify_waiters();
    }

    /// Resolves on the next change; enable it before reading, so no change is missed between.
    pub(crate) fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        // A panic while holding the lock cannot leave a half-pushed vector behind.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, status: u16) -> Recorded {
        Recorded {
            seq,
            upstream: Upstream::Chameleon,
            method: "POST".into(),
            path: "/v3/observe/hooks/events".into(),
            status,
            body: serde_json::Value::Null,
            received_at_ms: 0,
        }
    }

    #[test]
    fn snapshot_is_in_arrival_order_even_when_answers_finish_out_of_order() {
        let journal = Journal::default();
        let (first, second) = (journal.next_seq(), journal.next_seq());
        journal.push(entry(second, 200));
        journal.push(entry(first, 503));
        let seqs: Vec<u64> = journal.snapshot().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn upstream_is_told_by_path_and_serialises_lower_case() {
        assert_eq!(
            Upstream::of_path("/v3/observe/hooks/profiles"),
            Some(Upstream::Chameleon)
        );
        assert_eq!(
            Upstream::of_path("/api/v2/batch"),
            Some(Upstream::Customerio)
        );
        assert_eq!(Upstream::of_path("/_sandbox/healthz"), None);
        assert_eq!(
            serde_json::to_string(&Upstream::Customerio).unwrap(),
            "\"customerio\""
        );
        assert!(entry(1, 202).is_accepted());
        assert!(!entry(1, 429).is_accepted());
    }
}
