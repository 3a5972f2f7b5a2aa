//! The `keymux` binary: parses the command line and hands over to the library.

use anyhow::Context;
use clap::Parser;
use keymux_proxy::cli::{self, AuditCommand, Cli, Command};
use keymux_proxy::{server, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let config = keymux_proxy::config::Config::load(&file)?;
            println!("{}", cli::summary(&config));
            Ok(())
        }
        Some(Command::Audit { command: AuditCommand::Verify { file } }) => {
            match keymux_proxy::audit::verify(&file)
                .with_context(|| format!("cannot read {}", file.display()))?
            {
                Ok(records) => {
                    println!("{}: {records} records, chain intact", file.display());
                    Ok(())
                }
                Err(broken) => {
                    eprintln!("{}: chain broken at {broken}", file.display());
                    std::process::exit(1);
                }
            }
        }
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Key(args)) => {
            println!("{}", cli::keys::run(&args)?);
            Ok(())
        }
        None => serve(&cli.serve),
    }
}

fn serve(args: &cli::ServeArgs) -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = args.resolve()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(async {
        let running = server::start(&config).await?;
        println!("{}", cli::banner(&config, &running));
        let token = running.shutdown_token();
        if let Some(reloader) = running.reloader() {
            tokio::spawn(reload_on_sighup(reloader));
        }
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            token.cancel();
        });
        running.wait().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Reloads the TLS certificates on every SIGHUP.
async fn reload_on_sighup(reloader: std::sync::Arc<keymux_proxy::server::CertReloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot install the SIGHUP handler; certificates reload on file change only");
            return;
        };
        while hangup.recv().await.is_some() {
            let _ = reloader.reload("sighup");
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
