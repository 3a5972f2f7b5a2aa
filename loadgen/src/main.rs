//! `keymux-loadgen`: closed-loop load against a keymux proxy. See `--help`.

use clap::Parser;
use keymux_loadgen::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut scenario = cli.scenario();
    scenario.tls = cli.tls()?;
    let report = keymux_loadgen::run(scenario).await?;
    print!("{report}");
    if let Some(path) = &cli.json {
        report.write_json(path)?;
    }
    Ok(())
}
