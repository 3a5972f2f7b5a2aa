//! The `keymux` binary: parses the command line and hands over to the library.

use anyhow::Context;
use clap::Parser;
use keymux_proxy::cli::{self, AuditCommand, Cli, Command};
use keymux_proxy::{server, telemetry};

/// Every freed block is wiped (see `keymux_proxy::memory`).
#[global_allocator]
static ALLOCATOR: keymux_proxy::memory::WipingAllocator = keymux_proxy::memory::WIPING_ALLOCATOR;

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
                Ok(verified) => {
                    let from = match verified.first_seq {
                        1 => String::new(),
                        seq => format!(", from seq {seq} (earlier records removed by rotation)"),
                    };
                    println!(
                        "{}: {} records in {} files, chain intact{from}",
                        file.display(),
                        verified.records,
                        verified.files
                    );
                    Ok(())
                }
                Err(broken) => {
                    eprintln!("{}: chain broken at {broken}", file.display());
                    std::process::exit(1);
                }
            }
        }
        Some(Command::Audit { command: AuditCommand::Query(args) }) => {
            println!("{}", cli::audit::query(&args)?);
            Ok(())
        }
        Some(Command::Audit { command: AuditCommand::Reindex { config } }) => {
            println!("{}", cli::audit::reindex(&config)?);
            Ok(())
        }
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Report(args)) => {
            println!("{}", cli::report::run(&args)?);
            Ok(())
        }
        Some(Command::Reload(args)) => {
            println!("{}", cli::reload::run(&args)?);
            Ok(())
        }
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
        // The handlers go in before the banner says the proxy is up: a SIGHUP or SIGTERM
        // that came before them would kill it (their default action), not reload or drain.
        let stop = stop_signal();
        // Installed with or without TLS: SIGHUP's default action would end the process
        // (`systemctl reload` sends one). It reloads the whole config (server/live.rs).
        let overrides = args.clone();
        running.live().set_overlay(Box::new(move |config| overrides.apply_overrides(config)));
        tokio::spawn(reload_on_sighup(std::sync::Arc::clone(running.live()), hangup_signal()));
        println!("{}", cli::banner(&config, &running));
        #[cfg(unix)]
        keymux_proxy::sd_notify::notify("READY=1");
        let drain = running.drain();
        tokio::spawn(async move {
            stop.await;
            tracing::info!("shutting down: draining in-flight requests");
            #[cfg(unix)]
            keymux_proxy::sd_notify::notify("STOPPING=1");
            drain.run().await;
        });
        running.wait().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// The SIGHUP handler, installed now; `None` where there is none.
#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangup = signal(SignalKind::hangup());
    if hangup.is_err() {
        tracing::warn!("cannot install the SIGHUP handler; reload with `keymux reload` or the file watch");
    }
    hangup.ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

/// Reloads the config file (and the TLS certificates) on every SIGHUP. Signals that
/// arrive during a reload fold into one more reload after it.
#[cfg(unix)]
async fn reload_on_sighup(
    live: std::sync::Arc<keymux_proxy::server::LiveConfig>,
    hangup: Option<tokio::signal::unix::Signal>,
) {
    let Some(mut hangup) = hangup else { return };
    while hangup.recv().await.is_some() {
        let live = std::sync::Arc::clone(&live);
        // The outcome is logged and audited by the reload itself.
        let _ = tokio::task::spawn_blocking(move || live.reload("sighup")).await;
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_live: std::sync::Arc<keymux_proxy::server::LiveConfig>, _hangup: Option<()>) {}

/// Installs the SIGINT (Ctrl-C) and SIGTERM handlers now; the future resolves on either.
#[cfg(unix)]
fn stop_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(not(unix))]
fn stop_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
