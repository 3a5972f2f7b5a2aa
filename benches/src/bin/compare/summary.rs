//! The rounds' figures: each row's median and spread, the targets, and the one table
//! the command prints. Nothing here reads a process: it only judges what was measured.

use std::fmt::Write as _;

use anyhow::{bail, ensure};

/// One row measured once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Successful operations per second.
    pub(crate) ops_per_s: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// 99.9th percentile latency, µs; `None` where the tool does not report it
    /// (redis-benchmark).
    pub(crate) p999_us: Option<f64>,
    /// What the open loop's pacer achieved, for an open-loop row.
    pub(crate) open_loop: Option<OpenLoop>,
}

impl Sample {
    /// Checks that the sample holds data: operations, and latencies that were recorded.
    /// `row` names it in the error.
    pub(crate) fn checked(self, row: &str) -> anyhow::Result<Self> {
        ensure!(
            self.ops_per_s.is_finite() && self.ops_per_s > 0.0,
            "{row}: {} ops/s measured",
            self.ops_per_s
        );
        ensure!(
            self.p99_us.is_finite() && self.p99_us > 0.0,
            "{row}: p99 of {} µs (an empty histogram?)",
            self.p99_us
        );
        if let Some(p999) = self.p999_us {
            ensure!(p999.is_finite() && p999 >= self.p99_us, "{row}: p99.9 of {p999} µs, below its p99");
        }
        Ok(self)
    }
}

/// The open loop's own account of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OpenLoop {
    /// Requests per second asked for.
    pub(crate) intended_rate: f64,
    /// Requests per second actually sent during the window.
    pub(crate) achieved_rate: f64,
    /// Requests issued in the window.
    pub(crate) issued: u64,
    /// Of those, answered by the proxy.
    pub(crate) answered: u64,
    /// The measured window, in seconds.
    pub(crate) window_s: f64,
}

/// Every row of the comparison, in the order the table shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowId {
    RawPkcs11,
    HsmWrap,
    BatchOn,
    BatchOff,
    OpenLoop,
    RedisPiped,
    HitPiped,
    SdkPiped,
    RedisSingle,
    HitSingle,
    SdkSingle,
}

impl RowId {
    /// Every row, in table order.
    pub(crate) const ALL: [RowId; 11] = [
        RowId::RawPkcs11,
        RowId::HsmWrap,
        RowId::BatchOn,
        RowId::BatchOff,
        RowId::OpenLoop,
        RowId::RedisPiped,
        RowId::HitPiped,
        RowId::SdkPiped,
        RowId::RedisSingle,
        RowId::HitSingle,
        RowId::SdkSingle,
    ];

    /// The row's name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RowId::RawPkcs11 => "raw cryptoki AES-GCM loop, 1 session (anchor)",
            RowId::HsmWrap => "keymux wrap on SoftHSM, 1 session, 4 x 32",
            RowId::BatchOn => "keymux wrap on SoftHSM, 256 in flight, batching on",
            RowId::BatchOff => "keymux wrap on SoftHSM, 256 in flight, max_batch 1, no cache",
            RowId::OpenLoop => "keymux wrap on SoftHSM, open loop 10,000/s",
            RowId::RedisPiped => "Redis GET, 50 x 32 (anchor)",
            RowId::HitPiped => "keymux cache-hit unwrap, 50 x 32, raw driver",
            RowId::SdkPiped => "keymux cache-hit unwrap, 50 x 32, through the SDK",
            RowId::RedisSingle => "Redis GET, 50 x 1 (anchor)",
            RowId::HitSingle => "keymux cache-hit unwrap, 50 x 1, raw driver",
            RowId::SdkSingle => "keymux cache-hit unwrap, 50 x 1, through the SDK",
        }
    }
}

/// Every row's samples, one per round.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    samples: Vec<(RowId, Vec<Sample>)>,
}

impl Rounds {
    /// Adds `sample` to `row`'s samples.
    pub(crate) fn push(&mut self, row: RowId, sample: Sample) {
        match self.samples.iter_mut().find(|(id, _)| *id == row) {
            Some((_, samples)) => samples.push(sample),
            None => self.samples.push((row, vec![sample])),
        }
    }

    /// `row`'s samples: an error if it was never measured.
    fn of(&self, row: RowId) -> anyhow::Result<&[Sample]> {
        match self.samples.iter().find(|(id, _)| *id == row) {
            Some((_, samples)) if !samples.is_empty() => Ok(samples),
            _ => bail!("{}: never measured", row.name()),
        }
    }
}

/// The median, lowest and highest of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) low: f64,
    pub(crate) high: f64,
}

impl Spread {
    /// The spread of `values`, which must not be empty.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut values: Vec<f64> = values.into_iter().collect();
        assert!(!values.is_empty(), "a spread of nothing");
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median =
            if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
        Self { median, low: values[0], high: values[values.len() - 1] }
    }
}

/// A ratio of two rows' throughputs, measured round by round.
struct RatioTarget {
    name: &'static str,
    keymux: RowId,
    anchor: RowId,
    wanted: f64,
    /// The anchor is an in-process loop on the same sessions: keymux going faster means
    /// the measurement is wrong, not that keymux is fast.
    ceiling: bool,
}

const RATIOS: [RatioTarget; 4] = [
    RatioTarget {
        name: "HSM-backed wrap vs raw loop, 1 session",
        keymux: RowId::HsmWrap,
        anchor: RowId::RawPkcs11,
        wanted: 0.5,
        ceiling: true,
    },
    RatioTarget {
        name: "cache-hit unwrap vs Redis GET, 50 x 32",
        keymux: RowId::HitPiped,
        anchor: RowId::RedisPiped,
        wanted: 0.5,
        ceiling: false,
    },
    RatioTarget {
        name: "cache-hit unwrap vs Redis GET, 50 x 1",
        keymux: RowId::HitSingle,
        anchor: RowId::RedisSingle,
        wanted: 1.0,
        ceiling: false,
    },
    RatioTarget {
        name: "batching on vs off, 256 in flight",
        keymux: RowId::BatchOn,
        anchor: RowId::BatchOff,
        wanted: 1.5,
        ceiling: false,
    },
];

/// The open loop's latency targets, µs.
const OPEN_LOOP_P99_US: f64 = 2_000.0;
const OPEN_LOOP_P999_US: f64 = 10_000.0;
/// How far the rate actually sent may be from the rate asked for, either way. The
/// pacer's own error is a request or so at each edge of the window; a generator that
/// falls 2% behind is measuring a lighter load than the target names.
pub(crate) const RATE_TOLERANCE: f64 = 0.02;

/// Why one round of the open loop does not count, if it does not: the rate not reached,
/// requests not answered, or fewer issued than the window holds.
fn open_loop_fault(open: &OpenLoop) -> Option<String> {
    let due = open.intended_rate * open.window_s;
    let off = (open.achieved_rate - open.intended_rate).abs() / open.intended_rate;
    if off > RATE_TOLERANCE {
        return Some(format!(
            "sent {:.0}/s of {:.0}/s (more than {:.0}% off)",
            open.achieved_rate,
            open.intended_rate,
            RATE_TOLERANCE * 100.0
        ));
    }
    if (open.issued as f64 - due).abs() > 1.0 {
        return Some(format!("issued {} requests where the window holds {due:.0}", open.issued));
    }
    if open.answered != open.issued {
        return Some(format!("{} of {} requests answered", open.answered, open.issued));
    }
    None
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

/// The whole output: the rows, then the targets, then notes on what looks wrong.
pub(crate) fn render(rounds: &Rounds, header: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(out, "| measurement | ops/s | lowest - highest | p99 | p99.9 |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for row in RowId::ALL {
        let samples = rounds.of(row)?;
        let ops = Spread::of(samples.iter().map(|s| s.ops_per_s));
        let p99 = Spread::of(samples.iter().map(|s| s.p99_us));
        let p999 = match samples.iter().map(|s| s.p999_us).collect::<Option<Vec<f64>>>() {
            Some(values) => ms(Spread::of(values).median),
            None => "n/a".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} - {:.0} | {} | {p999} |",
            row.name(),
            ops.median,
            ops.low,
            ops.high,
            ms(p99.median)
        );
    }

    let mut notes = Vec::new();
    let _ = writeln!(out, "\n| target | measured | lowest - highest | wanted | met |");
    let _ = writeln!(out, "|---|---:|---:|---|---|");
    for target in &RATIOS {
        let (keymux, anchor) = (rounds.of(target.keymux)?, rounds.of(target.anchor)?);
        ensure!(
            keymux.len() == anchor.len(),
            "{} and {}: {} and {} rounds",
            target.keymux.name(),
            target.anchor.name(),
            keymux.len(),
            anchor.len()
        );
        let mut ratios = Vec::new();
        for (k, a) in keymux.iter().zip(anchor) {
            ensure!(a.ops_per_s > 0.0, "{}: an anchor of {} ops/s", target.anchor.name(), a.ops_per_s);
            ratios.push(k.ops_per_s / a.ops_per_s);
        }
        let spread = Spread::of(ratios.iter().copied());
        let met = spread.median >= target.wanted;
        let above = ratios.iter().filter(|r| **r > 1.0).count();
        let suspect = target.ceiling && above > 0;
        if suspect {
            notes.push(format!(
                "**suspect**: {} is above 1.0x in {above} of {} rounds. keymux cannot outrun an \
                 in-process loop on the same token and session count, so the measurement is wrong.",
                target.name,
                ratios.len()
            ));
        }
        let verdict = match (met, suspect) {
            (_, true) => "suspect",
            (true, false) => "yes",
            (false, false) => "no",
        };
        let _ = writeln!(
            out,
            "| {} | {:.2}x | {:.2}x - {:.2}x | >= {:.1}x | {verdict} |",
            target.name, spread.median, spread.low, spread.high, target.wanted
        );
    }

    let open = rounds.of(RowId::OpenLoop)?;
    let mut faults = Vec::new();
    for (round, sample) in open.iter().enumerate() {
        let Some(paced) = &sample.open_loop else {
            bail!("{}: round {} has no open-loop figures", RowId::OpenLoop.name(), round + 1);
        };
        if let Some(fault) = open_loop_fault(paced) {
            faults.push(format!("round {}: {fault}", round + 1));
        }
    }
    let p99 = Spread::of(open.iter().map(|s| s.p99_us));
    let p999 = Spread::of(open.iter().map(|s| s.p999_us.unwrap_or(f64::INFINITY)));
    let achieved = Spread::of(open.iter().filter_map(|s| s.open_loop).map(|o| o.achieved_rate));
    let latency_met = p99.median <= OPEN_LOOP_P99_US && p999.median <= OPEN_LOOP_P999_US;
    let verdict = match (faults.is_empty(), latency_met) {
        (false, _) => "no: the load was not the one named",
        (true, true) => "yes",
        (true, false) => "no",
    };
    let _ = writeln!(
        out,
        "| open loop 10,000/s on SoftHSM: p99 / p99.9 | {} / {} | {} - {} / {} - {} | <= 2 ms / <= 10 ms | {verdict} |",
        ms(p99.median),
        ms(p999.median),
        ms(p99.low),
        ms(p99.high),
        ms(p999.low),
        ms(p999.high)
    );
    let _ = writeln!(
        out,
        "| open loop: rate sent, every request answered | {:.0}/s | {:.0} - {:.0}/s | 10,000/s +- {:.0}% | {} |",
        achieved.median,
        achieved.low,
        achieved.high,
        RATE_TOLERANCE * 100.0,
        if faults.is_empty() { "yes" } else { "no" }
    );
    notes.extend(faults.into_iter().map(|fault| format!("open loop, {fault}")));
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ops_per_s: f64) -> Sample {
        Sample { ops_per_s, p99_us: 500.0, p999_us: Some(900.0), open_loop: None }
    }

    fn open(achieved_rate: f64, issued: u64, answered: u64) -> OpenLoop {
        OpenLoop { intended_rate: 10_000.0, achieved_rate, issued, answered, window_s: 6.0 }
    }

    /// Every row over `rounds` rounds, each at `ops` ops/s except as `tweak` sets.
    fn rounds(count: usize, tweak: impl Fn(RowId, usize, &mut Sample)) -> Rounds {
        let mut rounds = Rounds::default();
        for round in 0..count {
            for row in RowId::ALL {
                let mut s = sample(1000.0);
                if row == RowId::OpenLoop {
                    s.open_loop = Some(open(10_000.0, 60_000, 60_000));
                }
                tweak(row, round, &mut s);
                rounds.push(row, s);
            }
        }
        rounds
    }

    #[test]
    fn empty_or_missing_data_is_an_error_naming_the_row() {
        let error = sample(0.0).checked("keymux wrap").unwrap_err();
        assert!(error.to_string().starts_with("keymux wrap: 0 ops/s"), "{error}");
        let error = Sample { p99_us: 0.0, ..sample(10.0) }.checked("Redis GET").unwrap_err();
        assert!(error.to_string().starts_with("Redis GET: p99 of 0"), "{error}");
        assert!(sample(f64::NAN).checked("x").is_err());
        sample(10.0).checked("x").unwrap();

        let mut partial = Rounds::default();
        partial.push(RowId::RawPkcs11, sample(1.0));
        let error = render(&partial, "").unwrap_err();
        assert!(error.to_string().contains(RowId::HsmWrap.name()), "{error}");
        let error = render(
            &rounds(1, |row, _, s| {
                if row == RowId::OpenLoop {
                    s.open_loop = None
                }
            }),
            "",
        )
        .unwrap_err();
        assert!(error.to_string().contains("no open-loop figures"), "{error}");
    }

    #[test]
    fn a_zero_anchor_is_an_error_not_a_ratio() {
        let rounds = rounds(2, |row, _, s| {
            if row == RowId::RedisSingle {
                s.ops_per_s = 0.0
            }
        });
        let error = render(&rounds, "").unwrap_err();
        assert!(error.to_string().contains("Redis GET, 50 x 1"), "{error}");
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(Spread::of([3.0, 1.0, 2.0]), Spread { median: 2.0, low: 1.0, high: 3.0 });
        assert_eq!(Spread::of([4.0, 1.0]), Spread { median: 2.5, low: 1.0, high: 4.0 });
        let rounds = rounds(3, |row, round, s| {
            if row == RowId::HitPiped {
                s.ops_per_s = [400.0, 900.0, 600.0][round];
            }
        });
        let table = render(&rounds, "header").unwrap();
        assert!(table.starts_with("header\n"), "{table}");
        assert!(
            table.contains("| keymux cache-hit unwrap, 50 x 32, raw driver | 600 | 400 - 900 |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| cache-hit unwrap vs Redis GET, 50 x 32 | 0.60x | 0.40x - 0.90x | >= 0.5x | yes |"
            )
        );
        assert!(table.contains("| Redis GET, 50 x 32 (anchor) | 1000 | 1000 - 1000 | 0.50 ms | 0.90 ms |"));
    }

    #[test]
    fn keymux_above_its_in_process_anchor_is_suspect() {
        let rounds = rounds(3, |row, round, s| {
            if row == RowId::HsmWrap && round == 1 {
                s.ops_per_s = 1100.0;
            }
        });
        let table = render(&rounds, "").unwrap();
        assert!(
            table.contains(
                "| HSM-backed wrap vs raw loop, 1 session | 1.00x | 1.00x - 1.10x | >= 0.5x | suspect |"
            ),
            "{table}"
        );
        assert!(table.contains("above 1.0x in 1 of 3 rounds"), "{table}");
        // Above Redis is no contradiction.
        let rounds = rounds_above_redis();
        let table = render(&rounds, "").unwrap();
        assert!(
            table.contains(
                "| cache-hit unwrap vs Redis GET, 50 x 1 | 1.30x | 1.30x - 1.30x | >= 1.0x | yes |"
            )
        );
        assert!(!table.contains("suspect"), "{table}");
    }

    fn rounds_above_redis() -> Rounds {
        rounds(1, |row, _, s| {
            if row == RowId::HitSingle {
                s.ops_per_s = 1300.0
            }
        })
    }

    #[test]
    fn the_open_loop_verdict_needs_the_rate_and_every_answer() {
        let good = render(&rounds(2, |_, _, _| {}), "").unwrap();
        assert!(good.contains("| <= 2 ms / <= 10 ms | yes |"), "{good}");
        assert!(good.contains("| 10,000/s +- 2% | yes |"), "{good}");

        for (paced, why) in [
            (open(9_700.0, 60_000, 60_000), "sent 9700/s of 10000/s"),
            (open(10_300.0, 60_000, 60_000), "sent 10300/s of 10000/s"),
            (open(10_000.0, 60_000, 59_990), "59990 of 60000 requests answered"),
            (open(10_000.0, 50_000, 50_000), "issued 50000 requests where the window holds 60000"),
        ] {
            let table = render(
                &rounds(2, |row, round, s| {
                    if row == RowId::OpenLoop && round == 1 {
                        s.open_loop = Some(paced);
                    }
                }),
                "",
            )
            .unwrap();
            assert!(table.contains("| no: the load was not the one named |"), "{why}: {table}");
            assert!(table.contains(&format!("open loop, round 2: {why}")), "{why}: {table}");
        }
        let slow = render(
            &rounds(1, |row, _, s| {
                if row == RowId::OpenLoop {
                    s.p99_us = 2_500.0
                }
            }),
            "",
        )
        .unwrap();
        assert!(slow.contains("| <= 2 ms / <= 10 ms | no |"), "{slow}");
    }
}
