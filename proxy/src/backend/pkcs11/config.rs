//! `[backend] type = "pkcs11"`: the HSM's module, token, PIN source and sessions.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::error::{InvalidSetting, invalid};
use crate::secrets::SecretSource;

/// `[backend] type = "pkcs11"`: KEKs as non-extractable AES-256 keys on an HSM token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`. Required.
    pub module: PathBuf,
    /// The token, by label. Give this or `slot`.
    pub token_label: Option<String>,
    /// The token, by slot id. Give this or `token_label`.
    pub slot: Option<u64>,
    /// Where the user PIN comes from (never the config file itself). Required.
    pub pin: Option<SecretSource>,
    /// Sessions to open, each pinned to its own executor thread. Default 2.
    pub sessions: usize,
    /// While the token is unavailable, how often a session tries to reopen; requests
    /// in between fail fast with BACKEND_UNAVAILABLE. Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How new blobs are sealed on the token. Default `auto`: AES-GCM where the token
    /// offers it, else AES-CBC with HMAC-SHA256. Unwraps accept either.
    pub mechanism: Pkcs11Mechanism,
}

impl Default for Pkcs11Config {
    fn default() -> Self {
        Self {
            module: PathBuf::new(),
            token_label: None,
            slot: None,
            pin: None,
            sessions: 2,
            probe_interval: Duration::from_millis(250),
            mechanism: Pkcs11Mechanism::default(),
        }
    }
}

/// The sealing scheme for new PKCS#11 blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pkcs11Mechanism {
    /// `aes-gcm` if the token offers `CKM_AES_GCM`, else `aes-cbc-hmac-sha256`.
    #[default]
    Auto,
    /// `CKM_AES_GCM`, 96-bit IVs, 128-bit tags.
    AesGcm,
    /// `CKM_AES_CBC_PAD` then `CKM_SHA256_HMAC`, encrypt-then-MAC, for tokens without GCM.
    AesCbcHmacSha256,
}

impl Pkcs11Config {
    /// Checks every value; keys are relative to `[backend]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.module.as_os_str().is_empty() {
            return invalid("module", "the path of the vendor's PKCS#11 module is required");
        }
        if self.token_label.is_some() == self.slot.is_some() {
            return invalid("token_label", "give exactly one of token_label and slot");
        }
        match &self.pin {
            None => {
                return invalid(
                    "pin",
                    "the user PIN's source is required: pin = { env = \"VAR\" } or { file = \"/path\" }",
                );
            }
            Some(source) => source.validate().map_err(|message| InvalidSetting::new("pin", message))?,
        }
        if !(1..=256).contains(&self.sessions) {
            return invalid("sessions", format!("must be 1..=256, got {}", self.sessions));
        }
        if self.probe_interval.is_zero() {
            return invalid("probe_interval", "must be positive");
        }
        Ok(())
    }
}
