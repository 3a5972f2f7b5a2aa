//! `[backend] type = "soft"`: the embedded soft keystore's settings.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::error::{InvalidSetting, invalid};
use crate::secrets::SecretSource;

/// `[backend] type = "soft"`: KEKs in a local file sealed under a passphrase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoftConfig {
    /// Directory holding `keystore.kmx`. Default `./keymux-data`.
    pub data_dir: PathBuf,
    /// Where the passphrase comes from. Required in a config file; only the
    /// no-argument development default generates one.
    pub passphrase: Option<SecretSource>,
    /// Create the keystore, with a key named `default`, if it does not exist.
    /// Default false.
    pub create_if_missing: bool,
    /// Argon2id memory cost in KiB for a newly created keystore. Default 65536 (64 MiB).
    pub kdf_memory_kib: u32,
    /// Argon2id passes for a newly created keystore. Default 3.
    pub kdf_passes: u32,
}

impl Default for SoftConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./keymux-data"),
            passphrase: None,
            create_if_missing: false,
            kdf_memory_kib: 64 * 1024,
            kdf_passes: 3,
        }
    }
}

impl SoftConfig {
    /// A throwaway keystore in `dir`: created on first open with a key named `default`,
    /// its passphrase generated into `dir/passphrase`, and the cheapest KDF allowed.
    /// For tests, benches and the load generator's `--embedded` proxy; never for keys
    /// that matter.
    pub fn throwaway(dir: &std::path::Path) -> Self {
        Self {
            data_dir: dir.to_owned(),
            passphrase: Some(SecretSource::GeneratedFile(dir.join("passphrase"))),
            create_if_missing: true,
            kdf_memory_kib: 8 * 1024,
            kdf_passes: 1,
        }
    }

    /// The keystore file inside `data_dir`.
    pub fn keystore_path(&self) -> PathBuf {
        self.data_dir.join("keystore.kmx")
    }

    /// Checks every value; keys are relative to `[backend]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match &self.passphrase {
            None => {
                return invalid(
                    "passphrase",
                    "the soft keystore needs a passphrase source: passphrase = { env = \"VAR\" } \
                     or passphrase = { file = \"/path\" }",
                );
            }
            Some(source) => {
                source.validate().map_err(|message| InvalidSetting::new("passphrase", message))?
            }
        }
        if self.kdf_memory_kib < 8 * 1024 {
            return invalid("kdf_memory_kib", "must be at least 8192 (8 MiB)");
        }
        if self.kdf_passes == 0 {
            return invalid("kdf_passes", "must be at least 1");
        }
        Ok(())
    }
}
