//! What the plugin returns beside a ciphertext: the key id (naming the key version, so
//! a rotation shows in the API server's staleness checks) and one annotation, checked
//! again on Decrypt.
//!
//! The ciphertext is a keymux blob, whose authenticated header already names its key and
//! version; the annotation repeats them in the clear so that a ciphertext stored beside
//! another object's annotations (an etcd restore gone wrong, a hand edit) is refused
//! with a clear message instead of being unwrapped as if nothing were amiss.

use std::collections::HashMap;

use keymux_protocol::BlobHeader;

/// The one annotation keymux writes: `<version>:<key>` (a DNS name, as the KMS v2 API
/// requires of annotation keys).
pub const ANNOTATION: &str = "key-version.keymux.io";

/// The key id of `key` version `version`: `keymux:<key>:v<version>`.
pub fn key_id(key: &str, version: u32) -> String {
    format!("keymux:{key}:v{version}")
}

/// The annotations for a ciphertext with this blob header.
pub fn annotations(header: &BlobHeader) -> HashMap<String, Vec<u8>> {
    HashMap::from([(ANNOTATION.to_owned(), format!("{}:{}", header.version, header.key).into_bytes())])
}

/// Why the annotations of a Decrypt request do not belong to its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnnotationError {
    /// The keymux annotation is missing.
    #[error("the {ANNOTATION} annotation is missing")]
    Missing,
    /// An annotation keymux never writes.
    #[error("unexpected annotation {0:?}")]
    Unexpected(String),
    /// The keymux annotation is not `<version>:<key>`.
    #[error("the {ANNOTATION} annotation is not <version>:<key>")]
    Malformed,
    /// The annotation names another key or version than the ciphertext.
    #[error("the {ANNOTATION} annotation names {annotated}, the ciphertext {actual}")]
    Mismatch {
        /// What the annotation says, as `<key> v<version>`.
        annotated: String,
        /// What the ciphertext's header says.
        actual: String,
    },
}

/// The key and version an annotation value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotatedVersion {
    /// The key name.
    pub key: String,
    /// The version.
    pub version: u32,
}

/// Parses the annotations a Decrypt request carries: exactly the keymux annotation, with
/// a value `<version>:<key>` (version in decimal without sign or leading zeros, key
/// 1..=255 bytes of UTF-8).
pub fn parse(annotations: &HashMap<String, Vec<u8>>) -> Result<AnnotatedVersion, AnnotationError> {
    if let Some(other) = annotations.keys().find(|name| *name != ANNOTATION) {
        let shown: String = other.chars().take(64).collect();
        return Err(AnnotationError::Unexpected(shown));
    }
    let value = annotations.get(ANNOTATION).ok_or(AnnotationError::Missing)?;
    let text = std::str::from_utf8(value).map_err(|_| AnnotationError::Malformed)?;
    let (version, key) = text.split_once(':').ok_or(AnnotationError::Malformed)?;
    let canonical = !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_digit())
        && (version == "0" || !version.starts_with('0'));
    if !canonical || key.is_empty() || key.len() > 255 {
        return Err(AnnotationError::Malformed);
    }
    let version = version.parse().map_err(|_| AnnotationError::Malformed)?;
    Ok(AnnotatedVersion { key: key.to_owned(), version })
}

/// Checks that `annotations` are the ones Encrypt returned for a ciphertext with this
/// header.
pub fn check(annotations: &HashMap<String, Vec<u8>>, header: &BlobHeader) -> Result<(), AnnotationError> {
    let annotated = parse(annotations)?;
    if annotated.key != header.key || annotated.version != header.version {
        let shown = |key: &str, version| format!("{:?} v{version}", key.chars().take(64).collect::<String>());
        return Err(AnnotationError::Mismatch {
            annotated: shown(&annotated.key, annotated.version),
            actual: shown(&header.key, header.version),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use keymux_protocol::BlobMode;
    use proptest::prelude::*;

    use super::*;

    fn header(key: &str, version: u32) -> BlobHeader {
        BlobHeader { key: key.to_owned(), version, mode: BlobMode::Direct }
    }

    #[test]
    fn what_encrypt_writes_checks() {
        let header = header("default", 3);
        let written = annotations(&header);
        assert_eq!(written[ANNOTATION], b"3:default");
        check(&written, &header).unwrap();
        assert_eq!(key_id("default", 3), "keymux:default:v3");
    }

    #[test]
    fn other_annotations_are_refused() {
        let header = header("k:with:colons", 1);
        check(&annotations(&header), &header).unwrap();
        assert_eq!(check(&HashMap::new(), &header), Err(AnnotationError::Missing));
        let mut extra = annotations(&header);
        extra.insert("other.example.com".into(), b"x".to_vec());
        assert_eq!(check(&extra, &header), Err(AnnotationError::Unexpected("other.example.com".into())));
        for bad in [&b"01:k"[..], b"+1:k", b":k", b"1:", b"1", b"4294967296:k", b"\xff:k", b"-1:k"] {
            let map = HashMap::from([(ANNOTATION.to_owned(), bad.to_vec())]);
            assert_eq!(parse(&map), Err(AnnotationError::Malformed), "{bad:?}");
        }
        let older = annotations(&self::header("k:with:colons", 2));
        assert!(matches!(check(&older, &header), Err(AnnotationError::Mismatch { .. })));
    }

    proptest! {
        /// Any key and version round-trip through what Encrypt writes.
        #[test]
        fn round_trip(key in "\\PC{1,60}", version in any::<u32>()) {
            prop_assume!(key.len() <= 255);
            let header = header(&key, version);
            prop_assert_eq!(parse(&annotations(&header)).unwrap(), AnnotatedVersion { key, version });
            prop_assert!(check(&annotations(&header), &header).is_ok());
        }

        /// Arbitrary annotations never panic, and check only when they say exactly what
        /// the header says.
        #[test]
        fn arbitrary_annotations_never_panic(
            entries in proptest::collection::hash_map(
                prop_oneof![Just(ANNOTATION.to_owned()), "[a-z.]{0,20}"],
                proptest::collection::vec(any::<u8>(), 0..300),
                0..4,
            ),
            key in "[a-z]{1,8}",
            version in 0u32..5,
        ) {
            let header = header(&key, version);
            if check(&entries, &header).is_ok() {
                prop_assert_eq!(entries, annotations(&header));
            }
        }

        /// A changed byte in the value never checks against the original header.
        #[test]
        fn mutated_values_never_check(key in "[a-z:]{1,20}", version in any::<u32>(), at in any::<usize>(), byte in any::<u8>()) {
            let header = header(&key, version);
            let mut written = annotations(&header);
            let value = written.get_mut(ANNOTATION).unwrap();
            let at = at % value.len();
            prop_assume!(value[at] != byte);
            value[at] = byte;
            prop_assert!(check(&written, &header).is_err());
        }
    }
}
