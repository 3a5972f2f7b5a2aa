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
//!   "issued": u64,                        requests issued in the window (ops + errors)
//!   "answered": u64,                      of those, answered by the proxy (OK or a status)
//!   "open_loop": null | {                 the open loop only:
//!     "intended_rate": f64,               requests per second asked for (--rate)
//!     "achieved_rate": f64,               requests actually sent per second of the window
//!     "max_send_lag_us": u64              the most a request went out after its intended time
//!   },
//!   "config": {...}                       the scenario, durations as "10s"
//! }
//! ```
//!
//! A request belongs to the window it was issued in (the open loop: its intended send
//! time), however late it is answered.

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
    /// Successful operations issued in the measured window.
    pub ops: u64,
    /// Requests issued in the measured window, successful or not.
    pub issued: u64,
    /// Of those, the ones the proxy answered (OK, or an error status); the rest failed on
    /// the client's side (a deadline, a lost connection).
    pub answered: u64,
    /// What the open loop's pacer achieved; `None` for the closed loop.
    pub open_loop: Option<OpenLoopStats>,
    /// The scenario that was run.
    pub config: Scenario,
    /// The full latency histogram (µs), for plots; not in the JSON.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// How the open loop's pacer kept to its rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpenLoopStats {
    /// Requests per second asked for.
    pub intended_rate: f64,
    /// Requests actually sent while the window was open, per second of the window: below
    /// `intended_rate` when the generator fell behind (or waited at `max_in_flight`).
    pub achieved_rate: f64,
    /// The most a request of the window went out after its intended time, in µs (its
    /// latency is counted from the intended time all the same).
    pub max_send_lag_us: u64,
}

impl Report {
    /// Summarises `recorded` for `scenario`: every request it recorded was issued in the
    /// window.
    pub fn new(scenario: Scenario, recorded: &Recorder) -> Self {
        let ops = recorded.ops();
        Self {
            throughput_ops_per_s: ops as f64 / scenario.duration.as_secs_f64(),
            latency_us: recorded.summary(),
            errors: recorded.errors().clone(),
            ops,
            issued: recorded.completed(),
            answered: recorded.answered(),
            open_loop: None,
            config: scenario,
            histogram: recorded.histogram().clone(),
        }
    }

    /// The same report, with what the open loop's pacer achieved.
    pub fn with_open_loop(mut self, stats: OpenLoopStats) -> Self {
        self.open_loop = Some(stats);
        self
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
        writeln!(f, "  ops          {} ({} issued, {} answered)", self.ops, self.issued, self.answered)?;
        writeln!(f, "  throughput   {:.1} ops/s", self.throughput_ops_per_s)?;
        if let Some(open) = &self.open_loop {
            writeln!(
                f,
                "  open loop    {:.1} req/s sent of {:.1} asked for, at most {} µs late",
                open.achieved_rate, open.intended_rate, open.max_send_lag_us
            )?;
        }
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
        assert_eq!(
            keys,
            [
                "answered",
                "config",
                "errors",
                "issued",
                "latency_us",
                "open_loop",
                "ops",
                "throughput_ops_per_s"
            ]
        );
        // 4 successes over the 2 s window, not over the run.
        assert_eq!(json["throughput_ops_per_s"], 2.0);
        assert_eq!(json["ops"], 4);
        assert_eq!(json["errors"]["BUSY"], 1);
        assert_eq!((json["issued"].as_u64(), json["answered"].as_u64()), (Some(5), Some(5)));
        assert!(json["open_loop"].is_null());
        let stats = OpenLoopStats { intended_rate: 100.0, achieved_rate: 99.5, max_send_lag_us: 40 };
        let json: serde_json::Value =
            serde_json::from_str(&sample().with_open_loop(stats).to_json()).unwrap();
        assert_eq!(json["open_loop"]["intended_rate"], 100.0);
        assert_eq!(json["open_loop"]["achieved_rate"], 99.5);
        assert_eq!(json["open_loop"]["max_send_lag_us"], 40);
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
        assert!(table.contains("4 (5 issued, 5 answered)"), "{table}");
        assert!(!table.contains("open loop"), "{table}");
    }
}
