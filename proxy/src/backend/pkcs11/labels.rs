//! How keys and versions are named on the token.
//!
//! The token is the source of truth, so every fact keymux needs is stored on it:
//!
//! - each version of an `aes-256` key is an AES-256 secret key object labelled
//!   `kmx:v<version>:<name>` (for example `kmx:v3:payments`), with its creation time
//!   (seconds since the Unix epoch, 8 bytes big-endian) in `CKA_ID`;
//! - on tokens sealing with AES-CBC + HMAC-SHA256 (see `scheme.rs`), each version also
//!   has a generic-secret HMAC key labelled `kmx-mac:v<version>:<name>`;
//! - each version of a signing key is a key pair, a private and a public key object that
//!   share one label, `kmx-pair:<type>:v<version>:<name>` (for example
//!   `kmx-pair:ec-p256:v2:releases`), and one `CKA_ID` (the creation time, as above).
//!   The type is the key type's name (`ec-p256`, `ec-p384`, `ed25519`, `rsa-3072-pss`,
//!   `rsa-3072-pkcs1`): it must be in the label, because the objects' attributes cannot
//!   tell an RSA-PSS key from an RSA PKCS#1 v1.5 one, and every proxy on the token has
//!   to sign a key the same way. Type names contain no colon, so the name after the
//!   version may contain any character, colons included;
//! - an `aes-256` version is enabled while its `CKA_ENCRYPT` and `CKA_DECRYPT` are true,
//!   a key pair's while the private key's `CKA_SIGN` (and the public key's
//!   `CKA_VERIFY`) is true; disabling clears them, so the HSM itself refuses the key,
//!   even to a proxy that has not yet refreshed;
//! - a key's minimum decryption version lives in a data object labelled
//!   `kmx-meta:<name>` with `CKA_APPLICATION` = `keymux`, its value the version in
//!   decimal. No object means 1;
//! - when a version was disabled lives in a data object labelled
//!   `kmx-disabled:v<version>:<name>` (`CKA_APPLICATION` = `keymux`), its value the
//!   time in seconds since the Unix epoch, in decimal: destroy waits for
//!   `keys.destroy_safe_period` from it. Enabling the version removes it.
//!
//! Several proxies sharing one token therefore agree without any other store. A key
//! name has one type: the lowest version's, should objects of two types ever name the
//! same key (see `store.rs`).

use crate::keys::KeyType;

/// The prefix of every key-version label.
const VERSION_PREFIX: &str = "kmx:v";
/// The prefix of every key-pair label.
const PAIR_PREFIX: &str = "kmx-pair:";
/// The prefix of every HMAC-key label.
const MAC_PREFIX: &str = "kmx-mac:v";
/// The prefix of every metadata label.
const META_PREFIX: &str = "kmx-meta:";
/// The prefix of every disabled-at label.
const DISABLED_PREFIX: &str = "kmx-disabled:v";
/// `CKA_APPLICATION` of keymux's data objects.
pub(crate) const APPLICATION: &[u8] = b"keymux";

/// The key types held as key pairs on a token, in the order they are looked up.
pub(crate) const PAIR_TYPES: [KeyType; 5] =
    [KeyType::EcP256, KeyType::EcP384, KeyType::Ed25519, KeyType::Rsa3072Pss, KeyType::Rsa3072Pkcs1];

/// The label of `name`'s `version`.
pub fn version_label(name: &str, version: u32) -> String {
    format!("{VERSION_PREFIX}{version}:{name}")
}

/// The label of both objects of `version` of `name`, a key pair of `key_type`.
pub fn pair_label(name: &str, version: u32, key_type: KeyType) -> String {
    format!("{PAIR_PREFIX}{key_type}:v{version}:{name}")
}

/// The label of the HMAC key of `name`'s `version`.
pub(crate) fn mac_label(name: &str, version: u32) -> String {
    format!("{MAC_PREFIX}{version}:{name}")
}

/// Parses a key-version label into (name, version); `None` for other objects.
pub(crate) fn parse_version_label(label: &str) -> Option<(&str, u32)> {
    parse_version_and_name(label.strip_prefix(VERSION_PREFIX)?)
}

/// Parses a key-pair label into (name, version, type); `None` for other objects and
/// for types this build does not hold as key pairs.
pub(crate) fn parse_pair_label(label: &str) -> Option<(&str, u32, KeyType)> {
    let (key_type, rest) = label.strip_prefix(PAIR_PREFIX)?.split_once(':')?;
    let key_type = PAIR_TYPES.into_iter().find(|t| t.name() == key_type)?;
    let (name, version) = parse_version_and_name(rest.strip_prefix('v')?)?;
    Some((name, version, key_type))
}

/// `<version>:<name>`, the version from 1, the name not empty.
fn parse_version_and_name(rest: &str) -> Option<(&str, u32)> {
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

/// The label of the record of when `name`'s `version` was disabled.
pub fn disabled_label(name: &str, version: u32) -> String {
    format!("{DISABLED_PREFIX}{version}:{name}")
}

/// Parses a disabled-at label into (name, version).
pub(crate) fn parse_disabled_label(label: &str) -> Option<(&str, u32)> {
    parse_version_and_name(label.strip_prefix(DISABLED_PREFIX)?)
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
        assert_eq!(parse_disabled_label(&disabled_label("a:b", 4)), Some(("a:b", 4)));
        assert_eq!(parse_meta_label(&disabled_label("k", 4)), None, "not a minimum record");
        assert_eq!(parse_version_label(&disabled_label("k", 4)), None);
        assert_eq!(parse_version_label(&pair_label("k", 1, KeyType::EcP256)), None, "pairs are not AES keys");
    }

    #[test]
    fn pair_labels_carry_the_type() {
        assert_eq!(pair_label("releases", 2, KeyType::EcP256), "kmx-pair:ec-p256:v2:releases");
        for key_type in PAIR_TYPES {
            let label = pair_label("a:b", 7, key_type);
            assert_eq!(parse_pair_label(&label), Some(("a:b", 7, key_type)), "{label}");
        }
        assert_eq!(parse_pair_label("kmx-pair:aes-256:v1:k"), None, "AES keys are not pairs");
        assert_eq!(parse_pair_label("kmx-pair:ec-p999:v1:k"), None, "an unknown type");
        assert_eq!(parse_pair_label("kmx-pair:ec-p256:v0:k"), None);
        assert_eq!(parse_pair_label("kmx-pair:ec-p256:1:k"), None);
        assert_eq!(parse_pair_label("kmx-pair:ec-p256:v1:"), None);
        assert_eq!(parse_pair_label(&version_label("k", 1)), None);
    }
}
