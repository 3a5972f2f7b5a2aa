//! The side-by-side comparison of `docs/PERFORMANCE.md`: measures, in one run on this
//! machine, keymux against its anchors and prints one table of absolute figures and
//! ratios.
//!
//! ```sh
//! cargo build --release --workspace && target/release/keymux-compare
//! ```
//!
//! Needs SoftHSM2 (`softhsm2-util`) and Redis (`redis-server`, `redis-benchmark`) from
//! Debian; `./scripts/test` installs SoftHSM2, and `apt-get install redis-server` the rest.
//! Every server listens on loopback only and is stopped at the end.
//!
//! A VM's speed drifts from minute to minute, so every row is measured in each of
//! `--rounds` rounds, and in each round every anchor is measured right next to the
//! keymux rows it is compared with (raw PKCS#11 loop, keymux on SoftHSM, Redis, keymux
//! cache hits, then the next round). The table shows each row's median and its lowest
//! and highest figure; ratios are taken round by round. A figure that is missing or zero
//! is an error naming its row, never a pass.

mod redis;
mod summary;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use keymux_test_support::softhsm;
use serde_json::Value;

use crate::redis::Redis;
use crate::summary::{OpenLoop, Rounds, RowId, Sample};

/// keymux against its anchors, in one run.
#[derive(Parser)]
struct Args {
    /// Measurement time of each row (after a 2 s warm-up).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How many times to measure every row, anchors interleaved with keymux.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The SoftHSM2 module.
    #[arg(long, default_value = softhsm::MODULE)]
    module: PathBuf,
}

const PIN: &str = "1234";
const KEYMUX_PORT: u16 = 7460;
/// The DEKs keymux wraps and unwraps, and the values Redis serves: 32 bytes.
const DEK_SIZE: usize = 32;
/// The blobs keymux's cache-hit rows cycle through, and the keys Redis's GETs spread
/// over.
const KEYS: u32 = 1000;
/// The open loop's rate.
const OPEN_LOOP_RATE: u32 = 10_000;

/// A child process stopped (SIGINT, then kill) when dropped.
pub(crate) struct Server(Child);

impl Server {
    /// Starts `command`; `what` names it if it cannot start.
    pub(crate) fn spawn(command: &mut Command, what: &str) -> anyhow::Result<Self> {
        Ok(Self(command.spawn().with_context(|| what.to_owned())?))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        // Up to 3 s to stop on its own, then killed.
        for _ in 0..60 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    ensure!(path.exists(), "{} is missing: cargo build --release --workspace", path.display());
    Ok(path)
}

pub(crate) fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

/// A fresh SoftHSM2 token labelled `bench` in `dir`, its PIN in `dir/pin`: the path of
/// its SoftHSM2 configuration.
fn softhsm(dir: &Path) -> anyhow::Result<PathBuf> {
    let conf = dir.join("softhsm2.conf");
    softhsm::fresh_config(&conf)?;
    softhsm::init_token(&conf, "bench", "0000", PIN)?;
    std::fs::write(dir.join("pin"), PIN)?;
    Ok(conf)
}

fn keymux_config(dir: &Path, name: &str, module: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    let backend = if name.starts_with("soft") {
        format!(
            "[backend]\ntype = \"soft\"\ndata_dir = \"{}\"\npassphrase = {{ file = \"{}\" }}\ncreate_if_missing = true\nkdf_memory_kib = 8192\nkdf_passes = 1\n",
            dir.join("soft").display(),
            dir.join("pin").display()
        )
    } else {
        format!(
            "[backend]\ntype = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"bench\"\npin = {{ file = \"{}\" }}\nsessions = 1\n",
            module.display(),
            dir.join("pin").display()
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{KEYMUX_PORT}\"\nmax_in_flight_per_connection = 4096\n[admin]\nenabled = false\n{extra}\n{backend}"
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

fn serve(config: &Path, conf: &Path) -> anyhow::Result<Server> {
    let server = Server::spawn(
        Command::new(bin("keymux")?)
            .args(["serve", "--config"])
            .arg(config)
            .env("SOFTHSM2_CONF", conf)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
        "keymux serve",
    )?;
    wait_for_port(KEYMUX_PORT)?;
    Ok(server)
}

/// The number at `pointer` in `json`: an error naming `row` if it is missing.
fn number(json: &Value, pointer: &str, row: &str) -> anyhow::Result<f64> {
    json.pointer(pointer)
        .and_then(Value::as_f64)
        .with_context(|| format!("{row}: no number at {pointer} in {json}"))
}

fn count(json: &Value, pointer: &str, row: &str) -> anyhow::Result<u64> {
    json.pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("{row}: no count at {pointer} in {json}"))
}

/// A keymux-loadgen report as a sample: every request of the window issued and
/// answered, no errors, and the figures present.
fn loadgen_sample(report: &Value, row: &str) -> anyhow::Result<Sample> {
    let errors =
        report["errors"].as_object().with_context(|| format!("{row}: no errors object in {report}"))?;
    let failed: u64 = errors.values().filter_map(Value::as_u64).sum();
    ensure!(failed == 0, "{row}: {failed} errors: {}", report["errors"]);
    let ops = count(report, "/ops", row)?;
    let (issued, answered) = (count(report, "/issued", row)?, count(report, "/answered", row)?);
    ensure!(ops > 0, "{row}: no operation measured");
    ensure!(issued == ops && answered == ops, "{row}: {ops} ops of {issued} issued, {answered} answered");
    let open_loop = match report.get("open_loop") {
        Some(Value::Null) => None,
        Some(open) => Some(OpenLoop {
            intended_rate: number(open, "/intended_rate", row)?,
            achieved_rate: number(open, "/achieved_rate", row)?,
            issued,
            answered,
            window_s: humantime::parse_duration(
                report
                    .pointer("/config/duration")
                    .and_then(Value::as_str)
                    .with_context(|| format!("{row}: no duration"))?,
            )?
            .as_secs_f64(),
        }),
        None => bail!("{row}: no open_loop field (an older keymux-loadgen?)"),
    };
    Sample {
        ops_per_s: number(report, "/throughput_ops_per_s", row)?,
        p99_us: number(report, "/latency_us/p99", row)?,
        p999_us: Some(number(report, "/latency_us/p999", row)?),
        open_loop,
    }
    .checked(row)
}

fn loadgen(row: RowId, duration: Duration, args: &[&str]) -> anyhow::Result<Sample> {
    let name = row.name();
    eprintln!("  {name}");
    let json = std::env::temp_dir().join(format!("keymux-compare-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let output = Command::new(bin("keymux-loadgen")?)
        .args(["--target", &format!("tcp://127.0.0.1:{KEYMUX_PORT}"), "--warmup", "2s"])
        .args(["--duration", &humantime::format_duration(duration).to_string(), "--json"])
        .arg(&json)
        .args(args)
        .stdout(Stdio::null())
        .output()?;
    ensure!(
        output.status.success(),
        "{name}: keymux-loadgen {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json).with_context(|| format!("{name}: no JSON report"))?;
    let report: Value = serde_json::from_str(&text).with_context(|| format!("{name}: the JSON report"))?;
    loadgen_sample(&report, name)
}

fn raw_pkcs11(duration: Duration, conf: &Path, module: &Path) -> anyhow::Result<Sample> {
    let row = RowId::RawPkcs11.name();
    eprintln!("  {row}");
    let output = Command::new(bin("pkcs11-raw")?)
        .args(["--token", "bench", "--key", "bench", "--sessions", "1", "--json", "--duration"])
        .arg(humantime::format_duration(duration).to_string())
        .arg("--module")
        .arg(module)
        .env("SOFTHSM2_CONF", conf)
        .env("KEYMUX_PKCS11_PIN", PIN)
        .output()?;
    ensure!(output.status.success(), "{row}: pkcs11-raw failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value =
        serde_json::from_slice(&output.stdout).with_context(|| format!("{row}: pkcs11-raw's JSON"))?;
    ensure!(count(&report, "/ops", row)? > 0, "{row}: no operation measured");
    ensure!(count(&report, "/sessions", row)? == 1, "{row}: not one session");
    Sample {
        ops_per_s: number(&report, "/throughput_ops_per_s", row)?,
        p99_us: number(&report, "/latency_us/p99", row)?,
        p999_us: Some(number(&report, "/latency_us/p999", row)?),
        open_loop: None,
    }
    .checked(row)
}

/// One round: every row once, each anchor next to the keymux rows compared with it.
fn round(rounds: &mut Rounds, args: &Args, dir: &Path, conf: &Path) -> anyhow::Result<()> {
    let d = args.duration;
    let wrap = ["--op", "wrap", "--key", "bench", "--pipeline", "32"];
    rounds.push(RowId::RawPkcs11, raw_pkcs11(d, conf, &args.module)?);
    {
        let _server = serve(&keymux_config(dir, "hsm", &args.module, "")?, conf)?;
        rounds.push(
            RowId::HsmWrap,
            loadgen(RowId::HsmWrap, d, &[&wrap[..], &["--connections", "4"]].concat())?,
        );
        rounds.push(
            RowId::BatchOn,
            loadgen(RowId::BatchOn, d, &[&wrap[..], &["--connections", "8"]].concat())?,
        );
        let rate = OPEN_LOOP_RATE.to_string();
        let open = ["--op", "wrap", "--key", "bench", "--connections", "4", "--rate", &rate];
        rounds.push(RowId::OpenLoop, loadgen(RowId::OpenLoop, d, &open)?);
    }
    {
        let config = keymux_config(
            dir,
            "hsm-nobatch",
            &args.module,
            "[batch]\nmax_batch = 1\n[cache]\nenabled = false\n",
        )?;
        let _server = serve(&config, conf)?;
        rounds.push(
            RowId::BatchOff,
            loadgen(RowId::BatchOff, d, &[&wrap[..], &["--connections", "8"]].concat())?,
        );
    }
    // Redis and the soft keymux both run through the cache-hit rows, so that each
    // Redis figure is taken right before the keymux figures set against it.
    // redis-benchmark is a raw RESP client, so keymux's side of the ratio uses the raw
    // driver too; the SDK rows show what an application pays on top.
    let redis = Redis::start(KEYS, DEK_SIZE)?;
    let _server = serve(&keymux_config(dir, "soft", &args.module, "")?, conf)?;
    let (keys, dek_size) = (KEYS.to_string(), DEK_SIZE.to_string());
    for (pipeline, anchor, hit, sdk) in [
        (32, RowId::RedisPiped, RowId::HitPiped, RowId::SdkPiped),
        (1, RowId::RedisSingle, RowId::HitSingle, RowId::SdkSingle),
    ] {
        eprintln!("  {}", anchor.name());
        rounds.push(anchor, redis.get(50, pipeline, d, anchor.name())?);
        let pipeline = pipeline.to_string();
        let unwrap = ["--op", "unwrap", "--blobs", &keys, "--dek-size", &dek_size, "--connections", "50"];
        let unwrap = [&unwrap[..], &["--pipeline", &pipeline]].concat();
        rounds.push(hit, loadgen(hit, d, &[&unwrap[..], &["--driver", "raw"]].concat())?);
        rounds.push(sdk, loadgen(sdk, d, &[&unwrap[..], &["--driver", "sdk"]].concat())?);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let conf = softhsm(dir.path())?;
    let key_setup = Command::new(bin("keymux")?)
        .args(["key", "create", "bench", "--config"])
        .arg(keymux_config(dir.path(), "hsm", &args.module, "")?)
        .env("SOFTHSM2_CONF", &conf)
        .output()?;
    ensure!(key_setup.status.success(), "keymux key create: {}", String::from_utf8_lossy(&key_setup.stderr));

    let mut rounds = Rounds::default();
    for n in 1..=args.rounds {
        eprintln!("round {n} of {}", args.rounds);
        round(&mut rounds, &args, dir.path(), &conf)?;
    }
    let header = format!(
        "`keymux-compare --duration {} --rounds {}`: each figure is the median of {} round(s), with \
         the lowest and highest; in each round every anchor is measured next to the keymux rows set \
         against it.",
        humantime::format_duration(args.duration),
        args.rounds,
        args.rounds
    );
    print!("{}", summary::render(&rounds, &header)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Value {
        serde_json::json!({
            "throughput_ops_per_s": 1000.0,
            "latency_us": {"p50": 100, "p90": 150, "p95": 180, "p99": 200, "p999": 400, "max": 900},
            "errors": {},
            "ops": 6000,
            "issued": 6000,
            "answered": 6000,
            "open_loop": null,
            "config": {"duration": "6s"},
        })
    }

    #[test]
    fn a_full_report_is_a_sample() {
        let sample = loadgen_sample(&report(), "row").unwrap();
        assert_eq!((sample.ops_per_s, sample.p99_us, sample.p999_us), (1000.0, 200.0, Some(400.0)));
        assert!(sample.open_loop.is_none());
        let mut open = report();
        open["open_loop"] =
            serde_json::json!({"intended_rate": 1000.0, "achieved_rate": 999.0, "max_send_lag_us": 5});
        let paced = loadgen_sample(&open, "row").unwrap().open_loop.unwrap();
        assert_eq!((paced.achieved_rate, paced.issued, paced.window_s), (999.0, 6000, 6.0));
    }

    #[test]
    fn missing_or_empty_figures_are_errors_naming_the_row() {
        type Breaks = fn(&mut Value);
        let broken: [(&str, Breaks); 7] = [
            ("no number at /throughput_ops_per_s", |r| {
                drop(r.as_object_mut().unwrap().remove("throughput_ops_per_s"))
            }),
            ("no number at /latency_us/p999", |r| {
                drop(r["latency_us"].as_object_mut().unwrap().remove("p999"))
            }),
            ("no operation measured", |r| {
                r["ops"] = 0.into();
                r["issued"] = 0.into();
                r["answered"] = 0.into();
            }),
            ("p99 of 0", |r| r["latency_us"]["p99"] = 0.into()),
            ("2 errors", |r| r["errors"] = serde_json::json!({"BUSY": 2})),
            ("6000 ops of 6100 issued", |r| r["issued"] = 6100.into()),
            ("no open_loop field", |r| drop(r.as_object_mut().unwrap().remove("open_loop"))),
        ];
        for (expected, breaks) in broken {
            let mut report = report();
            breaks(&mut report);
            let error = loadgen_sample(&report, "keymux wrap, 4 x 32").unwrap_err().to_string();
            assert!(error.starts_with("keymux wrap, 4 x 32: "), "{error}");
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
