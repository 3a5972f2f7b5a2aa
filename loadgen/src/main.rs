//! `keymux-loadgen`: load against a keymux proxy. See `--help`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use clap::Parser;
use keymux_loadgen::cli::Cli;
use keymux_loadgen::embedded::EmbeddedProxy;
use keymux_loadgen::progress::Progress;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut scenario = cli.scenario();
    scenario.tls = cli.tls()?;
    let embedded = if cli.embedded {
        let proxy = EmbeddedProxy::start_with_keys(&scenario.embedded_keys()).await?;
        scenario.target = proxy.endpoint();
        eprintln!("embedded keymux on {} (soft keystore, development only)", scenario.target);
        Some(proxy)
    } else {
        None
    };
    let completed = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(scenario.warmup + scenario.duration, Arc::clone(&completed));
    let report = keymux_loadgen::run(scenario, completed).await;
    progress.finish();
    let report = report?;
    print!("{report}");
    if let Some(path) = &cli.json {
        report.write_json(path)?;
    }
    if let Some(path) = &cli.hdr {
        keymux_loadgen::output::write_hdr(&report, path)?;
    }
    if let Some(path) = &cli.plot {
        keymux_loadgen::output::write_plot(&report, path)?;
    }
    if let Some(proxy) = embedded {
        proxy.shutdown().await;
    }
    Ok(())
}
