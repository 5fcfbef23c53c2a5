//! Closed-loop load: tasks that each send one request (or publish) at a time until the run ends,
//! a measurement window that leaves the warm-up out, and the tally each task keeps and hands back
//! when it stops. A request counts in the window when it completes inside it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cpu::{self, CpuUse};
use crate::latency::{Percentiles, Samples};

/// Run the load that `start` makes on a thread of its own ([`cpu::LOAD_THREAD`]) with a
/// single-threaded runtime, and read the CPU used over `window` beside it; return both. One
/// thread polls every load task, so a burst of answers is handled in one wake-up instead of
/// waking several workers, and the load takes as little as it can of the cores that the receiver
/// and the broker need. The thread stays until the CPU has been read, so that the reading at the
/// end of the window always counts it.
pub async fn on_load_thread<F, Fut, T>(window: Window, start: F) -> anyhow::Result<(T, CpuUse)>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let cpu = tokio::spawn(cpu::over(window));
    let (done, result) = oneshot::channel();
    let (release, held) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(cpu::LOAD_THREAD.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let outcome = match &runtime {
                Ok(runtime) => Ok(runtime.block_on(start())),
                Err(err) => Err(anyhow::anyhow!(
                    "cannot start the load thread's runtime: {err}"
                )),
            };
            let _ = done.send(outcome);
            let _ = held.blocking_recv();
        })
        .context("cannot start the load thread")?;
    let outcome = result
        .await
        .context("the load thread stopped without an answer")?;
    let cpu = cpu.await.context("the CPU reader panicked")?;
    drop(release);
    Ok((outcome?, cpu))
}

/// The warm-up and the measured period of one run.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub measure_from: Instant,
    pub end: Instant,
    pub duration: Duration,
}

impl Window {
    /// A window whose warm-up starts now.
    pub fn starting_now(warmup: Duration, duration: Duration) -> Self {
        let measure_from = Instant::now() + warmup;
        Self {
            measure_from,
            end: measure_from + duration,
            duration,
        }
    }

    /// Whether load tasks should send another request.
    pub fn running(&self) -> bool {
        Instant::now() < self.end
    }

    /// Whether a request completed at `done` is measured.
    pub fn measures(&self, done: Instant) -> bool {
        done >= self.measure_from && done <= self.end
    }
}

/// What one load task saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Successes in the measured window.
    pub measured_ok: u64,
    /// Successes at any time (warm-up and the window's edges included).
    pub total_ok: u64,
    /// Failures at any time, by kind (`status 503`, `transport`, `nacked`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Latency of the measured successes.
    pub samples: Samples,
}

impl Tally {
    /// Count a success that took from `started` to `done`.
    pub fn ok(&mut self, window: &Window, started: Instant, done: Instant) {
        self.total_ok += 1;
        if window.measures(done) {
            self.measured_ok += 1;
            self.samples.record(done - started);
        }
    }

    /// Count a failure of `kind`.
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        self.measured_ok += other.measured_ok;
        self.total_ok += other.total_ok;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.samples.merge(other.samples);
    }

    /// The figures of `measured` seconds of windows (one window's duration, or the sum of
    /// several whose tallies were merged).
    pub fn summary(mut self, measured: Duration) -> Throughput {
        let seconds = measured.as_secs_f64().max(f64::EPSILON);
        Throughput {
            per_second: self.measured_ok as f64 / seconds,
            measured: self.measured_ok,
            total: self.total_ok,
            errors: self.errors.values().sum(),
            error_kinds: self.errors.clone(),
            latency: self.samples.percentiles(),
        }
    }
}

/// Successes per second over the window, their latency, and every failure.
#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub per_second: f64,
    /// Successes in the measured window.
    pub measured: u64,
    /// Successes during the whole run, warm-up included.
    pub total: u64,
    /// Failures during the whole run.
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Percentiles,
}

impl Throughput {
    /// `12345.6/s, p50 1.23 ms, p99 4.56 ms, 0 errors`.
    pub fn line(&self, unit: &str) -> String {
        let mut line = format!(
            "{:.0} {unit}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            self.per_second, self.latency.p50_ms, self.latency.p99_ms, self.errors
        );
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            line.push_str(&format!(" ({})", kinds.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_load_thread_is_counted_to_the_end_of_the_window() {
        let window = Window::starting_now(Duration::ZERO, Duration::from_millis(300));
        let (spins, used) = on_load_thread(window, move || async move {
            // Busy until the window ends, then done at once: the thread must still be counted.
            let mut spins = 0u64;
            while window.running() {
                spins = std::hint::black_box(spins + 1);
            }
            spins
        })
        .await
        .unwrap();
        assert!(spins > 0);
        assert!(used.components["load"] > 0.0, "{used:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn only_completions_inside_the_window_are_measured() {
        let window = Window::starting_now(Duration::from_secs(2), Duration::from_secs(10));
        let start = Instant::now();
        let mut tally = Tally::default();

        // Started in the warm-up, done in the window: measured.
        tally.ok(
            &window,
            start + Duration::from_secs(1),
            start + Duration::from_secs(3),
        );
        // Done in the warm-up, and done after the end: counted in the total only.
        tally.ok(&window, start, start + Duration::from_secs(1));
        tally.ok(
            &window,
            start + Duration::from_secs(11),
            start + Duration::from_secs(13),
        );
        tally.error("status 503");

        let mut other = Tally::default();
        other.ok(
            &window,
            start + Duration::from_secs(5),
            start + Duration::from_millis(5_004),
        );
        other.error("status 503");
        other.error("transport");
        tally.merge(other);

        let summary = tally.summary(window.duration);
        assert_eq!(summary.measured, 2);
        assert_eq!(summary.total, 4);
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.error_kinds["status 503"], 2);
        assert!((summary.per_second - 0.2).abs() < 1e-9);
        assert_eq!(summary.latency.p50_ms, 4.0);
        assert_eq!(summary.latency.p99_ms, 2000.0);
        assert!(
            summary
                .line("requests")
                .contains("(status 503: 2, transport: 1)")
        );

        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(!window.running());
    }
}
