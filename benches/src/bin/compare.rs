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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use keymux_test_support::softhsm;
use serde_json::Value;

/// keymux against its anchors, in one run.
#[derive(Parser)]
struct Args {
    /// Measurement time of each row.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The SoftHSM2 module.
    #[arg(long, default_value = softhsm::MODULE)]
    module: PathBuf,
}

const PIN: &str = "1234";
const KEYMUX_PORT: u16 = 7460;
const REDIS_PORT: u16 = 7470;

/// A measured row.
struct Row {
    name: String,
    ops_per_s: f64,
    p99_us: f64,
    p999_us: f64,
}

/// A child process stopped (SIGINT, then kill) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    ensure!(path.exists(), "{} is missing: cargo build --release --workspace", path.display());
    Ok(path)
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
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
    let child = Command::new(bin("keymux")?)
        .args(["serve", "--config"])
        .arg(config)
        .env("SOFTHSM2_CONF", conf)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    wait_for_port(KEYMUX_PORT)?;
    Ok(Server(child))
}

fn loadgen(name: &str, duration: Duration, args: &[&str]) -> anyhow::Result<Row> {
    let json = std::env::temp_dir().join(format!("keymux-compare-{}.json", std::process::id()));
    let status = Command::new(bin("keymux-loadgen")?)
        .args(["--target", &format!("tcp://127.0.0.1:{KEYMUX_PORT}"), "--warmup", "2s"])
        .args(["--duration", &humantime::format_duration(duration).to_string(), "--json"])
        .arg(&json)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(status.success(), "keymux-loadgen {args:?} failed");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let errors =
        report["errors"].as_object().map_or(0, |e| e.values().filter_map(Value::as_u64).sum::<u64>());
    ensure!(errors == 0, "{name}: {errors} errors: {}", report["errors"]);
    Ok(Row {
        name: name.into(),
        ops_per_s: report["throughput_ops_per_s"].as_f64().unwrap_or(0.0),
        p99_us: report["latency_us"]["p99"].as_f64().unwrap_or(0.0),
        p999_us: report["latency_us"]["p999"].as_f64().unwrap_or(0.0),
    })
}

fn raw_pkcs11(duration: Duration, conf: &Path, module: &Path) -> anyhow::Result<Row> {
    let output = Command::new(bin("pkcs11-raw")?)
        .args(["--token", "bench", "--key", "bench", "--sessions", "1", "--json", "--duration"])
        .arg(humantime::format_duration(duration).to_string())
        .arg("--module")
        .arg(module)
        .env("SOFTHSM2_CONF", conf)
        .env("KEYMUX_PKCS11_PIN", PIN)
        .output()?;
    ensure!(output.status.success(), "pkcs11-raw failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    Ok(Row {
        name: "raw cryptoki AES-GCM loop, 1 session".into(),
        ops_per_s: report["throughput_ops_per_s"].as_f64().unwrap_or(0.0),
        p99_us: report["latency_us"]["p99"].as_f64().unwrap_or(0.0),
        p999_us: report["latency_us"]["p999"].as_f64().unwrap_or(0.0),
    })
}

fn redis_get(clients: u32, pipeline: u32, duration: Duration) -> anyhow::Result<Row> {
    let server = Server(
        Command::new("redis-server")
            .args([
                "--port",
                &REDIS_PORT.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (apt-get install redis-server)")?,
    );
    wait_for_port(REDIS_PORT)?;
    // Size the request count so the run lasts about `duration` at ~100k req/s per
    // pipeline slot-ish; redis-benchmark reports the rate either way.
    let requests = (duration.as_secs_f64() * 150_000.0 * f64::from(pipeline.min(8))) as u64;
    let output = Command::new("redis-benchmark")
        .args(["-p", &REDIS_PORT.to_string(), "-t", "get", "--csv", "-d", "32"])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string(), "-n", &requests.to_string()])
        .output()?;
    drop(server);
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text.lines().find(|l| l.starts_with("\"GET\"")).context("no GET line from redis-benchmark")?;
    let fields: Vec<f64> =
        line.split(',').skip(1).map(|f| f.trim_matches('"').parse().unwrap_or(0.0)).collect();
    Ok(Row {
        name: format!("Redis GET, {clients} x {pipeline}"),
        ops_per_s: fields.first().copied().unwrap_or(0.0),
        p99_us: fields.get(5).copied().unwrap_or(0.0) * 1000.0,
        p999_us: f64::NAN,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let conf = softhsm(dir.path())?;
    let d = args.duration;
    let key_setup = Command::new(bin("keymux")?)
        .args(["key", "create", "bench", "--config"])
        .arg(keymux_config(dir.path(), "hsm", &args.module, "")?)
        .env("SOFTHSM2_CONF", &conf)
        .output()?;
    ensure!(key_setup.status.success(), "keymux key create: {}", String::from_utf8_lossy(&key_setup.stderr));

    let mut rows = Vec::new();
    eprintln!("measuring the raw PKCS#11 loop ...");
    let raw = raw_pkcs11(d, &conf, &args.module)?;
    eprintln!("measuring keymux on SoftHSM ...");
    let (hsm_wrap, batch_on, open_loop) = {
        let _server = serve(&keymux_config(dir.path(), "hsm", &args.module, "")?, &conf)?;
        let wrap = loadgen(
            "keymux wrap on SoftHSM, 4 x 32",
            d,
            &["--op", "wrap", "--key", "bench", "--connections", "4", "--pipeline", "32"],
        )?;
        let on = loadgen(
            "keymux wrap on SoftHSM, 256 in flight, batching on",
            d,
            &["--op", "wrap", "--key", "bench", "--connections", "8", "--pipeline", "32"],
        )?;
        let open = loadgen(
            "keymux wrap on SoftHSM, open loop 10,000/s",
            d,
            &["--op", "wrap", "--key", "bench", "--connections", "4", "--rate", "10000"],
        )?;
        (wrap, on, open)
    };
    let batch_off = {
        let config = keymux_config(
            dir.path(),
            "hsm-nobatch",
            &args.module,
            "[batch]\nmax_batch = 1\n[cache]\nenabled = false\n",
        )?;
        let _server = serve(&config, &conf)?;
        loadgen(
            "keymux wrap on SoftHSM, 256 in flight, max_batch 1, no cache",
            d,
            &["--op", "wrap", "--key", "bench", "--connections", "8", "--pipeline", "32"],
        )?
    };
    eprintln!("measuring Redis and keymux cache hits ...");
    let redis_piped = redis_get(50, 32, d)?;
    let redis_single = redis_get(50, 1, d)?;
    // redis-benchmark is a raw RESP client, so keymux's side of the ratio uses the raw
    // driver too; the SDK rows show what an application pays on top.
    let (hit_piped, hit_single, sdk_piped, sdk_single) = {
        let _server = serve(&keymux_config(dir.path(), "soft", &args.module, "")?, &conf)?;
        let hit = |name: &str, pipeline: &str, driver: &str| {
            let args = ["--op", "unwrap", "--blobs", "1000", "--connections", "50", "--pipeline", pipeline];
            loadgen(name, d, &[&args[..], &["--driver", driver]].concat())
        };
        (
            hit("keymux cache-hit unwrap, 50 x 32, raw driver", "32", "raw")?,
            hit("keymux cache-hit unwrap, 50 x 1, raw driver", "1", "raw")?,
            hit("keymux cache-hit unwrap, 50 x 32, through the SDK", "32", "sdk")?,
            hit("keymux cache-hit unwrap, 50 x 1, through the SDK", "1", "sdk")?,
        )
    };

    let ratio = |a: &Row, b: &Row| a.ops_per_s / b.ops_per_s;
    let checks = [
        ("HSM-backed wrap vs raw loop", ratio(&hsm_wrap, &raw), ">= 0.5x", ratio(&hsm_wrap, &raw) >= 0.5),
        (
            "cache-hit unwrap vs Redis GET, 50 x 32",
            ratio(&hit_piped, &redis_piped),
            ">= 0.5x",
            ratio(&hit_piped, &redis_piped) >= 0.5,
        ),
        (
            "cache-hit unwrap vs Redis GET, 50 x 1",
            ratio(&hit_single, &redis_single),
            ">= 1.0x",
            ratio(&hit_single, &redis_single) >= 1.0,
        ),
        (
            "batching on vs off, 256 in flight",
            ratio(&batch_on, &batch_off),
            ">= 1.5x",
            ratio(&batch_on, &batch_off) >= 1.5,
        ),
    ];
    let open_ok = open_loop.p99_us <= 2000.0 && open_loop.p999_us <= 10_000.0;
    rows.extend([
        raw,
        hsm_wrap,
        batch_on,
        batch_off,
        open_loop,
        redis_piped,
        hit_piped,
        sdk_piped,
        redis_single,
        hit_single,
        sdk_single,
    ]);

    println!("| measurement | ops/s | p99 | p99.9 |");
    println!("|---|---:|---:|---:|");
    for row in &rows {
        let ms = |us: f64| if us.is_nan() { "n/a".to_owned() } else { format!("{:.2} ms", us / 1000.0) };
        println!("| {} | {:.0} | {} | {} |", row.name, row.ops_per_s, ms(row.p99_us), ms(row.p999_us));
    }
    println!();
    println!("| target | measured | wanted | met |");
    println!("|---|---:|---|---|");
    for (name, value, wanted, met) in checks {
        println!("| {name} | {value:.2}x | {wanted} | {} |", if met { "yes" } else { "no" });
    }
    println!(
        "| open loop 10,000/s on SoftHSM: p99 <= 2 ms, p99.9 <= 10 ms | see above | | {} |",
        if open_ok { "yes" } else { "no" }
    );
    Ok(())
}
