//! `keymux-soak`: the chaos soak and the RSS figures of docs/SECURITY.md (a script, not
//! CI: `scripts/soak`).
//!
//! **Soak.** Two proxies share one SoftHSM2 token: proxy A in this process (so that
//! `C_CloseAllSessions` reaches its sessions and its audit log can sit on a small
//! tmpfs), proxy B a `keymux serve` child process. SDK clients with both TLS endpoints
//! run wrap → unwrap and GENERATE_DATA_KEY → unwrap round trips, each checked (the DEK
//! back must be the DEK sent; a wrong AAD must not unwrap), while chaos strikes every few
//! seconds: B killed with SIGKILL and restarted, every session of A closed behind its
//! back, both certificates replaced and reloaded, A's audit disk filled, clients that
//! never read their answers, garbage connections. It reports operations, wrong answers,
//! lost operations (any call that failed although its deadline left room to retry on the
//! other proxy), the longest call and the longest stall (time without any completion).
//!
//! **RSS.** One `keymux serve` alone, its resident memory sampled while idle, under 10x
//! overload (64 connections keeping 1,024 requests each in flight against a queue of
//! 4,096), under a flood of half-open TLS connections, and under garbage.

mod chaos;
mod check;
mod rss;
mod setup;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "keymux chaos soak and RSS figures")]
struct Args {
    /// How long the soak runs.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent checking clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The keymux binary for the child proxies.
    #[arg(long, default_value = "target/release/keymux")]
    keymux: PathBuf,
    /// Run the RSS phases instead of the soak.
    #[arg(long)]
    rss: bool,
    /// How long each RSS phase lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    phase: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        if args.rss { rss::run(&args.keymux, args.phase).await } else { soak(&args).await }
    })
}

async fn soak(args: &Args) -> anyhow::Result<()> {
    let mut cluster = setup::Cluster::start(&args.keymux).await?;
    let checker = check::Checker::start(&cluster, args.clients).await?;
    let log = chaos::run(&mut cluster, args.duration).await;
    let report = checker.stop().await;
    println!("chaos: {}", log.summary());
    println!("{}", report.summary(args.duration));
    cluster.stop().await;
    if report.wrong > 0 || report.lost > 0 {
        anyhow::bail!("{} wrong answers, {} lost operations", report.wrong, report.lost);
    }
    Ok(())
}
