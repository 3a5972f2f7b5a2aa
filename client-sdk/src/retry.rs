//! Retry timing: full-jitter exponential backoff that honours the proxy's
//! `retry_after` and never runs past a call's deadline.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::Error;

/// Full-jitter exponential backoff ("Exponential Backoff And Jitter", AWS Architecture
/// Blog, 2015): retry `n` waits a uniformly random time in `0..=min(cap, base * 2^n)`.
/// Spreading retries over the whole window keeps clients that failed together from
/// retrying together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self { base: config.backoff_base, cap: config.backoff_cap }
    }

    /// The upper bound of retry `attempt`'s window (0 for the first retry).
    fn window(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random wait for retry `attempt`.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let window = self.window(attempt);
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..=nanos))
    }

    /// When to retry after `error` on retry `attempt`, or `None` if the retry could not
    /// finish before `deadline`: the jittered backoff, but never sooner than the proxy's
    /// `retry_after`.
    pub(crate) fn next_attempt(&self, attempt: u32, error: &Error, deadline: Instant) -> Option<Instant> {
        let wait = self.delay(attempt).max(error.retry_after().unwrap_or_default());
        let at = Instant::now() + wait;
        (at < deadline).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;

    fn backoff(base_ms: u64, cap_ms: u64) -> Backoff {
        let mut config = ClientConfig::new(vec![Endpoint::tcp("localhost", 1)]);
        config.backoff_base = Duration::from_millis(base_ms);
        config.backoff_cap = Duration::from_millis(cap_ms);
        Backoff::new(&config)
    }

    #[test]
    fn window_doubles_up_to_the_cap() {
        let backoff = backoff(10, 100);
        let windows: Vec<u64> = (0..6).map(|n| backoff.window(n).as_millis() as u64).collect();
        assert_eq!(windows, [10, 20, 40, 80, 100, 100]);
        assert_eq!(backoff.window(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn delay_stays_in_its_window() {
        let backoff = backoff(10, 100);
        for attempt in 0..8 {
            for _ in 0..200 {
                assert!(backoff.delay(attempt) <= backoff.window(attempt));
            }
        }
    }

    #[tokio::test]
    async fn honours_retry_after_and_the_deadline() {
        let backoff = backoff(1, 2);
        let busy = Error::Busy { message: String::new(), retry_after: Duration::from_millis(300) };
        let now = Instant::now();
        let at = backoff.next_attempt(0, &busy, now + Duration::from_secs(5)).unwrap();
        assert!(at >= now + Duration::from_millis(300));
        assert_eq!(backoff.next_attempt(0, &busy, now + Duration::from_millis(100)), None);
    }
}
