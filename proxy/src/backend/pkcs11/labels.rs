//! How keys and versions are named on the token.
//!
//! The token is the source of truth, so every fact keymux needs is stored on it:
//!
//! - each key version is an AES-256 secret key object labelled `kmx:v<version>:<name>`
//!   (for example `kmx:v3:payments`), with its creation time (seconds since the Unix
//!   epoch, 8 bytes big-endian) in `CKA_ID`;
//! - on tokens sealing with AES-CBC + HMAC-SHA256 (see `scheme.rs`), each version also
//!   has a generic-secret HMAC key labelled `kmx-mac:v<version>:<name>`;
//! - a version is enabled while its `CKA_ENCRYPT` and `CKA_DECRYPT` are true; disabling
//!   clears both, so the HSM itself refuses the key, even to a proxy that has not yet
//!   refreshed;
//! - a key's minimum decryption version lives in a data object labelled
//!   `kmx-meta:<name>` with `CKA_APPLICATION` = `keymux`, its value the version in
//!   decimal. No object means 1.
//!
//! Several proxies sharing one token therefore agree without any other store.

/// The prefix of every key-version label.
const VERSION_PREFIX: &str = "kmx:v";
/// The prefix of every HMAC-key label.
const MAC_PREFIX: &str = "kmx-mac:v";
/// The prefix of every metadata label.
const META_PREFIX: &str = "kmx-meta:";
/// `CKA_APPLICATION` of keymux's data objects.
pub(crate) const APPLICATION: &[u8] = b"keymux";

/// The label of `name`'s `version`.
pub fn version_label(name: &str, version: u32) -> String {
    format!("{VERSION_PREFIX}{version}:{name}")
}

/// The label of the HMAC key of `name`'s `version`.
pub(crate) fn mac_label(name: &str, version: u32) -> String {
    format!("{MAC_PREFIX}{version}:{name}")
}

/// Parses a key-version label into (name, version); `None` for other objects.
pub(crate) fn parse_version_label(label: &str) -> Option<(&str, u32)> {
    let rest = label.strip_prefix(VERSION_PREFIX)?;
    let (version, name) = rest.split_once(':')?;
    let version: u32 = version.parse().ok().filter(|v| *v >= 1)?;
    (!name.is_empty()).then_some((name, version))
}

/// The label of `name`'s metadata object.
pub(crate) fn meta_label(name: &str) -> String {
    format!("{META_PREFIX}{name}")
}

/// Parses a metadata label into the key name.
pub(crate) fn parse_meta_label(label: &str) -> Option<&str> {
    label.strip_prefix(META_PREFIX).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        assert_eq!(version_label("payments", 3), "kmx:v3:payments");
        assert_eq!(parse_version_label("kmx:v3:payments"), Some(("payments", 3)));
        assert_eq!(parse_version_label("kmx:v12:a:b"), Some(("a:b", 12)), "names may contain colons");
        assert_eq!(parse_version_label("kmx:v0:x"), None);
        assert_eq!(parse_version_label("kmx:vx:x"), None);
        assert_eq!(parse_version_label("kmx:v1:"), None);
        assert_eq!(parse_version_label("other"), None);
        assert_eq!(parse_version_label(&mac_label("k", 1)), None, "HMAC keys are not versions");
        assert_eq!(parse_meta_label(&meta_label("k")), Some("k"));
    }
}
