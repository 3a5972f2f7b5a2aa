//! `[keys]`: how a running proxy follows the backend's keys.

use std::time::Duration;

use serde::Deserialize;

use super::error::{InvalidSetting, invalid};

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How often running proxies re-read keys and versions from the backend, so new
    /// and disabled versions take effect without a restart. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// New wraps (WRAP, GENERATE_DATA_KEY, REWRAP) are refused with BACKEND_UNAVAILABLE
    /// once the last successful refresh is older than this: the current version may
    /// have been retired meanwhile, and blobs under it lost to a later destroy. Unwraps
    /// go on. Default: five refresh intervals.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Option<Duration>,
    /// `keymux key destroy` destroys only a version that has been disabled at least
    /// this long: clients meanwhile get KEY_DISABLED for its blobs and can have them
    /// rewrapped (after enabling it again), and no proxy with a stale key list can still
    /// be wrapping under it. At least `max_staleness`. Default 7 days. (On AWS KMS the
    /// key's own pending deletion window does this waiting.)
    #[serde(with = "humantime_serde")]
    pub destroy_safe_period: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(2),
            max_staleness: None,
            destroy_safe_period: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl KeysConfig {
    /// `max_staleness`, defaulting to five refresh intervals.
    pub fn max_staleness(&self) -> Duration {
        self.max_staleness.unwrap_or(self.refresh_interval.saturating_mul(5))
    }

    /// Checks every value; keys are relative to `[keys]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.refresh_interval < Duration::from_millis(100) {
            return invalid("refresh_interval", "must be at least 100ms");
        }
        if self.max_staleness() < self.refresh_interval {
            return invalid("max_staleness", "must be at least keys.refresh_interval");
        }
        if self.destroy_safe_period < self.max_staleness() {
            return invalid("destroy_safe_period", "must be at least keys.max_staleness");
        }
        Ok(())
    }
}
