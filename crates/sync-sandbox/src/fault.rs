//! Injected faults: "answer the next N requests under this path like this", so that tests and
//! demos can see how a client copes with outages, rate limits and slow answers.
//!
//! A fault is checked before anything else (credentials, rate limits, validation), as a load
//! balancer or an overloaded upstream would answer before looking at the request. When several
//! faults match a path, the oldest one with requests left applies.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// A fault for the next `count` requests whose path starts with `path_prefix`.
///
/// As JSON (the body of `POST /_sandbox/faults`):
/// `{"path_prefix":"/api/v2/batch","count":2,"kind":{"type":"status","status":503}}`,
/// `{"path_prefix":"/v3/observe/hooks/events","kind":{"type":"rate_limit","wait_secs":12}}`,
/// `{"path_prefix":"/v3/","count":1,"kind":{"type":"delay","millis":1500}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// For example `/v3/observe/hooks/events` or `/api/v2/batch`; `/v3/observe/hooks/profiles`
    /// also covers `/v3/observe/hooks/profiles/batch`.
    pub path_prefix: String,
    /// How many requests it applies to (default 1).
    #[serde(default = "one")]
    pub count: u32,
    pub kind: FaultKind,
}

/// How a faulted request is answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer exactly this, whatever the request (a status outside 200-599 answers 500).
    Status {
        status: u16,
        #[serde(default)]
        body: String,
        #[serde(default)]
        headers: Vec<(String, String)>,
    },
    /// Answer `429` the way the path's upstream does: Chameleon with `{"code":429,...,"wait":N}`
    /// and `X-Ratelimit-Wait: N`, Customer.io with `Retry-After: N`.
    RateLimit { wait_secs: u64 },
    /// Wait this long, then answer normally.
    Delay { millis: u64 },
}

fn one() -> u32 {
    1
}

/// The faults still waiting for requests.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    armed: Mutex<Vec<Fault>>,
}

impl FaultTable {
    pub(crate) fn inject(&self, fault: Fault) {
        if fault.count > 0 {
            self.lock().push(fault);
        }
    }

    /// Takes one use of the oldest fault that matches `path`, dropping it once used up.
    pub(crate) fn take(&self, path: &str) -> Option<FaultKind> {
        let mut armed = self.lock();
        let index = armed
            .iter()
            .position(|fault| path.starts_with(&fault.path_prefix))?;
        let fault = &mut armed[index];
        fault.count -= 1;
        let kind = fault.kind.clone();
        if fault.count == 0 {
            armed.remove(index);
        }
        Some(kind)
    }

    /// The faults still armed, with the uses they have left.
    pub(crate) fn armed(&self) -> Vec<Fault> {
        self.lock().clone()
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Fault>> {
        // Every update is a single step on the vector, so a poisoned lock still holds a valid one.
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(prefix: &str, count: u32, millis: u64) -> Fault {
        Fault {
            path_prefix: prefix.into(),
            count,
            kind: FaultKind::Delay { millis },
        }
    }

    #[test]
    fn a_fault_applies_count_times_to_matching_paths_only() {
        let table = FaultTable::default();
        table.inject(delay("/api/v2/batch", 2, 5));
        assert_eq!(table.take("/v3/observe/hooks/events"), None);
        assert_eq!(
            table.take("/api/v2/batch"),
            Some(FaultKind::Delay { millis: 5 })
        );
        assert_eq!(
            table.take("/api/v2/batch"),
            Some(FaultKind::Delay { millis: 5 })
        );
        assert_eq!(table.take("/api/v2/batch"), None);
        assert!(table.armed().is_empty());
    }

    #[test]
    fn the_oldest_matching_fault_goes_first_and_zero_counts_are_ignored() {
        let table = FaultTable::default();
        table.inject(delay("/v3/", 0, 1));
        table.inject(delay("/v3/", 1, 2));
        table.inject(delay("/v3/observe", 1, 3));
        assert_eq!(
            table.take("/v3/observe/hooks/profiles"),
            Some(FaultKind::Delay { millis: 2 })
        );
        assert_eq!(
            table.take("/v3/observe/hooks/profiles"),
            Some(FaultKind::Delay { millis: 3 })
        );
        assert_eq!(table.take("/v3/observe/hooks/profiles"), None);
    }

    #[test]
    fn faults_read_from_json_with_defaults() {
        let fault: Fault = serde_json::from_str(
            r#"{"path_prefix":"/api/v2/batch","kind":{"type":"status","status":503}}"#,
        )
        .unwrap();
        assert_eq!(fault.count, 1);
        assert_eq!(
            fault.kind,
            FaultKind::Status {
                status: 503,
                body: String::new(),
                headers: vec![]
            }
        );
        let fault: Fault = serde_json::from_str(
            r#"{"path_prefix":"/v3/","count":3,"kind":{"type":"rate_limit","wait_secs":7}}"#,
        )
        .unwrap();
        assert_eq!(fault.kind, FaultKind::RateLimit { wait_secs: 7 });
    }
}
