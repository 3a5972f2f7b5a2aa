//! `keymux report`: compliance reports, as JSON or a readable HTML page.
//!
//! - `pci-dss-3.6.4` (cryptoperiods): every key's current version, its age against
//!   the configured cryptoperiod (`--cryptoperiod`, default 365 days), its last
//!   rotation, the versions that still decrypt, and which keys are overdue. Read from
//!   the backend the config names.
//! - `pci-dss-10.2` (audit trails): over a period, the events the audit log holds per
//!   principal and key (denials, failed handshakes, refused connections, their
//!   outcomes) and every admin action. Read from the audit index (brought up to date
//!   from the log first). The log records refusals and admin actions, not each allowed
//!   operation; the report says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::audit::index::{AuditIndex, Tally};
use crate::config::Config;
use crate::keys::lifecycle::unix_now;
use crate::keys::{KeyInfo, VersionState};

/// Options of `keymux report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Which report: `pci-dss-3.6.4` or `pci-dss-10.2`.
    pub report: String,
    /// The config file: the backend (3.6.4) or the audit log (10.2).
    #[arg(long, short = 'c', env = "KEYMUX_CONFIG")]
    pub config: PathBuf,
    /// `json` or `html`.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// 3.6.4: the cryptoperiod keys are measured against (`365d`, `90d`).
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub cryptoperiod: Duration,
    /// 10.2: the period's start (RFC 3339); default 30 days before `--to`.
    #[arg(long)]
    pub from: Option<String>,
    /// 10.2: the period's end (RFC 3339); default now.
    #[arg(long)]
    pub to: Option<String>,
}

/// PCI DSS 3.6.4: one key's cryptoperiod status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPeriod {
    /// The key name.
    pub key: String,
    /// Its type.
    pub key_type: String,
    /// The version new operations use.
    pub current_version: u32,
    /// When the current version was created (RFC 3339).
    pub current_created: String,
    /// The current version's age, in days.
    pub age_days: u64,
    /// The last rotation (the current version's creation), when the key has been rotated.
    pub last_rotation: Option<String>,
    /// When the current version reaches the end of its cryptoperiod.
    pub due: String,
    /// Past its cryptoperiod.
    pub overdue: bool,
    /// Versions whose blobs still decrypt (enabled, at or above the minimum).
    pub decryptable_versions: Vec<u32>,
    /// Every version.
    pub versions: u32,
}

/// The PCI DSS 3.6.4 report.
#[derive(Debug, Clone, Serialize)]
pub struct CryptoperiodReport {
    /// `pci-dss-3.6.4`.
    pub report: &'static str,
    /// When it was made.
    pub generated: String,
    /// The cryptoperiod, in days.
    pub cryptoperiod_days: u64,
    /// Every key.
    pub keys: Vec<KeyPeriod>,
    /// The names of the keys past their cryptoperiod.
    pub overdue: Vec<String>,
}

/// The PCI DSS 10.2 report.
#[derive(Debug, Clone, Serialize)]
pub struct AuditTrailReport {
    /// `pci-dss-10.2`.
    pub report: &'static str,
    /// When it was made.
    pub generated: String,
    /// The period's start (inclusive).
    pub from: String,
    /// The period's end (exclusive).
    pub to: String,
    /// What the audit log covers.
    pub scope: &'static str,
    /// Events by event, principal, key, operation and outcome.
    pub access: Vec<Tally>,
    /// Denied requests in the period.
    pub denials: u64,
    /// Failed handshakes in the period.
    pub failed_handshakes: u64,
    /// The admin records, as the log holds them.
    pub admin_actions: Vec<serde_json::Value>,
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// The 3.6.4 report of `keys` at `now` (Unix seconds).
pub fn cryptoperiods(keys: &[KeyInfo], cryptoperiod: Duration, now: u64) -> CryptoperiodReport {
    let period = cryptoperiod.as_secs();
    let rows: Vec<KeyPeriod> = keys
        .iter()
        .filter_map(|key| {
            let current = key.current_version().ok()?;
            let info = key.versions.iter().find(|v| v.version == current)?;
            let age = now.saturating_sub(info.created_at);
            Some(KeyPeriod {
                key: key.name.clone(),
                key_type: key.key_type.name().to_owned(),
                current_version: current,
                current_created: rfc3339(info.created_at),
                age_days: age / 86_400,
                last_rotation: (key.versions.len() > 1).then(|| rfc3339(info.created_at)),
                due: rfc3339(info.created_at.saturating_add(period)),
                overdue: age > period,
                decryptable_versions: key
                    .versions
                    .iter()
                    .filter(|v| v.state == VersionState::Enabled && v.version >= key.min_decryption_version)
                    .map(|v| v.version)
                    .collect(),
                versions: key.versions.len() as u32,
            })
        })
        .collect();
    CryptoperiodReport {
        report: "pci-dss-3.6.4",
        generated: rfc3339(now),
        cryptoperiod_days: period / 86_400,
        overdue: rows.iter().filter(|row| row.overdue).map(|row| row.key.clone()).collect(),
        keys: rows,
    }
}

/// The 10.2 report over `[from, to)` from `index`.
pub fn audit_trail(index: &AuditIndex, from: &str, to: &str, now: u64) -> anyhow::Result<AuditTrailReport> {
    let access = index.tally(from, to)?;
    let sum = |event: &str| access.iter().filter(|t| t.event == event).map(|t| t.count).sum::<u64>();
    let repeated_denials: u64 =
        access.iter().filter(|t| t.event == "repeated" && t.outcome == "denied").map(|t| t.count).sum();
    let repeated_handshakes: u64 =
        access.iter().filter(|t| t.event == "repeated" && t.outcome == "failed").map(|t| t.count).sum();
    let admin_actions = index
        .admin_actions(from, to, 10_000)?
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    Ok(AuditTrailReport {
        report: "pci-dss-10.2",
        generated: rfc3339(now),
        from: from.to_owned(),
        to: to.to_owned(),
        scope: "the audit log records denied requests, failed handshakes, refused connections and \
                admin actions (start, stop, config and certificate reloads, key changes); allowed \
                operations are counted in the metrics, not recorded one by one",
        denials: sum("denied") + repeated_denials,
        failed_handshakes: sum("handshake_failed") + repeated_handshakes,
        access,
        admin_actions,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(title: &str, summary: &str, headers: &[&str], rows: &[Vec<String>], extra: &str) -> String {
    let head: String = headers.iter().map(|h| format!("<th>{}</th>", escape(h))).collect();
    let body: String = rows
        .iter()
        .map(|row| {
            let cells: String = row.iter().map(|cell| format!("<td>{}</td>", escape(cell))).collect();
            format!("<tr>{cells}</tr>\n")
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.3em .6em;text-align:left}}th{{background:#eee}}\
         .overdue{{color:#b00;font-weight:bold}}</style></head>\n<body><h1>{title}</h1>\n<p>{summary}</p>\n\
         <table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n{extra}</body></html>\n",
        title = escape(title),
    )
}

/// The 3.6.4 report as an HTML page.
pub fn cryptoperiods_html(report: &CryptoperiodReport) -> String {
    let rows: Vec<Vec<String>> = report
        .keys
        .iter()
        .map(|k| {
            vec![
                k.key.clone(),
                k.key_type.clone(),
                k.current_version.to_string(),
                k.current_created.clone(),
                k.age_days.to_string(),
                k.last_rotation.clone().unwrap_or_else(|| "never".into()),
                k.due.clone(),
                if k.overdue { "OVERDUE".into() } else { "ok".into() },
                k.decryptable_versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            ]
        })
        .collect();
    let summary = format!(
        "Generated {}. Cryptoperiod {} days. {} keys, {} overdue{}.",
        report.generated,
        report.cryptoperiod_days,
        report.keys.len(),
        report.overdue.len(),
        if report.overdue.is_empty() { String::new() } else { format!(": {}", report.overdue.join(", ")) }
    );
    let headers = [
        "key",
        "type",
        "current",
        "created",
        "age (days)",
        "last rotation",
        "due",
        "status",
        "decryptable versions",
    ];
    page("PCI DSS 3.6.4: key cryptoperiods", &escape(&summary), &headers, &rows, "")
        .replace("<td>OVERDUE</td>", "<td class=\"overdue\">OVERDUE</td>")
}

/// The 10.2 report as an HTML page.
pub fn audit_trail_html(report: &AuditTrailReport) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = report
        .access
        .iter()
        .map(|t| {
            vec![
                t.event.clone(),
                dash(&t.principal),
                dash(&t.key),
                dash(&t.op),
                t.outcome.clone(),
                t.count.to_string(),
            ]
        })
        .collect();
    let admin: String = report
        .admin_actions
        .iter()
        .map(|record| {
            let field = |name: &str| record.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&field("time")),
                escape(&field("action")),
                escape(&field("detail"))
            )
        })
        .collect();
    let extra = format!(
        "<h2>Admin actions</h2>\n<table><thead><tr><th>time</th><th>action</th><th>detail</th></tr></thead>\
         <tbody>\n{admin}</tbody></table>\n"
    );
    let summary = format!(
        "Generated {}. Period {} to {}. {} denials, {} failed handshakes, {} admin actions. Scope: {}.",
        report.generated,
        report.from,
        report.to,
        report.denials,
        report.failed_handshakes,
        report.admin_actions.len(),
        report.scope
    );
    let headers = ["event", "principal", "key", "operation", "outcome", "count"];
    page("PCI DSS 10.2: audit trail", &escape(&summary), &headers, &rows, &extra)
}

fn time_arg(name: &str, value: &Option<String>, default: SystemTime) -> anyhow::Result<String> {
    let time = match value {
        Some(value) => humantime::parse_rfc3339_weak(value)
            .with_context(|| format!("--{name}: expected an RFC 3339 time such as 2026-01-01T00:00:00Z"))?,
        None => default,
    };
    Ok(humantime::format_rfc3339_millis(time).to_string())
}

/// Makes the report `args` names and returns it as text.
pub fn run(args: &ReportArgs) -> anyhow::Result<String> {
    let html = match args.format.as_str() {
        "json" => false,
        "html" => true,
        other => bail!("--format: expected json or html, got {other:?}"),
    };
    let config = Config::load(&args.config)?;
    let now = unix_now();
    match args.report.as_str() {
        "pci-dss-3.6.4" => {
            let backend = crate::backend::open(&config.backend)?;
            let keys = backend.list_keys().context("listing the backend's keys")?;
            let report = cryptoperiods(&keys, args.cryptoperiod, now);
            Ok(if html { cryptoperiods_html(&report) } else { serde_json::to_string_pretty(&report)? })
        }
        "pci-dss-10.2" => {
            let (log, index_path) = audit_files(&config)?;
            let mut index = AuditIndex::open(&index_path, &log)?;
            index.sync()?;
            let to_default = SystemTime::now();
            let to = time_arg("to", &args.to, to_default)?;
            let to_time = humantime::parse_rfc3339_weak(&to).unwrap_or(to_default);
            let from = time_arg("from", &args.from, to_time - Duration::from_secs(30 * 86_400))?;
            let report = audit_trail(&index, &from, &to, now)?;
            Ok(if html { audit_trail_html(&report) } else { serde_json::to_string_pretty(&report)? })
        }
        other => bail!("unknown report {other:?}: expected pci-dss-3.6.4 or pci-dss-10.2"),
    }
}

fn audit_files(config: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    let Some(log) = config.audit.path.clone() else { bail!("the config has no audit.path") };
    let index =
        config.operator.audit_index.clone().unwrap_or_else(|| AuditIndex::default_path(Path::new(&log)));
    Ok((log, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, VersionInfo};

    fn version(version: u32, state: VersionState, created_at: u64) -> VersionInfo {
        VersionInfo { version, state, created_at, disabled_at: None }
    }

    #[test]
    fn overdue_keys_and_decryptable_versions() {
        let day = 86_400;
        let keys = vec![
            KeyInfo {
                name: "old".into(),
                key_type: KeyType::Aes256,
                versions: vec![version(1, VersionState::Enabled, 0)],
                min_decryption_version: 1,
            },
            KeyInfo {
                name: "<rotated>".into(),
                key_type: KeyType::Aes256,
                versions: vec![
                    version(1, VersionState::Enabled, 0),
                    version(2, VersionState::Disabled, 10 * day),
                    version(3, VersionState::Enabled, 390 * day),
                ],
                min_decryption_version: 1,
            },
        ];
        let report = cryptoperiods(&keys, Duration::from_secs(365 * day), 400 * day);
        assert_eq!(report.overdue, ["old"]);
        assert_eq!(report.keys[0].age_days, 400);
        assert_eq!(report.keys[0].last_rotation, None);
        assert_eq!(report.keys[1].current_version, 3);
        assert_eq!(report.keys[1].decryptable_versions, [1, 3]);
        assert_eq!(report.keys[1].last_rotation.as_deref(), Some("1971-01-26T00:00:00Z"));
        let html = cryptoperiods_html(&report);
        assert!(html.contains("&lt;rotated&gt;") && !html.contains("<rotated>"), "escaped");
        assert!(html.contains("class=\"overdue\""));
    }
}
