//! Live config reload: SIGHUP, `POST /reload` on the admin listener (`keymux reload`)
//! and, with `operator.watch_interval`, a change of the config file.
//!
//! A reload reads and validates the whole file, then compares it with the config in
//! service. If a setting that only a restart can change differs (listen addresses, the
//! backend and its table, the TLS and front-end tables, the protocol limits, queue
//! capacity, executor threads, ...), nothing changes and the refusal names every such
//! key; a file that does not parse or validate keeps the old config too, and the error
//! names the key. Otherwise the live settings are swapped in:
//!
//! | setting | takes effect |
//! |---|---|
//! | `batch.max_batch`, `batch.max_delay` | the next batch an executor takes |
//! | `batch.busy_retry_after` | the next BUSY answer |
//! | `cache.max_entries`, `cache.ttl`, `cache.tti` | at once; the cache starts over empty |
//! | `[[acl]]` | the next request of every connection |
//! | `[quotas]` | the next request (rate, in flight), the next connection (`max_connections`) |
//! | `server.max_connections_per_source` | the next connection |
//! | `[tls]` certificate files | re-read on every reload; new connections |
//! | `[operator]` token and watch interval | the next admin request, the next poll |
//!
//! Each piece is an atomic (arc-swap or an atomic integer) read on the request path,
//! so nothing there takes a lock. Reloads are serialised by one mutex, so a storm of
//! SIGHUPs leaves the config of the last file read. Every reload, applied or refused,
//! is audited with the keys that changed (and, for plain numbers and durations, their
//! old and new values); secret sources and ACL contents are named, never shown.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::admission::SourceLimits;
use super::connection::ConnectionContext;
use super::reload::CertReloader;
use crate::audit::{AuditLog, Event};
use crate::batch::{BatchSettings, KeyQueues};
use crate::cache::UnwrapCache;
use crate::config::{Config, ConfigError};
use crate::transport::tls::TlsError;

/// Settings a reload may change; any other differing key needs a restart. An entry
/// ending in `.` covers the whole table.
const LIVE_KEYS: &[&str] = &[
    "batch.max_batch",
    "batch.max_delay",
    "batch.busy_retry_after",
    "cache.max_entries",
    "cache.ttl",
    "cache.tti",
    "acl",
    "quotas.",
    "server.max_connections_per_source",
    "operator.token",
    "operator.watch_interval",
];

/// Live keys whose old and new values may go into the audit record (numbers and
/// durations, never a secret source or an ACL rule).
const SHOWN_KEYS: &[&str] = &["batch.", "cache.", "quotas.", "server.max_connections_per_source"];

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The file could not be read, parsed or validated; the error names the key.
    #[error("keeping the current config: {0}")]
    Invalid(#[from] ConfigError),
    /// The file changes settings that only a restart can change.
    #[error("keeping the current config: these settings change only on restart: {}", keys.join(", "))]
    RestartRequired {
        /// The dotted keys that differ.
        keys: Vec<String>,
    },
    /// The certificate files could not be loaded.
    #[error("keeping the current config: tls: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// One line per changed key (`batch.max_batch: 64 -> 32`, `acl: 3 -> 4 rules`).
    pub changes: Vec<String>,
    /// Whether certificates were re-read.
    pub certificates: bool,
}

/// Adjusts a config read from the file before it is compared (the command line's
/// overrides of `server.listen` and `admin.listen`, say).
pub type Overlay = Box<dyn Fn(&mut Config) + Send + Sync>;

/// The running proxy's live settings and what a reload swaps.
pub struct LiveConfig {
    current: ArcSwap<Config>,
    ctx: Arc<ConnectionContext>,
    batch: Arc<ArcSwap<BatchSettings>>,
    queues: Arc<KeyQueues>,
    cache: Option<Arc<UnwrapCache>>,
    sources: Arc<SourceLimits>,
    certs: Option<Arc<CertReloader>>,
    audit: AuditLog,
    overlay: Mutex<Option<Overlay>>,
    /// Held for the whole of one reload.
    serial: Mutex<()>,
}

/// The pieces of a started proxy a reload reaches.
pub(super) struct LiveParts {
    pub(super) ctx: Arc<ConnectionContext>,
    pub(super) batch: Arc<ArcSwap<BatchSettings>>,
    pub(super) queues: Arc<KeyQueues>,
    pub(super) cache: Option<Arc<UnwrapCache>>,
    pub(super) sources: Arc<SourceLimits>,
    pub(super) certs: Option<Arc<CertReloader>>,
    pub(super) audit: AuditLog,
}

impl LiveConfig {
    pub(super) fn new(config: Config, parts: LiveParts) -> Self {
        let LiveParts { ctx, batch, queues, cache, sources, certs, audit } = parts;
        Self {
            current: ArcSwap::from_pointee(config),
            ctx,
            batch,
            queues,
            cache,
            sources,
            certs,
            audit,
            overlay: Mutex::new(None),
            serial: Mutex::new(()),
        }
    }

    /// The batch settings executors read.
    pub(super) fn batch_settings(config: &Config) -> BatchSettings {
        BatchSettings { max_batch: config.batch.max_batch, max_delay: config.batch.max_delay }
    }

    /// The audit log reloads are recorded in.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The config in service.
    pub fn current(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// Sets what is applied to every config read from the file before it is compared
    /// (the command line's overrides).
    pub fn set_overlay(&self, overlay: Overlay) {
        *self.overlay.lock().unwrap_or_else(PoisonError::into_inner) = Some(overlay);
    }

    /// Reads the config file again and applies it (see the module docs). Without a
    /// file (the development default) only the certificates are re-read.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
        let current = self.current();
        let Some(path) = current.source.clone() else {
            return self.apply((*current).clone(), trigger);
        };
        match Config::load(&path) {
            Ok(mut config) => {
                if let Some(overlay) = &*self.overlay.lock().unwrap_or_else(PoisonError::into_inner) {
                    overlay(&mut config);
                }
                self.apply(config, trigger)
            }
            Err(error) => Err(self.refused(trigger, error.into())),
        }
    }

    /// Applies `config` in place of the one in service, or changes nothing and says
    /// why. `trigger` (`sighup`, `admin`, `file change`) goes to the audit log.
    pub fn apply(&self, config: Config, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
        let _serial = self.serial.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.current();
        if let Err(error) = config.validate() {
            return Err(self.refused(trigger, error.into()));
        }
        let changed = changed_keys(&old, &config);
        let restart: Vec<String> =
            changed.iter().filter(|key| !is_live(key)).map(|key| key.name.clone()).collect();
        if !restart.is_empty() {
            return Err(self.refused(trigger, ReloadError::RestartRequired { keys: restart }));
        }
        let mut outcome = ReloadOutcome::default();
        if let Some(certs) = &self.certs {
            if let Err(error) = certs.reload(trigger) {
                return Err(self.refused(trigger, error.into()));
            }
            outcome.certificates = true;
        }
        self.swap_in(&old, &config);
        outcome.changes = changed.iter().map(|key| key.describe(&old, &config)).collect();
        let summary =
            if outcome.changes.is_empty() { "no changes".to_owned() } else { outcome.changes.join("; ") };
        tracing::info!(trigger, %summary, "config reloaded");
        self.audit
            .record(Event::Admin { action: "config_reload".into(), detail: format!("{trigger}: {summary}") });
        self.current.store(Arc::new(config));
        Ok(outcome)
    }

    fn swap_in(&self, old: &Config, new: &Config) {
        let settings = Self::batch_settings(new);
        if **self.batch.load() != settings {
            self.batch.store(Arc::new(settings));
        }
        self.queues.set_busy_retry_after(new.batch.busy_retry_after);
        if let Some(cache) = &self.cache {
            let bounds = |c: &Config| (c.cache.max_entries, c.cache.ttl, c.cache.tti);
            if bounds(old) != bounds(new) {
                cache.reconfigure(&new.cache);
            }
        }
        if format!("{:?}", old.acl) != format!("{:?}", new.acl) {
            self.ctx.acl.replace(new.acl.clone());
        }
        if format!("{:?}", old.quotas) != format!("{:?}", new.quotas) {
            self.ctx.quotas.replace(new.quotas.clone());
        }
        self.sources.set_per_source(new.server.max_connections_per_source);
    }

    fn refused(&self, trigger: &str, error: ReloadError) -> ReloadError {
        tracing::warn!(trigger, %error, "config reload refused");
        self.audit.record(Event::Admin {
            action: "config_reload_refused".into(),
            detail: format!("{trigger}: {error}"),
        });
        error
    }

    /// Polls the config file every `operator.watch_interval` (read afresh each time;
    /// zero: checked again a second later) until `shutdown`, reloading when it changes.
    pub(super) async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut seen = self.current().source.as_deref().and_then(fingerprint);
        loop {
            let interval = self.current().operator.watch_interval;
            let enabled = !interval.is_zero();
            tokio::select! {
                () = tokio::time::sleep(if enabled { interval } else { Duration::from_secs(1) }) => {}
                () = shutdown.cancelled() => return,
            }
            let Some(path) = self.current().source.clone() else { return };
            let now = fingerprint(&path);
            if enabled && now != seen {
                seen = now;
                let live = Arc::clone(&self);
                let _ = tokio::task::spawn_blocking(move || live.reload("file change")).await;
            }
        }
    }
}

impl std::fmt::Debug for LiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveConfig").field("source", &self.current().source).finish_non_exhaustive()
    }
}

fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn is_live(key: &ChangedKey) -> bool {
    matches_any(LIVE_KEYS, &key.name)
}

fn matches_any(list: &[&str], name: &str) -> bool {
    list.iter().any(|entry| match entry.strip_suffix('.') {
        Some(table) => name == table || name.strip_prefix(table).is_some_and(|rest| rest.starts_with('.')),
        None => name == *entry,
    })
}

/// A dotted key whose value differs, with its old and new values as `Debug` prints them.
#[derive(Debug)]
struct ChangedKey {
    name: String,
    old: String,
    new: String,
}

impl ChangedKey {
    fn describe(&self, old: &Config, new: &Config) -> String {
        if self.name == "acl" {
            return format!("acl: rules changed ({} -> {} rules)", old.acl.len(), new.acl.len());
        }
        if matches_any(SHOWN_KEYS, &self.name) && !self.old.contains('\n') && !self.new.contains('\n') {
            return format!("{}: {} -> {}", self.name, self.old, self.new);
        }
        format!("{} changed", self.name)
    }
}

/// Every key of the two configs whose value differs: a table's own settings by
/// `table.key`, lists and optional tables as a whole. Read from the configs'
/// pretty-printed `Debug` form, so a new setting is covered without a list to keep.
fn changed_keys(old: &Config, new: &Config) -> Vec<ChangedKey> {
    let old_text = format!("{old:#?}");
    let new_text = format!("{new:#?}");
    let old_fields = fields(&old_text, 4);
    let new_fields = fields(&new_text, 4);
    let mut changed = Vec::new();
    for ((name, old_value), (_, new_value)) in old_fields.iter().zip(&new_fields) {
        if old_value == new_value || *name == "source" {
            continue;
        }
        let old_inner = fields(old_value, 8);
        let new_inner = fields(new_value, 8);
        let is_table =
            old_value.trim_end().ends_with('{') || old_value.lines().next().is_some_and(|l| l.ends_with('{'));
        if is_table && !old_inner.is_empty() && old_inner.len() == new_inner.len() {
            for ((key, a), (_, b)) in old_inner.iter().zip(&new_inner) {
                if a != b {
                    changed.push(ChangedKey {
                        name: format!("{name}.{key}"),
                        old: value_of(a),
                        new: value_of(b),
                    });
                }
            }
        } else {
            changed.push(ChangedKey {
                name: (*name).to_owned(),
                old: value_of(old_value),
                new: value_of(new_value),
            });
        }
    }
    changed
}

/// The fields of a pretty-printed struct at `indent` spaces: (name, its text from the
/// name line on).
fn fields(text: &str, indent: usize) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        let depth = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        if depth == indent {
            if let Some((name, _)) = rest.split_once(": ") {
                if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    out.push((name, String::new()));
                }
            }
        }
        if depth >= indent {
            if let Some((_, value)) = out.last_mut() {
                value.push_str(line);
                value.push('\n');
            }
        }
    }
    out
}

/// The value part of a field's text (`max_batch: 64,` gives `64`).
fn value_of(text: &str) -> String {
    let trimmed = text.trim();
    let value = trimmed.split_once(": ").map_or(trimmed, |(_, value)| value);
    value.strip_suffix(',').unwrap_or(value).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::development()
    }

    #[test]
    fn changed_keys_name_table_and_key_with_values() {
        let old = base();
        let mut new = base();
        new.batch.max_batch = 32;
        new.cache.ttl = Duration::from_secs(7);
        new.server.listen = "127.0.0.1:1".parse().unwrap();
        let changed = changed_keys(&old, &new);
        let names: Vec<&str> = changed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["server.listen", "batch.max_batch", "cache.ttl"]);
        assert_eq!(changed[1].describe(&old, &new), "batch.max_batch: 64 -> 32");
        assert!(!is_live(&changed[0]));
        assert!(is_live(&changed[1]) && is_live(&changed[2]));
    }

    #[test]
    fn backend_tables_and_optional_tables_are_restart_only() {
        let old = base();
        let mut new = base();
        new.tls = Some(crate::config::TlsConfig::new("c".into(), "k".into()));
        new.quotas.max_connections = 3;
        let changed = changed_keys(&old, &new);
        let names: Vec<&str> = changed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tls", "quotas.max_connections"]);
        assert!(!is_live(&changed[0]));
        assert!(is_live(&changed[1]));
        assert!(changed_keys(&old, &base()).is_empty(), "equal configs differ nowhere");
    }
}
