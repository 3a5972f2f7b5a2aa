//! Admission control: a token bucket per region, shaped to the KMS quota.
//!
//! A request takes a token; with none left it reserves the next one and waits for it,
//! unless that would be after its deadline, when it is refused at once (the caller
//! answers BUSY with the wait as retry-after). Reservations are first come, first
//! served, and never made past a deadline, so waiting work is bounded by the deadlines
//! and the per-key queues.
//!
//! Throttling answers halve the rate (at most once per 100 ms, as many requests in
//! flight are throttled together), down to 1% of the configured rate; it grows back
//! by 5% of the configured rate per second without throttling.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How quickly the rate recovers: fraction of the configured rate per second.
const RECOVERY_PER_SECOND: f64 = 0.05;
/// Throttles closer together than this shrink the rate once.
const THROTTLE_DEBOUNCE: Duration = Duration::from_millis(100);

/// One region's token bucket.
pub(crate) struct TokenBucket {
    configured: f64,
    burst: f64,
    state: Mutex<State>,
}

struct State {
    rate: f64,
    /// Tokens available; negative while requests hold reservations.
    tokens: f64,
    updated: Instant,
    last_throttle: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst);
        let state = State { rate, tokens: burst, updated: Instant::now(), last_throttle: None };
        Self { configured: rate, burst, state: Mutex::new(state) }
    }

    fn state(&self, now: Instant) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        if state.last_throttle.is_none_or(|at| now.saturating_duration_since(at) > Duration::from_secs(1)) {
            state.rate = (state.rate + self.configured * RECOVERY_PER_SECOND * elapsed).min(self.configured);
        }
        state.tokens = (state.tokens + state.rate * elapsed).min(self.burst);
        state.updated = now;
        state
    }

    /// Reserves one request: `Ok(wait)` to wait before sending, or `Err(retry_after)`
    /// if the request could not be sent before `deadline` (nothing is reserved).
    pub(crate) fn reserve(&self, now: Instant, deadline: Instant) -> Result<Duration, Duration> {
        let mut state = self.state(now);
        let wait = if state.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - state.tokens) / state.rate)
        };
        if now + wait > deadline {
            return Err(wait);
        }
        state.tokens -= 1.0;
        Ok(wait)
    }

    /// Takes a token only if one is free now (for health probes).
    pub(crate) fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state(now);
        let free = state.tokens >= 1.0;
        if free {
            state.tokens -= 1.0;
        }
        free
    }

    /// KMS throttled a request: shrinks the rate and drops the saved-up burst.
    /// Returns the new rate.
    pub(crate) fn throttled(&self, now: Instant) -> f64 {
        let mut state = self.state(now);
        if state.last_throttle.is_none_or(|at| now.saturating_duration_since(at) > THROTTLE_DEBOUNCE) {
            state.rate = (state.rate / 2.0).max(self.configured / 100.0);
            state.tokens = state.tokens.min(0.0);
        }
        state.last_throttle = Some(now);
        state.rate
    }

    /// The current rate limit, requests per second.
    pub(crate) fn rate(&self) -> f64 {
        self.state(Instant::now()).rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10.0, 2);
        let now = Instant::now();
        let far = now + Duration::from_secs(60);
        assert_eq!(bucket.reserve(now, far), Ok(Duration::ZERO));
        assert_eq!(bucket.reserve(now, far), Ok(Duration::ZERO));
        let third = bucket.reserve(now, far).unwrap();
        let fourth = bucket.reserve(now, far).unwrap();
        assert!((third.as_secs_f64() - 0.1).abs() < 1e-6, "{third:?}");
        assert!((fourth.as_secs_f64() - 0.2).abs() < 1e-6, "{fourth:?}");
    }

    #[test]
    fn refuses_what_would_miss_its_deadline_without_reserving() {
        let bucket = TokenBucket::new(10.0, 1);
        let now = Instant::now();
        assert_eq!(bucket.reserve(now, now), Ok(Duration::ZERO));
        let refused = bucket.reserve(now, now + Duration::from_millis(50)).unwrap_err();
        assert!(refused > Duration::from_millis(50));
        // Nothing was reserved: the next slot is still 100 ms away.
        let wait = bucket.reserve(now, now + Duration::from_secs(1)).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn throttling_halves_the_rate_once_per_burst_of_throttles() {
        let bucket = TokenBucket::new(100.0, 10);
        let now = Instant::now();
        assert_eq!(bucket.throttled(now), 50.0);
        assert_eq!(bucket.throttled(now + Duration::from_millis(10)), 50.0);
        assert_eq!(bucket.throttled(now + Duration::from_millis(200)), 25.0);
        for i in 0..20 {
            bucket.throttled(now + Duration::from_millis(400 + 200 * i));
        }
        assert_eq!(bucket.rate(), 1.0, "never below 1% of the configured rate");
    }
}
