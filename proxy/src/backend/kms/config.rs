//! `[backend] type = "kms"`: regions, admission control, retries, the circuit breaker
//! and intermediate mode.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::error::{InvalidSetting, invalid};

/// `[backend] type = "kms"`: KEKs in AWS KMS (or a server speaking its API), named by
/// aliases. See `docs/KMS.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsConfig {
    /// The regions (or endpoints) holding the keys, in order of preference: work goes to
    /// the first whose circuit is closed. More than one needs multi-region keys.
    pub regions: Vec<KmsRegionConfig>,
    /// Aliases `alias/<alias_prefix>/<key>/v<version>` name the keys. Default `keymux`.
    pub alias_prefix: String,
    /// A shared credentials file (AWS format) to read instead of `~/.aws/credentials`;
    /// the rest of the standard chain (environment, web identity, ECS, IMDS) still
    /// applies. Credentials never go in this config file.
    pub credentials_file: Option<PathBuf>,
    /// The profile to read from the shared files. Default: the chain's own (`default`,
    /// or `AWS_PROFILE`).
    pub profile: Option<String>,
    /// Executor threads; each runs one batch at a time, its operations concurrently.
    /// Default 4.
    pub executors: usize,
    /// KMS requests in flight per region at most. Default 64.
    pub max_in_flight: usize,
    /// Requests per second per region (token bucket). Default 5000, below AWS's
    /// smallest shared quota for symmetric operations (10,000/s per account and region).
    pub rate: f64,
    /// Requests a region may take at once above the rate. Default 500.
    pub burst: u32,
    /// How long an operation without a client deadline may wait for admission and
    /// retries before it is answered BUSY. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Longest one KMS request may take; longer counts as a failure. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Longest a TCP + TLS connect may take. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of one operation after throttling or a failure. Default 4.
    pub max_retries: u32,
    /// First retry backoff, doubled per retry, with full jitter. Default 25 ms.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Consecutive failures (errors or timeouts) that open a region's circuit.
    /// Default 5.
    pub failure_threshold: u32,
    /// While a circuit is open, how often the region is probed; requests fail fast
    /// (or move to the next region) meanwhile. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Intermediate mode: which keys use it, and the epochs.
    pub intermediate: IntermediateConfig,
}

/// One `[[backend.regions]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmsRegionConfig {
    /// The AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// An endpoint override (a KMS-compatible server, a VPC endpoint). Default: the
    /// region's public endpoint.
    pub endpoint: Option<String>,
    /// The name in metrics and logs. Default: the region.
    pub name: Option<String>,
}

impl KmsRegionConfig {
    /// The name in metrics and logs.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.region)
    }
}

/// `[backend.intermediate]`: keys whose wraps seal DEKs locally under an intermediate
/// key that KMS wraps once per epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntermediateConfig {
    /// Globs on key names that use intermediate mode for new wraps. Default none.
    /// Unwraps of intermediate blobs work for every key.
    pub keys: Vec<String>,
    /// An intermediate key wraps for at most this long. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// An intermediate key wraps at most this many DEKs. Default 1,000,000 (at most
    /// 2^32: nonces are random 96-bit values).
    pub max_uses: u64,
    /// Unwrapped intermediate keys kept for unwraps. Default 10,000.
    pub cache_entries: u64,
    /// How long an unwrapped intermediate key is kept. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for IntermediateConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            lifetime: Duration::from_secs(300),
            max_uses: 1_000_000,
            cache_entries: 10_000,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            alias_prefix: "keymux".into(),
            credentials_file: None,
            profile: None,
            executors: 4,
            max_in_flight: 64,
            rate: 5000.0,
            burst: 500,
            max_wait: Duration::from_secs(2),
            call_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            max_retries: 4,
            backoff: Duration::from_millis(25),
            failure_threshold: 5,
            probe_interval: Duration::from_millis(250),
            intermediate: IntermediateConfig::default(),
        }
    }
}

impl KmsConfig {
    /// A config for `regions` with every other setting at its default.
    pub fn new(regions: Vec<KmsRegionConfig>) -> Self {
        Self { regions, ..Self::default() }
    }

    /// Checks every value; keys are relative to `[backend]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let fail = |key: &str, message: &str| invalid(key, message);
        if self.regions.is_empty() {
            return fail("regions", "list at least one [[backend.regions]]");
        }
        for (index, region) in self.regions.iter().enumerate() {
            if region.region.is_empty() {
                return invalid(&format!("regions[{index}].region"), "must not be empty");
            }
        }
        let prefix_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.alias_prefix.is_empty() || !self.alias_prefix.chars().all(prefix_ok) {
            return fail("alias_prefix", "letters, digits, '_' and '-' only");
        }
        if !(1..=256).contains(&self.executors) {
            return fail("executors", "must be 1..=256");
        }
        if self.max_in_flight == 0 {
            return fail("max_in_flight", "must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return fail("rate", "must be a positive number");
        }
        if self.burst == 0 {
            return fail("burst", "must be at least 1");
        }
        if self.call_timeout.is_zero() || self.connect_timeout.is_zero() || self.max_wait.is_zero() {
            return fail("call_timeout", "call_timeout, connect_timeout and max_wait must be positive");
        }
        if self.failure_threshold == 0 {
            return fail("failure_threshold", "must be at least 1");
        }
        if self.probe_interval.is_zero() {
            return fail("probe_interval", "must be positive");
        }
        let intermediate = &self.intermediate;
        if !(1..=1 << 32).contains(&intermediate.max_uses) {
            return fail("intermediate.max_uses", "must be 1..=4294967296 (random 96-bit nonces)");
        }
        if intermediate.lifetime.is_zero() || intermediate.cache_ttl.is_zero() {
            return fail("intermediate.lifetime", "lifetime and cache_ttl must be positive");
        }
        if intermediate.cache_entries == 0 {
            return fail("intermediate.cache_entries", "must be at least 1");
        }
        Ok(())
    }
}
