//! `keymux key ...`: the one command line for keys and versions, on every backend.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};

use crate::backend::{Backend, OpenError};
use crate::config::{Config, ConfigError};
use crate::keys::lifecycle::unix_now;
use crate::keys::{KeyAdminError, KeyInfo, KeyLifecycle, KeyType, VersionState};

/// Options of `keymux key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeyCommand,
    /// TOML config naming the backend; without it, the development soft keystore.
    #[arg(long, short = 'c', global = true, env = "KEYMUX_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A `keymux key` subcommand.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key with version 1.
    Create {
        /// Key name.
        name: String,
        /// Key type: aes-256 (wraps; the default), ml-kem-768 (wraps, post-quantum),
        /// or a signing type: ec-p256, ec-p384, ed25519, rsa-3072-pss, rsa-3072-pkcs1,
        /// ml-dsa-65.
        #[arg(long = "type", default_value_t = KeyType::Aes256)]
        key_type: KeyType,
    },
    /// Add a version, which becomes current for new wraps.
    Rotate {
        /// Key name.
        name: String,
    },
    /// List keys, versions, states, creation times and the current version's age.
    List,
    /// Disable a version: its blobs no longer unwrap (KEY_DISABLED).
    Disable {
        /// Key name.
        name: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Enable a disabled version again.
    Enable {
        /// Key name.
        name: String,
        /// The version.
        #[arg(long)]
        version: u32,
    },
    /// Refuse unwraps of blobs from versions below N.
    SetMinDecryptionVersion {
        /// Key name.
        name: String,
        /// The lowest version that may still unwrap.
        version: u32,
    },
    /// Destroy a version's key material for good: never the current or the latest
    /// version, and only one disabled for at least `keys.destroy_safe_period` (7 days).
    Destroy {
        /// Key name.
        name: String,
        /// The version.
        #[arg(long)]
        version: u32,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Why a key command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCommandError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The key rules or the backend refused the operation.
    #[error(transparent)]
    Admin(#[from] KeyAdminError),
    /// The command refused to act.
    #[error("{0}")]
    Refused(String),
}

/// Runs a key command and returns what to print.
pub fn run(args: &KeyArgs) -> Result<String, KeyCommandError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::development(),
    };
    let backend = crate::backend::open(&config.backend)?;
    execute(backend.as_ref(), &args.command, config.keys.destroy_safe_period, &mut std::io::stdin().lock())
}

/// Runs `command` on `backend`; a version must have been disabled for
/// `destroy_safe_period` before it is destroyed; `confirm` answers destroy's question.
pub fn execute(
    backend: &dyn Backend,
    command: &KeyCommand,
    destroy_safe_period: Duration,
    confirm: &mut dyn BufRead,
) -> Result<String, KeyCommandError> {
    Ok(match command {
        KeyCommand::Create { name, key_type } => {
            backend.create_key(name, *key_type)?;
            format!("created {key_type} key {name:?} version 1")
        }
        KeyCommand::Rotate { name } => {
            let version = backend.rotate_key(name)?;
            format!("key {name:?} rotated: version {version} is current")
        }
        KeyCommand::List => render_list(&backend.list_keys().map_err(KeyAdminError::from)?, unix_now()),
        KeyCommand::Disable { name, version } => {
            backend.set_version_state(name, *version, VersionState::Disabled)?;
            format!("key {name:?} version {version} disabled")
        }
        KeyCommand::Enable { name, version } => {
            backend.set_version_state(name, *version, VersionState::Enabled)?;
            format!("key {name:?} version {version} enabled")
        }
        KeyCommand::SetMinDecryptionVersion { name, version } => {
            backend.set_min_decryption_version(name, *version)?;
            format!("key {name:?}: blobs from versions below {version} no longer unwrap")
        }
        KeyCommand::Destroy { name, version, yes } => {
            backend.check_destroyable(name, *version, destroy_safe_period)?;
            if !yes && !confirmed(name, *version, confirm) {
                return Err(KeyCommandError::Refused("not confirmed; nothing destroyed".into()));
            }
            backend.destroy_version(name, *version, destroy_safe_period)?;
            format!("key {name:?} version {version} destroyed")
        }
    })
}

/// Asks to type the key name; `false` unless it is typed exactly.
fn confirmed(name: &str, version: u32, answer: &mut dyn BufRead) -> bool {
    if std::io::stdin().is_terminal() {
        eprint!(
            "Blobs wrapped under {name:?} version {version} will never unwrap again. Type the key name to confirm: "
        );
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    answer.read_line(&mut line).is_ok() && line.trim_end() == name
}

/// One row per version, the current one marked with its age.
fn render_list(keys: &[KeyInfo], now: u64) -> String {
    let mut out = format!(
        "{:<24} {:<14} {:>7}  {:<9} {:<21} {}\n",
        "KEY", "TYPE", "VERSION", "STATE", "CREATED (UTC)", "NOTE"
    );
    for key in keys {
        let current = key.current_version().ok();
        for version in &key.versions {
            let created =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(version.created_at));
            let state = match version.state {
                VersionState::Enabled if version.version < key.min_decryption_version => "retired",
                VersionState::Enabled => "enabled",
                VersionState::Disabled => "disabled",
            };
            let ago = |since: u64| humantime::format_duration(Duration::from_secs(now.saturating_sub(since)));
            let note = match (current == Some(version.version), version.disabled_at) {
                (true, _) => format!("current, age {}", ago(version.created_at)),
                (false, Some(disabled_at)) => format!("disabled {} ago", ago(disabled_at)),
                (false, None) => String::new(),
            };
            out.push_str(&format!(
                "{:<24} {:<14} {:>7}  {:<9} {:<21} {note}\n",
                key.name,
                key.key_type.name(),
                version.version,
                state,
                created.to_string()
            ));
        }
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::VersionInfo;

    #[test]
    fn list_marks_the_current_version_and_its_age() {
        let key = KeyInfo {
            name: "payments".into(),
            key_type: KeyType::Ed25519,
            versions: vec![
                VersionInfo { version: 1, state: VersionState::Enabled, created_at: 0, disabled_at: None },
                VersionInfo {
                    version: 2,
                    state: VersionState::Disabled,
                    created_at: 100,
                    disabled_at: Some(1000),
                },
                VersionInfo { version: 3, state: VersionState::Enabled, created_at: 1000, disabled_at: None },
            ],
            min_decryption_version: 2,
        };
        let text = render_list(&[key], 1000 + 3661);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains("retired"), "{text}");
        assert!(lines[2].contains("disabled") && lines[2].contains("disabled 1h 1m 1s ago"), "{text}");
        assert!(lines[3].contains("current, age 1h 1m 1s"), "{text}");
        assert!(lines[3].contains("1970-01-01T00:16:40Z"));
        assert!(lines[0].contains("TYPE") && lines[1].contains("ed25519"), "{text}");
    }
}
