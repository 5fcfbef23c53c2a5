//! Latency samples: each load task records its own, and they are merged once the run is over,
//! so that recording costs no lock on the hot path.

use std::time::Duration;

use serde::Serialize;

/// Request latencies in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    micros: Vec<u64>,
}

/// The percentiles a summary prints, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// p50, p99 and the maximum (nearest rank); zeros when nothing was recorded.
    pub fn percentiles(&mut self) -> Percentiles {
        self.micros.sort_unstable();
        Percentiles {
            p50_ms: to_ms(nearest_rank(&self.micros, 50.0)),
            p99_ms: to_ms(nearest_rank(&self.micros, 99.0)),
            max_ms: to_ms(self.micros.last().copied().unwrap_or(0)),
        }
    }
}

/// The smallest sample that at least `percent` of the samples do not exceed.
fn nearest_rank(sorted: &[u64], percent: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut samples = Samples::default();
        for ms in (1..=100).rev() {
            samples.record(Duration::from_millis(ms));
        }
        let p = samples.percentiles();
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
    }

    #[test]
    fn few_samples_and_none() {
        let mut one = Samples::default();
        one.record(Duration::from_micros(1500));
        assert_eq!(one.percentiles().p99_ms, 1.5);
        assert_eq!(Samples::default().percentiles(), Percentiles::default());

        let mut merged = Samples::default();
        merged.merge(one);
        merged.record(Duration::from_millis(9));
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.percentiles().p50_ms, 1.5);
    }
}
