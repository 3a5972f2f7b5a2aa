//! `[backend]`: which backend holds the keys. Each backend's own table lives in its
//! folder (`soft/config.rs`, `pkcs11/config.rs`, `kms/config.rs`); this is only the
//! choice between them.

use serde::Deserialize;

use super::kms::KmsConfig;
use super::pkcs11::Pkcs11Config;
use super::soft::SoftConfig;
use crate::config::error::InvalidSetting;

/// `[backend]`: where the key-encryption keys live, chosen by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum BackendConfig {
    /// The embedded soft keystore (development only).
    Soft(SoftConfig),
    /// An HSM through PKCS#11.
    Pkcs11(Pkcs11Config),
    /// AWS KMS, or a server that speaks its API.
    Kms(KmsConfig),
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Soft(SoftConfig::default())
    }
}

impl BackendConfig {
    /// Checks the chosen backend's table; keys are relative to `[backend]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match self {
            BackendConfig::Soft(soft) => soft.validate(),
            BackendConfig::Pkcs11(hsm) => hsm.validate(),
            BackendConfig::Kms(kms) => kms.validate(),
        }
    }

    /// One line saying where the keys live, for the banner and `check-config`.
    pub fn describe(&self) -> String {
        match self {
            BackendConfig::Soft(soft) => format!("soft keystore {}", soft.keystore_path().display()),
            BackendConfig::Pkcs11(hsm) => {
                let token = match (&hsm.token_label, hsm.slot) {
                    (Some(label), _) => format!("token {label:?}"),
                    (None, slot) => format!("slot {}", slot.unwrap_or_default()),
                };
                format!("PKCS#11 {} {token}, {} sessions", hsm.module.display(), hsm.sessions)
            }
            BackendConfig::Kms(kms) => {
                let regions: Vec<String> = kms
                    .regions
                    .iter()
                    .map(|r| match &r.endpoint {
                        Some(endpoint) => format!("{} ({endpoint})", r.region),
                        None => r.region.clone(),
                    })
                    .collect();
                format!("KMS {}, aliases alias/{}/...", regions.join(" then "), kms.alias_prefix)
            }
        }
    }
}
