//! The `keymux` command line: serving, and checking configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod audit;
pub mod keys;
pub mod reload;
pub mod report;

use crate::backend::BackendConfig;
use crate::config::{Config, ConfigError};
use crate::server::RunningServer;

/// keymux: a batching crypto proxy in front of HSMs and cloud KMS.
///
/// With no arguments, serves on 127.0.0.1:7450 from the development soft keystore in
/// ./keymux-data, creating it (with a key named "default") on first start.
#[derive(Debug, Parser)]
#[command(name = "keymux", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serve options, when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A `keymux` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the binary protocol (the default).
    Serve(ServeArgs),
    /// Parse and validate a config file, then print a summary.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Manage keys and their versions, on whatever backend the config names.
    Key(keys::KeyArgs),
    /// Ask a running keymux to reload its config file (`POST /reload` on the admin
    /// listener, with the operator token).
    Reload(reload::ReloadArgs),
    /// A compliance report (`pci-dss-3.6.4`, `pci-dss-10.2`) as JSON or HTML.
    Report(report::ReportArgs),
    /// Audit log tools.
    Audit {
        /// What to do with the audit log.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// A `keymux audit` subcommand.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log; names the first broken record and exits
    /// non-zero if there is one.
    Verify {
        /// The JSON-lines audit log.
        file: PathBuf,
    },
    /// Query the audit log's index (brought up to date from the log first).
    Query(audit::QueryArgs),
    /// Rebuild the audit log's index from the log.
    Reindex {
        /// The config file: gives `audit.path` and `operator.audit_index`.
        #[arg(long, short = 'c', env = "KEYMUX_CONFIG")]
        config: PathBuf,
    },
}

/// Options of `keymux serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file; without it, the development default.
    #[arg(long, short = 'c', env = "KEYMUX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override `server.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override `admin.listen`.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

impl ServeArgs {
    /// The config these arguments describe: the file (or the development default) with
    /// command-line overrides applied.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::development(),
        };
        self.apply_overrides(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Applies the command-line overrides to `config` (also to every config a reload
    /// reads, so they stay in force).
    pub fn apply_overrides(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(listen) = self.admin_listen {
            config.admin.listen = listen;
        }
    }
}

/// The start-up banner: where keymux listens and what it serves from.
pub fn banner(config: &Config, running: &RunningServer) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let mut lines = vec![match running.tcp_addr() {
        Some(addr) => format!("keymux {version} listening on tcp://{addr}"),
        None => format!("keymux {version}: no plain TCP listener (server.plain_tcp)"),
    }];
    if let Some(addr) = running.tls_addr() {
        lines.push(format!("  also on tls://{addr} (TLS 1.3)"));
    }
    if let Some(addr) = running.quic_addr() {
        lines.push(format!("  also on quic://{addr}"));
    }
    if let Some(path) = running.unix_socket() {
        lines.push(format!("  also on unix://{}", path.display()));
    }
    if let Some(admin) = running.admin_addr() {
        lines.push(format!("  metrics at http://{admin}/metrics, health at http://{admin}/healthz"));
    }
    lines.push(format!("  backend: {}", config.backend.describe()));
    if let BackendConfig::Soft(_) = &config.backend {
        lines.push(
            "  WARNING: the soft keystore is for development only; use an HSM or KMS in production".into(),
        );
    }
    lines.join("\n")
}

/// A one-screen summary of a valid config, for `check-config`.
pub fn summary(config: &Config) -> String {
    let backend = config.backend.describe();
    let mut lines = vec![
        "config OK".to_owned(),
        format!("  listen {}", config.server.listen),
        format!("  backend {backend}"),
        format!(
            "  batch max_batch={} max_delay={:?} queue_capacity={}",
            config.batch.max_batch, config.batch.max_delay, config.batch.queue_capacity
        ),
        format!(
            "  cache {}",
            if config.cache.enabled {
                format!("{} entries, ttl {:?}", config.cache.max_entries, config.cache.ttl)
            } else {
                "off".into()
            }
        ),
    ];
    if let Some(tls) = &config.tls {
        if let Some(listen) = tls.listen {
            lines.push(format!(
                "  tls {listen} client certificates {:?}",
                tls.client_auth_or_default(tls.client_auth)
            ));
        }
        if let Some(quic) = &config.quic {
            let auth = tls.client_auth_or_default(quic.client_auth);
            lines.push(format!(
                "  quic {} client certificates {auth:?} 0-RTT {}",
                quic.listen, quic.enable_0rtt
            ));
        }
    }
    lines.push(match config.acl.len() {
        0 => "  acl none: every client may do everything".to_owned(),
        rules => format!("  acl {rules} rules: anything they do not allow is FORBIDDEN"),
    });
    if let Some(path) = &config.audit.path {
        lines.push(format!("  audit log {}", path.display()));
    }
    lines.join("\n")
}
