//! How keys and versions are named in KMS: aliases.
//!
//! | alias | targets |
//! |---|---|
//! | `alias/<prefix>/<key>/v<version>` | the KMS key holding that version |
//! | `alias/<prefix>/<key>/min-v<version>` | the same key as `v<version>`: the key's minimum decryption version (none means 1) |
//!
//! KMS is the source of truth: any number of proxies reading the same account and
//! region agree on every key, and an operator can map an existing KMS key into keymux
//! by creating a version alias for it.

use crate::keys::KeyAdminError;

/// What an alias of ours says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// `<key>/v<version>`.
    Version(&'a str, u32),
    /// `<key>/min-v<version>`.
    MinVersion(&'a str, u32),
}

/// The alias scheme under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// Aliases under `alias/<prefix>/`.
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: format!("alias/{prefix}/") }
    }

    /// The alias of one version.
    pub(crate) fn version(&self, key: &str, version: u32) -> String {
        format!("{}{key}/v{version}", self.prefix)
    }

    /// The alias recording `key`'s minimum decryption version.
    pub(crate) fn min_version(&self, key: &str, version: u32) -> String {
        format!("{}{key}/min-v{version}", self.prefix)
    }

    /// Reads one of our aliases; `None` for anyone else's.
    pub(crate) fn parse<'a>(&self, alias: &'a str) -> Option<Parsed<'a>> {
        let (key, last) = alias.strip_prefix(&self.prefix)?.split_once('/')?;
        check_key_name(key).ok()?;
        if let Some(version) = last.strip_prefix("min-v") {
            return version.parse().ok().filter(|v| *v > 0).map(|v| Parsed::MinVersion(key, v));
        }
        last.strip_prefix('v')?.parse().ok().filter(|v| *v > 0).map(|v| Parsed::Version(key, v))
    }
}

/// KMS aliases allow letters, digits, `/`, `_` and `-`; keymux key names on KMS use
/// letters, digits, `_`, `-` (the `/` separates the version).
pub(crate) fn check_key_name(name: &str) -> Result<(), KeyAdminError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 200 || !name.chars().all(fits) {
        return Err(KeyAdminError::InvalidName {
            name: name.chars().take(64).collect(),
            reason: "KMS key names are 1 to 200 letters, digits, '_' or '-' (they become KMS aliases)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip() {
        let names = Names::new("keymux");
        assert_eq!(names.version("pay", 3), "alias/keymux/pay/v3");
        assert_eq!(names.parse("alias/keymux/pay/v3"), Some(Parsed::Version("pay", 3)));
        assert_eq!(names.parse(&names.min_version("pay", 2)), Some(Parsed::MinVersion("pay", 2)));
        for other in ["alias/other/pay/v1", "alias/keymux/pay", "alias/keymux/pay/v0", "alias/keymux/p.y/v1"]
        {
            assert_eq!(names.parse(other), None, "{other}");
        }
        assert!(check_key_name("a b").is_err());
        assert!(check_key_name("payments-2_x").is_ok());
    }
}
