//! `[[acl]]`, `[quotas]` and `[audit]`: who may do what, how much of it, and the record
//! of what was done and refused.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::{InvalidSetting, invalid};
use crate::access::ops::OpSet;

/// One `[[acl]]` rule: who (every matcher given must match) may do which operations on
/// which keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AclRule {
    /// Glob on the certificate subject's common name.
    pub cn: Option<String>,
    /// Glob matched against each organisational unit of the subject.
    pub ou: Option<String>,
    /// Glob matched against each DNS subject alternative name.
    pub dns: Option<String>,
    /// Glob matched against each URI subject alternative name (SPIFFE IDs, say).
    pub uri: Option<String>,
    /// The peer uid of a Unix socket client.
    pub uid: Option<u32>,
    /// Glob on the name of the configured token an HTTP front end's client presented
    /// (`[[vault.tokens]]` `name`).
    pub token: Option<String>,
    /// Matches every client, anonymous ones included (no other matcher allowed).
    pub any: bool,
    /// Operations allowed: `wrap`, `unwrap`, `generate_data_key`, `rewrap`, `sign`,
    /// `verify`, `get_public_key`, or `*`.
    pub ops: OpSet,
    /// Globs on key names (`*` any run of characters, `?` one character).
    pub keys: Vec<String>,
}

impl AclRule {
    /// Whether the rule names no matcher at all.
    pub fn has_matcher(&self) -> bool {
        self.cn.is_some()
            || self.ou.is_some()
            || self.dns.is_some()
            || self.uri.is_some()
            || self.uid.is_some()
            || self.token.is_some()
    }

    /// Checks the rule; keys are relative to the rule (`ops`, `cn`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.any && self.has_matcher() {
            return invalid("any", "any = true matches everyone; drop the other matchers");
        }
        if !self.any && !self.has_matcher() {
            return invalid("cn", "a rule needs a matcher (cn, ou, dns, uri, uid, token) or any = true");
        }
        let globs = [
            ("cn", &self.cn),
            ("ou", &self.ou),
            ("dns", &self.dns),
            ("uri", &self.uri),
            ("token", &self.token),
        ];
        for (field, glob) in globs {
            if glob.as_ref().is_some_and(String::is_empty) {
                return invalid(field, "must not be empty");
            }
        }
        if self.ops.is_empty() {
            return invalid("ops", "list at least one operation");
        }
        if self.keys.is_empty() || self.keys.iter().any(String::is_empty) {
            return invalid("keys", "list at least one non-empty key glob");
        }
        Ok(())
    }
}

/// `[quotas]` (formerly `[identity_limits]`, still accepted): per client identity
/// (certificate principal, Unix uid, or `anonymous` for all unauthenticated clients
/// together). 0 means unlimited. Protocol limits on fields are `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Open connections per identity; a further connection is answered BUSY and
    /// closed. Default 0.
    pub max_connections: u32,
    /// Requests in flight per identity across its connections; beyond it, BUSY.
    /// Default 0.
    pub max_in_flight: u32,
    /// Sustained requests per second per identity (token bucket); beyond it, BUSY with
    /// the time until the next token. Default 0.
    pub rate: f64,
    /// Requests an identity may send at once above the rate. Default 100.
    pub burst: u32,
    /// The retry-after sent when a connection or in-flight quota is hit. Default 10 ms.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_in_flight: 0,
            rate: 0.0,
            burst: 100,
            retry_after: Duration::from_millis(10),
        }
    }
}

impl QuotaConfig {
    /// Whether any quota is configured at all.
    pub fn enabled(&self) -> bool {
        self.max_connections > 0 || self.max_in_flight > 0 || self.rate > 0.0
    }

    /// Checks every value; keys are relative to `[quotas]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return invalid("rate", "must be a non-negative number");
        }
        if self.rate > 0.0 && self.burst == 0 {
            return invalid("burst", "must be at least 1 when a rate is set");
        }
        Ok(())
    }
}

/// `[audit]`: the append-only, hash-chained JSON-lines audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log file, created if missing and appended to. Default: none (no audit log).
    pub path: Option<PathBuf>,
    /// Rotate the file before it would pass this many bytes; 0 never rotates. Default
    /// 64 MiB.
    pub max_file_bytes: u64,
    /// Rotated files kept beside the log (`<path>.1` ... `<path>.<keep_files>`); older
    /// ones are removed, and the log records through which record. Default 8.
    pub keep_files: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        let rotation = crate::audit::Rotation::default();
        Self { path: None, max_file_bytes: rotation.max_bytes, keep_files: rotation.keep }
    }
}

impl AuditConfig {
    /// Checks the rotation settings.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.keep_files == 0 {
            return invalid("keep_files", "must be at least 1 (set max_file_bytes = 0 to never rotate)");
        }
        Ok(())
    }

    /// The rotation these settings ask for.
    pub fn rotation(&self) -> crate::audit::Rotation {
        crate::audit::Rotation { max_bytes: self.max_file_bytes, keep: self.keep_files }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cn: Option<&str>, ops: &[&str], keys: &[&str]) -> AclRule {
        AclRule {
            cn: cn.map(str::to_owned),
            any: cn.is_none(),
            ops: OpSet::parse(ops.iter().copied()).unwrap(),
            keys: keys.iter().map(|s| (*s).to_owned()).collect(),
            ..AclRule::default()
        }
    }

    #[test]
    fn rules_are_validated() {
        assert!(OpSet::parse(["seal"]).is_err(), "an unknown operation never makes a rule");
        assert_eq!(rule(Some("a"), &[], &["k"]).validate().unwrap_err().key, "ops");
        assert_eq!(rule(Some("a"), &["wrap"], &[]).validate().unwrap_err().key, "keys");
        let mut nobody = rule(Some("a"), &["wrap"], &["k"]);
        nobody.cn = None;
        assert_eq!(nobody.validate().unwrap_err().key, "cn");
        rule(None, &["*"], &["*"]).validate().unwrap();
    }
}
