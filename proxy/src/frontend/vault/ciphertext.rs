//! The Transit API's text forms: `vault:v<N>:<base64>` for ciphertexts and signatures,
//! and standard base64 for every binary field.
//!
//! A keymux ciphertext is `vault:v<N>:` followed by the base64 of the keymux blob, so it
//! is self-describing (the blob names its key and version) and every keymux front end
//! unwraps it. `N` repeats the blob's version for Vault clients that read it (key
//! rotation tooling does); on the way in it must agree with the blob.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use keymux_protocol::BlobHeader;

use super::error::VaultError;

/// Standard base64, written padded, read padded or not (Go's clients pad; some others
/// do not).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `bytes` as standard, padded base64.
pub(super) fn encode(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 field `field` (named in the error, its value never).
pub(super) fn decode(field: &'static str, text: &str) -> Result<Vec<u8>, VaultError> {
    BASE64.decode(text.trim()).map_err(|_| VaultError::BadRequest(format!("failed to base64-decode {field}")))
}

/// A `vault:v<N>:<base64>` value, split and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prefixed {
    /// `N`.
    pub(super) version: u32,
    /// The decoded bytes after the prefix.
    pub(super) bytes: Vec<u8>,
}

/// Parses `vault:v<N>:<base64>`; `what` (`ciphertext`, `signature`) names the field in
/// errors.
pub(super) fn parse_prefixed(what: &'static str, text: &str) -> Result<Prefixed, VaultError> {
    let invalid = || VaultError::BadRequest(format!("invalid {what}: expected vault:v<version>:<base64>"));
    let rest = text.strip_prefix("vault:v").ok_or_else(invalid)?;
    let (number, body) = rest.split_once(':').ok_or_else(invalid)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let version: u32 = number.parse().map_err(|_| invalid())?;
    if version == 0 {
        return Err(invalid());
    }
    Ok(Prefixed { version, bytes: decode(what, body)? })
}

/// `vault:v<version>:<base64 of bytes>`.
pub(super) fn format_prefixed(version: u32, bytes: &[u8]) -> String {
    let mut text = String::with_capacity(16 + bytes.len().div_ceil(3) * 4);
    text.push_str("vault:v");
    text.push_str(&version.to_string());
    text.push(':');
    general_purpose::STANDARD.encode_string(bytes, &mut text);
    text
}

/// The ciphertext Vault clients get for a keymux blob.
pub(super) fn ciphertext_of(blob: &[u8]) -> Result<(String, u32), VaultError> {
    let (header, _) = BlobHeader::parse(blob)
        .map_err(|error| VaultError::Internal(format!("the router returned a bad blob: {error}")))?;
    Ok((format_prefixed(header.version, blob), header.version))
}

/// The keymux blob in a ciphertext sent to `key`'s endpoint: it must be a blob of that
/// key whose version agrees with the prefix.
pub(super) fn blob_of(key: &str, text: &str) -> Result<Vec<u8>, VaultError> {
    let Prefixed { version, bytes } = parse_prefixed("ciphertext", text)?;
    let (header, _) = BlobHeader::parse(&bytes)
        .map_err(|error| VaultError::BadRequest(format!("invalid ciphertext: {error}")))?;
    if header.key != key {
        return Err(VaultError::BadRequest(format!("the ciphertext was not made by key {key:?}")));
    }
    if header.version != version {
        return Err(VaultError::BadRequest(format!(
            "invalid ciphertext: the prefix says version {version}, the ciphertext version {}",
            header.version
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use keymux_protocol::BlobMode;
    use proptest::prelude::*;

    use super::*;

    fn blob(key: &str, version: u32) -> Vec<u8> {
        let mut blob = BlobHeader { key: key.into(), version, mode: BlobMode::Direct }.to_bytes().unwrap();
        blob.extend_from_slice(&[9; 28]);
        blob
    }

    #[test]
    fn ciphertexts_round_trip_and_name_their_version() {
        let (text, version) = ciphertext_of(&blob("k", 7)).unwrap();
        assert_eq!(version, 7);
        assert!(text.starts_with("vault:v7:S01Y"), "{text}");
        assert_eq!(blob_of("k", &text).unwrap(), blob("k", 7));
        assert!(blob_of("other", &text).is_err(), "another key's ciphertext");
        let lying = text.replacen("vault:v7:", "vault:v6:", 1);
        assert!(blob_of("k", &lying).is_err(), "a prefix that disagrees with the blob");
        let unpadded = text.trim_end_matches('=');
        assert_eq!(blob_of("k", unpadded).unwrap(), blob("k", 7));
    }

    #[test]
    fn malformed_prefixes_are_bad_requests() {
        for text in [
            "",
            "vault:",
            "vault:v:AAAA",
            "vault:v0:AAAA",
            "vault:vx:AAAA",
            "vault:v1",
            "vault:v+1:AA",
            "vault:v99999999999:AA",
            "vault:v1:!!",
        ] {
            assert!(matches!(parse_prefixed("ciphertext", text), Err(VaultError::BadRequest(_))), "{text:?}");
        }
        assert_eq!(
            parse_prefixed("signature", "vault:v3:AQI=").unwrap(),
            Prefixed { version: 3, bytes: vec![1, 2] }
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_a_bad_request(text in any::<String>()) {
            match blob_of("k", &text) {
                Ok(bytes) => prop_assert!(BlobHeader::parse(&bytes).is_ok()),
                Err(error) => prop_assert!(matches!(error, VaultError::BadRequest(_))),
            }
        }

        #[test]
        fn prefixed_values_round_trip(version in 1u32.., bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = format_prefixed(version, &bytes);
            prop_assert_eq!(parse_prefixed("signature", &text).unwrap(), Prefixed { version, bytes });
        }

        #[test]
        fn mangled_ciphertexts_never_panic(cut in 0usize..80, flip in 0usize..80) {
            let (text, _) = ciphertext_of(&blob("k", 3)).unwrap();
            let mut bytes = text.into_bytes();
            bytes.truncate(cut.max(1));
            if let Some(byte) = bytes.get_mut(flip) {
                *byte ^= 0x20;
            }
            let _ = blob_of("k", &String::from_utf8_lossy(&bytes));
        }
    }
}
