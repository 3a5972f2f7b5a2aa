//! `keymux-loadgen`: closed-loop load against a keymux proxy. See `--help`.

use clap::Parser;
use keymux_loadgen::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = keymux_loadgen::run(cli.scenario()).await?;
    print!("{report}");
    if let Some(path) = &cli.json {
        report.write_json(path)?;
    }
    Ok(())
}
