//! Rate-limit emulation: a fixed window that admits a set number of requests and tells the rest
//! how long to wait, as both providers' 429 answers do.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// A fixed window of `length` that starts with the first request after the previous one ended.
#[derive(Debug)]
pub(crate) struct FixedWindow {
    limit: u32,
    length: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    admitted: u32,
}

impl FixedWindow {
    pub(crate) fn new(limit: u32, length: Duration) -> Self {
        Self {
            limit,
            length,
            state: Mutex::new(Window::default()),
        }
    }

    /// Admits one request at `now`, or says how long until the window ends (at least one second,
    /// rounded up, as the providers answer in whole seconds).
    pub(crate) fn admit(&self, now: Instant) -> Result<(), u64> {
        let mut window = self.state.lock().unwrap_or_else(PoisonError::into_inner);

        let ends = match window.started {
            Some(started) if now < started + self.length => started + self.length,
            _ => {
                *window = Window {
                    started: Some(now),
                    admitted: 0,
                };
                now + self.length
            }
        };

        if window.admitted < self.limit {
            window.admitted += 1;
            return Ok(());
        }
        let left = ends.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Err(secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_past_the_limit_waits_for_the_window_to_end() {
        let window = FixedWindow::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(window.admit(start), Ok(()));
        assert_eq!(window.admit(start + Duration::from_secs(10)), Ok(()));
        assert_eq!(window.admit(start + Duration::from_millis(10_500)), Err(50));
        assert_eq!(window.admit(start + Duration::from_millis(59_999)), Err(1));

        // A new window starts with the first request after the old one ended.
        let later = start + Duration::from_secs(60);
        assert_eq!(window.admit(later), Ok(()));
        assert_eq!(window.admit(later), Ok(()));
        assert_eq!(window.admit(later + Duration::from_secs(1)), Err(59));
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let window = FixedWindow::new(0, Duration::from_secs(1));
        let now = Instant::now();
        assert_eq!(window.admit(now), Err(1));
        assert_eq!(window.admit(now + Duration::from_secs(5)), Err(1));
    }
}
