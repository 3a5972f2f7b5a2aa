//! The scaling figure of `docs/PERFORMANCE.md` ("Replicas behind a balancer"): 1, 2, 3...
//! `keymux` processes on one SoftHSM2 token behind HAProxy (TCP mode, checks on
//! `/readyz`), loaded through HAProxy by `keymux-loadgen`, with one replica loaded
//! directly beside them (what HAProxy's hop costs). Prints one table: throughput, p50,
//! p99 and p99.9, the ratio to one replica, the CPU each process used and each
//! replica's memory.
//!
//! ```sh
//! scripts/bench-scale                       # 1, 2 and 3 replicas, the machine's cores
//! scripts/bench-scale --replicas 1,2,4,8 --cores 32
//! ```
//!
//! `--cores N` splits N cores among the processes (`taskset`): the load generator gets a
//! quarter, HAProxy one, and the rest is divided evenly among the most replicas of the
//! run, so each replica count is measured on the same cores per replica. With fewer
//! cores than that needs (this 2-core machine), nothing is pinned and every process
//! shares every core: the table then measures how the machine's cores are shared, not
//! how replicas scale, and says so.
//!
//! Needs SoftHSM2 and HAProxy (`apt-get install softhsm2 haproxy`, as `./scripts/test`
//! does).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use keymux_test_support::haproxy::{Haproxy, Upstream};
use keymux_test_support::metrics::metric_sum;
use keymux_test_support::replica::{Replica, pinned, pkcs11_backend};
use keymux_test_support::softhsm;
use serde_json::Value;

/// keymux replicas behind HAProxy on one token.
#[derive(Parser)]
struct Args {
    /// Replica counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,
    /// Cores the run may use (default: all of this machine's).
    #[arg(long)]
    cores: Option<usize>,
    /// Measurement time of each row (after `--warmup`).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before each measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Load generator connections, spread over the replicas by HAProxy.
    #[arg(long, default_value_t = 12)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 32)]
    pipeline: usize,
    /// PKCS#11 sessions (executor threads) per replica.
    #[arg(long, default_value_t = 2)]
    sessions: usize,
    /// The SoftHSM2 module.
    #[arg(long, default_value = softhsm::MODULE)]
    module: PathBuf,
}

const PIN: &str = "1234";

/// Which CPUs each process gets, or none pinned.
struct Plan {
    loadgen: Option<String>,
    haproxy: Option<String>,
    replicas: Vec<Option<String>>,
    description: String,
}

impl Plan {
    fn new(cores: usize, most_replicas: usize) -> Self {
        let loadgen = (cores / 4).max(1);
        let per_replica = cores.saturating_sub(loadgen + 1) / most_replicas.max(1);
        if per_replica == 0 {
            return Self {
                loadgen: None,
                haproxy: None,
                replicas: vec![None; most_replicas],
                description: format!(
                    "{cores} cores, not pinned: the load generator, HAProxy and every replica share them \
                     (pinning needs at least {} cores for {most_replicas} replicas)",
                    loadgen + 1 + most_replicas
                ),
            };
        }
        let range = |from: usize, count: usize| format!("{from}-{}", from + count - 1);
        Self {
            loadgen: Some(range(0, loadgen)),
            haproxy: Some(range(loadgen, 1)),
            replicas: (0..most_replicas)
                .map(|i| Some(range(loadgen + 1 + i * per_replica, per_replica)))
                .collect(),
            description: format!(
                "{cores} cores pinned: load generator {loadgen}, HAProxy 1, {per_replica} per replica"
            ),
        }
    }
}

/// CPU seconds a process has used so far (user and system), from `/proc`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (in parentheses, which may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(") ").context("/proc/PID/stat")?.1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / clock_ticks()?)
}

fn clock_ticks() -> anyhow::Result<f64> {
    let output = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

/// A process's resident memory now and at its peak, MiB.
fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> anyhow::Result<f64> {
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
        Ok(line.split_whitespace().nth(1).context(field.to_owned())?.parse::<f64>()? / 1024.0)
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// One row measured.
struct Row {
    name: String,
    replicas: usize,
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// CPU cores each replica used over the window.
    replica_cpu: Vec<f64>,
    haproxy_cpu: Option<f64>,
    loadgen_cpu: f64,
    /// Each replica's resident memory at the end, and its peak, MiB.
    replica_mib: Vec<(f64, f64)>,
    /// Each replica's share of the requests.
    shares: Vec<f64>,
}

/// Runs keymux-loadgen against `target` while sampling the CPU of `pids` over its
/// measurement window: the report and each pid's cores used, the load generator's last.
fn measure(
    args: &Args,
    loadgen: &Path,
    target: std::net::SocketAddr,
    cpus: Option<&str>,
    pids: &[u32],
    json: &Path,
) -> anyhow::Result<(Value, Vec<f64>)> {
    let _ = std::fs::remove_file(json);
    let child = pinned(loadgen, cpus)
        .args(["--target", &format!("tcp://{target}"), "--op", "wrap", "--key", "bench"])
        .args(["--connections", &args.connections.to_string(), "--pipeline", &args.pipeline.to_string()])
        .args(["--warmup", &humantime::format_duration(args.warmup).to_string()])
        .args(["--duration", &humantime::format_duration(args.duration).to_string(), "--json"])
        .arg(json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("keymux-loadgen")?;
    let pids: Vec<u32> = pids.iter().copied().chain([child.id()]).collect();
    std::thread::sleep(args.warmup);
    let before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    std::thread::sleep(args.duration);
    let after: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect::<anyhow::Result<_>>()?;
    let window = started.elapsed().as_secs_f64();
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "keymux-loadgen failed: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json)?)?;
    let failed: u64 = report["errors"]
        .as_object()
        .context("no errors in the report")?
        .values()
        .filter_map(Value::as_u64)
        .sum();
    ensure!(failed == 0, "{failed} errors: {}", report["errors"]);
    let cores = before.iter().zip(&after).map(|(b, a)| (a - b) / window).collect();
    Ok((report, cores))
}

fn number(report: &Value, pointer: &str) -> anyhow::Result<f64> {
    report.pointer(pointer).and_then(Value::as_f64).with_context(|| format!("no number at {pointer}"))
}

fn served(replica: &Replica) -> anyhow::Result<f64> {
    Ok(metric_sum(&replica.scrape()?, "keymux_requests_total{"))
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    ensure!(
        path.exists(),
        "{} is missing: cargo build --release -p keymux-proxy -p keymux-loadgen",
        path.display()
    );
    Ok(path)
}

#[allow(clippy::too_many_lines)]
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(!args.replicas.is_empty() && !args.replicas.contains(&0), "--replicas: counts of 1 or more");
    let cores = args.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let most = *args.replicas.iter().max().expect("not empty");
    let plan = Plan::new(cores, most);
    let (keymux, loadgen) = (bin("keymux")?, bin("keymux-loadgen")?);

    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("softhsm2.conf");
    softhsm::fresh_config(&conf)?;
    softhsm::init_token(&conf, "bench", "0000", PIN)?;
    let pin = dir.path().join("pin");
    std::fs::write(&pin, PIN)?;
    let config = format!(
        "[batch]\nqueue_capacity = 8192\n\n{}",
        pkcs11_backend(&args.module, Some("bench"), None, &pin, args.sessions)
    );
    let conf_str = conf.to_str().context("a UTF-8 temporary path")?;
    let env = [("SOFTHSM2_CONF", conf_str)];
    let server = "max_in_flight_per_connection = 4096";
    std::fs::write(dir.path().join("admin.toml"), format!("[server]\nallow_anonymous = true\n{config}"))?;
    let created = Command::new(&keymux)
        .args(["key", "create", "bench", "--config"])
        .arg(dir.path().join("admin.toml"))
        .env("SOFTHSM2_CONF", &conf)
        .output()?;
    ensure!(created.status.success(), "keymux key create: {}", String::from_utf8_lossy(&created.stderr));
    let json = dir.path().join("loadgen.json");

    eprintln!("{}", plan.description);
    let mut rows = Vec::new();
    {
        eprintln!("  1 replica, direct");
        let replica = Replica::start(
            &keymux,
            dir.path(),
            "direct",
            server,
            &config,
            &env,
            plan.replicas[0].as_deref(),
        )?;
        let pid = replica.pid().context("running")?;
        let (report, mut cpu) =
            measure(&args, &loadgen, replica.addr(), plan.loadgen.as_deref(), &[pid], &json)?;
        let loadgen_cpu = cpu.pop().context("the load generator's CPU")?;
        rows.push(Row {
            name: "1 replica, direct (no HAProxy)".into(),
            replicas: 1,
            ops_per_s: number(&report, "/throughput_ops_per_s")?,
            p50_us: number(&report, "/latency_us/p50")?,
            p99_us: number(&report, "/latency_us/p99")?,
            p999_us: number(&report, "/latency_us/p999")?,
            replica_cpu: cpu,
            haproxy_cpu: None,
            loadgen_cpu,
            replica_mib: vec![memory_mib(pid)?],
            shares: vec![1.0],
        });
    }
    for &count in &args.replicas {
        eprintln!("  {count} behind HAProxy");
        let replicas: Vec<Replica> = (0..count)
            .map(|i| {
                Replica::start(
                    &keymux,
                    dir.path(),
                    &format!("r{count}-{i}"),
                    server,
                    &config,
                    &env,
                    plan.replicas[i].as_deref(),
                )
            })
            .collect::<std::io::Result<_>>()?;
        let upstreams: Vec<Upstream> = replicas.iter().map(Upstream::from).collect();
        let haproxy = Haproxy::start(dir.path(), &upstreams, plan.haproxy.as_deref())?;
        haproxy.wait_until_up(count, Duration::from_secs(10))?;
        let mut pids: Vec<u32> =
            replicas.iter().map(|r| r.pid().context("running")).collect::<anyhow::Result<_>>()?;
        pids.push(haproxy.pid());
        let before: Vec<f64> = replicas.iter().map(served).collect::<anyhow::Result<_>>()?;
        let (report, mut cpu) =
            measure(&args, &loadgen, haproxy.addr(), plan.loadgen.as_deref(), &pids, &json)?;
        let after: Vec<f64> = replicas.iter().map(served).collect::<anyhow::Result<_>>()?;
        let total: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        if total <= 0.0 {
            bail!("{count} replicas: no request reached them");
        }
        let loadgen_cpu = cpu.pop().context("the load generator's CPU")?;
        let haproxy_cpu = cpu.pop();
        rows.push(Row {
            name: format!("{count} behind HAProxy"),
            replicas: count,
            ops_per_s: number(&report, "/throughput_ops_per_s")?,
            p50_us: number(&report, "/latency_us/p50")?,
            p99_us: number(&report, "/latency_us/p99")?,
            p999_us: number(&report, "/latency_us/p999")?,
            replica_cpu: cpu,
            haproxy_cpu,
            loadgen_cpu,
            replica_mib: pids[..count].iter().map(|&pid| memory_mib(pid)).collect::<anyhow::Result<_>>()?,
            shares: after.iter().zip(&before).map(|(a, b)| (a - b) / total).collect(),
        });
    }

    let base = rows
        .iter()
        .find(|r| r.replicas == 1 && r.haproxy_cpu.is_some())
        .map_or(rows[0].ops_per_s, |r| r.ops_per_s);
    println!(
        "{}; WRAP on one SoftHSM2 token, {} sessions per replica, {} connections x {} in flight, {:?} per row\n",
        plan.description, args.sessions, args.connections, args.pipeline, args.duration
    );
    println!(
        "| row | wraps/s | vs 1 behind HAProxy | p50 | p99 | p99.9 | CPU per replica (cores) | HAProxy CPU | load generator CPU | CPU per wrap, replicas + HAProxy | RSS per replica, peak (MiB) | requests per replica |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let join = |values: Vec<String>| values.join(" / ");
    for row in &rows {
        println!(
            "| {} | {:.0} | {:.2}x | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {:.2} | {:.1} us | {} | {} |",
            row.name,
            row.ops_per_s,
            row.ops_per_s / base,
            row.p50_us / 1e3,
            row.p99_us / 1e3,
            row.p999_us / 1e3,
            join(row.replica_cpu.iter().map(|c| format!("{c:.2}")).collect()),
            row.haproxy_cpu.map_or("-".into(), |c| format!("{c:.2}")),
            row.loadgen_cpu,
            (row.replica_cpu.iter().sum::<f64>() + row.haproxy_cpu.unwrap_or(0.0)) / row.ops_per_s * 1e6,
            join(row.replica_mib.iter().map(|(now, peak)| format!("{now:.0}, {peak:.0}")).collect()),
            join(row.shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn a_large_machine_gets_its_cores_split_and_a_small_one_shared() {
        let plan = Plan::new(32, 8);
        assert_eq!(plan.loadgen.as_deref(), Some("0-7"));
        assert_eq!(plan.haproxy.as_deref(), Some("8-8"));
        // (32 - 8 - 1) / 8 = 2 cores for each of the 8 replicas.
        assert_eq!(plan.replicas[0].as_deref(), Some("9-10"));
        assert_eq!(plan.replicas[7].as_deref(), Some("23-24"));
        let small = Plan::new(2, 3);
        assert!(small.loadgen.is_none() && small.replicas.iter().all(Option::is_none));
    }
}
