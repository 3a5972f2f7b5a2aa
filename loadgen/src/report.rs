//! The result of a run: a table for people, JSON for scripts.
//!
//! JSON schema (all latencies in microseconds):
//!
//! ```text
//! {
//!   "throughput_ops_per_s": f64,          successful operations per second
//!   "latency_us": {"p50", "p90", "p95", "p99", "p999", "max"},   u64 each
//!   "errors": {"BUSY": u64, "DEADLINE_EXCEEDED": u64, ...},      failed operations by label
//!   "ops": u64,                           successful operations measured
//!   "config": {...}                       the scenario, durations as "10s"
//! }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::stats::{LatencySummary, Recorder};

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Successful operations per second over the measured window.
    pub throughput_ops_per_s: f64,
    /// Latency percentiles of successful operations, in microseconds.
    pub latency_us: LatencySummary,
    /// Failed operations, by status name or client-side error label.
    pub errors: BTreeMap<String, u64>,
    /// Successful operations completed in the measured window.
    pub ops: u64,
    /// The scenario that was run.
    pub config: Scenario,
    /// The full latency histogram (µs), for plots; not in the JSON.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

impl Report {
    /// Summarises `recorded` for `scenario`.
    pub fn new(scenario: Scenario, recorded: &Recorder) -> Self {
        let ops = recorded.ops();
        Self {
            throughput_ops_per_s: ops as f64 / scenario.duration.as_secs_f64(),
            latency_us: recorded.summary(),
            errors: recorded.errors().clone(),
            ops,
            config: scenario,
            histogram: recorded.histogram().clone(),
        }
    }

    /// Failed operations, all labels together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Writes [`Report::to_json`] to `path`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The human-readable table.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.config;
        writeln!(
            f,
            "{:?} against {}: {} connections x {} pipeline, {} measured after {} warm-up",
            config.op,
            config.target,
            config.connections,
            config.pipeline,
            humantime::format_duration(config.duration),
            humantime::format_duration(config.warmup),
        )?;
        writeln!(f, "  ops          {}", self.ops)?;
        writeln!(f, "  throughput   {:.1} ops/s", self.throughput_ops_per_s)?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency (µs) {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p95", "p99", "p99.9", "max"
        )?;
        writeln!(
            f,
            "               {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            l.p50, l.p90, l.p95, l.p99, l.p999, l.max
        )?;
        if self.errors.is_empty() {
            writeln!(f, "  errors       none")
        } else {
            let errors: Vec<String> =
                self.errors.iter().map(|(label, count)| format!("{label} {count}")).collect();
            writeln!(f, "  errors       {} ({})", self.error_count(), errors.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keymux_client::{Endpoint, Error};

    use super::*;

    fn sample() -> Report {
        let mut recorder = Recorder::new();
        for micros in [100, 200, 300, 400] {
            recorder.record_ok(Duration::from_micros(micros));
        }
        recorder.record_error(&Error::Busy { message: String::new(), retry_after: Duration::ZERO });
        let mut scenario = Scenario::new(Endpoint::tcp("127.0.0.1", 7450));
        scenario.duration = Duration::from_secs(2);
        Report::new(scenario, &recorder)
    }

    #[test]
    fn json_has_the_documented_schema() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["config", "errors", "latency_us", "ops", "throughput_ops_per_s"]);
        assert_eq!(json["throughput_ops_per_s"], 2.0);
        assert_eq!(json["ops"], 4);
        assert_eq!(json["errors"]["BUSY"], 1);
        for field in ["p50", "p90", "p95", "p99", "p999", "max"] {
            assert!(json["latency_us"][field].is_u64(), "latency_us.{field}");
        }
        assert_eq!(json["config"]["target"], "tcp://127.0.0.1:7450");
        assert_eq!(json["config"]["duration"], "2s");
        assert_eq!(json["config"]["op"], "wrap");
    }

    #[test]
    fn table_shows_throughput_percentiles_and_errors() {
        let table = sample().to_string();
        assert!(table.contains("2.0 ops/s"), "{table}");
        assert!(table.contains("latency (µs)"), "{table}");
        assert!(table.contains("p99.9"), "{table}");
        assert!(table.contains("BUSY 1"), "{table}");
    }
}
