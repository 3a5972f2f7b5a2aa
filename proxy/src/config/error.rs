//! The one error type of configuration: a file that cannot be read, TOML that does not
//! parse, or a setting out of range, always naming the dotted key at fault.

use std::path::PathBuf;

/// A setting that is out of range: the dotted key (`batch.max_batch`, `acl[2].ops`,
/// `backend.regions[0].region`) and what is wrong with it. Every table's `validate()`
/// returns this, with keys relative to the table; the caller adds the table's own name
/// with [`InvalidSetting::within`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    /// The dotted key.
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

impl InvalidSetting {
    /// The setting `key` is invalid because of `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }

    /// The same error, for a table nested under `table` (`"backend"`, `"acl[2]"`).
    pub fn within(self, table: &str) -> Self {
        let key = if self.key.is_empty() { table.to_owned() } else { format!("{table}.{}", self.key) };
        Self { key, ..self }
    }
}

/// `Err(InvalidSetting::new(key, message))`: the shape every `validate()` returns.
pub(crate) fn invalid<T>(key: &str, message: impl Into<String>) -> Result<T, InvalidSetting> {
    Err(InvalidSetting::new(key, message))
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse, has unknown keys, or a value of the wrong type.
    #[error("{}", describe_parse(path, key, message))]
    Parse {
        /// The file (empty for text parsed directly).
        path: PathBuf,
        /// The dotted key at fault, e.g. `server.listen` (empty for a syntax error).
        key: String,
        /// The parser's explanation, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

/// `FILE: KEY: MESSAGE`, leaving out whichever of the file and key is unknown.
fn describe_parse(path: &std::path::Path, key: &str, message: &str) -> String {
    let mut out = String::new();
    if !path.as_os_str().is_empty() {
        out.push_str(&format!("{}: ", path.display()));
    }
    if !key.is_empty() {
        out.push_str(&format!("{key}: "));
    }
    out.push_str(message);
    out
}

impl ConfigError {
    /// The dotted key at fault, if the error names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. } if !key.is_empty() => Some(key),
            ConfigError::Invalid(invalid) => Some(&invalid.key),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_are_prefixed() {
        let error = InvalidSetting::new("max_uses", "too many").within("intermediate").within("backend");
        assert_eq!(error.key, "backend.intermediate.max_uses");
        assert_eq!(error.to_string(), "backend.intermediate.max_uses: too many");
        assert_eq!(InvalidSetting::new("", "needs [tls]").within("quic").key, "quic");
    }
}
