//! `[operator]`: the operator's endpoints on the admin listener (config reload, audit
//! queries and exports) and how the config file is watched.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{InvalidSetting, invalid};
use crate::secrets::SecretSource;

/// `[operator]`: who may reload the config and read the audit trail over the admin
/// listener, and whether the config file is watched for changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorConfig {
    /// The bearer token `POST /reload`, `GET /audit/query` and `GET /audit/export`
    /// require (`{ env = "..." }` or `{ file = "..." }`). Absent: those endpoints
    /// answer 403, and only SIGHUP reloads. Keep the admin listener on loopback.
    pub token: Option<SecretSource>,
    /// How often the config file is checked for changes (modification time and size);
    /// a change reloads it. Default `0s`: no watch, reload on SIGHUP or `keymux reload`.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// The SQLite index of the audit log the query endpoint reads. Default: the audit
    /// log's path with `.index.sqlite` appended. Rebuildable from the log at any time
    /// (`keymux audit reindex`).
    pub audit_index: Option<PathBuf>,
}

impl OperatorConfig {
    /// Checks every value; keys are relative to `[operator]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Some(token) = &self.token {
            token.validate().or_else(|message| invalid("token", message))?;
        }
        if !self.watch_interval.is_zero() && self.watch_interval < Duration::from_millis(100) {
            return invalid("watch_interval", "must be 0s (off) or at least 100ms");
        }
        Ok(())
    }
}
