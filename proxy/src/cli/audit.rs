//! `keymux audit query` and `keymux audit reindex`: the audit log's SQLite index
//! (`audit::index`), read and rebuilt from the files the config names, with or without
//! a running proxy.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::audit::index::{AuditIndex, MAX_LIMIT, Query};
use crate::config::Config;

/// Options of `keymux audit query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The config file: gives `audit.path` and `operator.audit_index`.
    #[arg(long, short = 'c', env = "KEYMUX_CONFIG")]
    pub config: PathBuf,
    /// Records at or after this RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// Records before this RFC 3339 time.
    #[arg(long)]
    pub to: Option<String>,
    /// The principal.
    #[arg(long)]
    pub principal: Option<String>,
    /// The key name.
    #[arg(long)]
    pub key: Option<String>,
    /// The operation or admin action (`wrap`, `config_reload`, `handshake`).
    #[arg(long)]
    pub op: Option<String>,
    /// `denied`, `failed`, `refused`, `ok` or `info`.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Most records printed, newest first.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    pub limit: u32,
}

/// The log and index files `config` names.
fn files(config: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let config = Config::load(config)?;
    let Some(log) = config.audit.path.clone() else {
        bail!("the config has no audit.path");
    };
    let index = config.operator.audit_index.clone().unwrap_or_else(|| AuditIndex::default_path(&log));
    Ok((log, index))
}

fn time(name: &str, value: &Option<String>) -> anyhow::Result<Option<String>> {
    value
        .as_deref()
        .map(|value| {
            humantime::parse_rfc3339_weak(value)
                .map(|time| humantime::format_rfc3339_millis(time).to_string())
                .with_context(|| format!("--{name}: expected an RFC 3339 time such as 2026-01-01T00:00:00Z"))
        })
        .transpose()
}

/// Brings the index up to date and prints the matching records, one JSON line each.
pub fn query(args: &QueryArgs) -> anyhow::Result<String> {
    let (log, index_path) = files(&args.config)?;
    let mut index = AuditIndex::open(&index_path, &log)?;
    index.sync()?;
    let query = Query {
        from: time("from", &args.from)?,
        to: time("to", &args.to)?,
        principal: args.principal.clone(),
        key: args.key.clone(),
        op: args.op.clone(),
        outcome: args.outcome.clone(),
        limit: args.limit,
    };
    Ok(index.query(&query)?.join("\n"))
}

/// Rebuilds the index from the log.
pub fn reindex(config: &Path) -> anyhow::Result<String> {
    let (log, index_path) = files(config)?;
    let mut index = AuditIndex::open(&index_path, &log)?;
    let records = index.rebuild()?;
    Ok(format!("{}: {records} records indexed from {}", index_path.display(), log.display()))
}
