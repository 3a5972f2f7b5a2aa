//! Secrets that come from outside the config file: passphrases and HSM PINs.
//!
//! A config names *where* a secret is (an environment variable or a file), never the
//! secret itself, so config files can be shared and logged safely.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// Where a secret comes from: never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable's value.
    Env(String),
    /// A file's contents (trailing newline removed).
    File(PathBuf),
    /// A file created with a random secret if missing: the development default only,
    /// never accepted from a config file.
    #[serde(skip)]
    GeneratedFile(PathBuf),
}

/// A secret could not be read. Never carries the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The source gave an empty secret.
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// Checks the source names something: an environment variable or a file.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            SecretSource::Env(name) if name.is_empty() => Err("env variable name is empty"),
            SecretSource::File(path) if path.as_os_str().is_empty() => Err("file path is empty"),
            _ => Ok(()),
        }
    }

    /// Reads the secret. A generated file is created with 32 random bytes, hex-encoded,
    /// readable by the owner only, if it does not exist.
    pub fn resolve(&self) -> Result<Zeroizing<String>, SecretError> {
        let secret = match self {
            SecretSource::Env(name) => {
                Zeroizing::new(std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?)
            }
            SecretSource::File(path) => read_secret_file(path)?,
            SecretSource::GeneratedFile(path) => {
                if !path.exists() {
                    let mut random = Zeroizing::new([0u8; 32]);
                    getrandom::fill(random.as_mut())
                        .expect("the operating system's random number generator failed");
                    let text: Zeroizing<String> =
                        Zeroizing::new(random.iter().map(|b| format!("{b:02x}")).collect());
                    write_private(path, text.as_bytes())
                        .map_err(|source| SecretError::Io { path: path.clone(), source })?;
                }
                read_secret_file(path)?
            }
        };
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(secret)
    }
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, SecretError> {
    let mut text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| SecretError::Io { path: path.to_owned(), source })?,
    );
    let trimmed = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(trimmed);
    Ok(text)
}

/// Writes `bytes` to `path` atomically, readable by the owner only: a temporary file
/// with a unique name, created exclusively (never someone else's file, never a
/// concurrent writer's), written and fsynced, renamed over `path`, then the directory
/// fsynced so the rename itself survives a crash.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).expect("the operating system's random number generator failed");
    let name = path.file_name().map_or_else(|| "keymux".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.tmp", u64::from_be_bytes(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    let written =
        file.write_all(bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = SecretSource::GeneratedFile(dir.path().join("passphrase"));
        let first = source.resolve().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(*source.resolve().unwrap(), *first);
    }

    #[test]
    fn errors_name_the_source_not_the_secret() {
        let missing = SecretSource::Env("KEYMUX_TEST_SURELY_UNSET".into());
        assert!(missing.resolve().unwrap_err().to_string().contains("KEYMUX_TEST_SURELY_UNSET"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "1234\n").unwrap();
        assert_eq!(SecretSource::File(file).resolve().unwrap().as_str(), "1234");
    }
}
