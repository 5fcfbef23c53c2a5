//! Process readiness, shared by the roles of one process: the receiver reads it for `/readyz`,
//! the worker and relay report whether their consumers run, and shutdown marks the process as
//! draining.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What `/readyz` needs to know besides the queue's own reachability.
#[derive(Debug, Default)]
pub struct Readiness {
    consumers_expected: AtomicUsize,
    consumers_running: AtomicUsize,
    draining: AtomicBool,
}

/// Why the process is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    Draining,
    /// Fewer consumers run than the process needs: starting, or resubscribing after the queue
    /// was lost.
    ConsumersNotRunning {
        running: usize,
        expected: usize,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Draining => f.write_str("shutting down"),
            NotReady::ConsumersNotRunning { running, expected } => write!(
                f,
                "{running} of {expected} queue consumers running (starting, or subscribing again \
                 after losing the queue)"
            ),
        }
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare one more consumer that must run before the process is ready.
    pub fn expect_consumer(&self) {
        self.consumers_expected.fetch_add(1, Ordering::SeqCst);
    }

    /// A consumer subscribed (or resubscribed after a broker loss).
    pub fn consumer_started(&self) {
        self.consumers_running.fetch_add(1, Ordering::SeqCst);
    }

    /// A consumer lost its subscription or stopped.
    pub fn consumer_stopped(&self) {
        let _ = self
            .consumers_running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Shutdown began: stop advertising readiness so load balancers move traffic away.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ready unless draining or a consumer is not running.
    pub fn check(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        let running = self.consumers_running.load(Ordering::SeqCst);
        let expected = self.consumers_expected.load(Ordering::SeqCst);
        if running < expected {
            return Err(NotReady::ConsumersNotRunning { running, expected });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_consumer_runs_and_until_draining() {
        let readiness = Readiness::new();
        assert_eq!(readiness.check(), Ok(()));
        readiness.expect_consumer();
        readiness.expect_consumer();
        readiness.consumer_started();
        assert!(readiness.check().is_err());
        assert_eq!(
            readiness.check().unwrap_err().to_string(),
            "1 of 2 queue consumers running (starting, or subscribing again after losing the queue)"
        );
        readiness.consumer_started();
        assert_eq!(readiness.check(), Ok(()));
        readiness.consumer_stopped();
        assert!(readiness.check().is_err());
        readiness.consumer_started();
        readiness.start_draining();
        assert_eq!(readiness.check(), Err(NotReady::Draining));
    }
}
