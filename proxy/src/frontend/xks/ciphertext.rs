//! What keymux puts around the raw AES-GCM for XKS: the `ciphertextMetadata` naming
//! the key version, the AAD the token authenticates (the request's AAD and the metadata,
//! each with its length, as the specification prescribes), and the
//! `ciphertextDataIntegrityValue`.

use sha2::{Digest, Sha256};

/// The first byte of keymux's ciphertext metadata: its format.
const FORMAT: u8 = 1;
/// Metadata bytes: format, then the key version as a big-endian u32 (the specification
/// allows up to 20).
pub const METADATA_LEN: usize = 5;

/// The `ciphertextMetadata` of a ciphertext made by `version`.
pub fn metadata(version: u32) -> [u8; METADATA_LEN] {
    let v = version.to_be_bytes();
    [FORMAT, v[0], v[1], v[2], v[3]]
}

/// The key version in `ciphertextMetadata`; `None` if keymux did not write it (another
/// format or length, or version 0, which no key has).
pub fn version_of(metadata: &[u8]) -> Option<u32> {
    match metadata {
        [FORMAT, a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])).filter(|version| *version != 0),
        _ => None,
    }
}

/// The AES-GCM associated data: `len16(aad) || aad || len8(metadata) || metadata`, so that
/// neither can pass for the other. `aad` is at most 8 KiB (the caller has checked; the
/// specification's limit), and the metadata 20 bytes.
pub fn associated_data(aad: &[u8], metadata: &[u8]) -> Vec<u8> {
    let aad_len = u16::try_from(aad.len()).unwrap_or(u16::MAX);
    let metadata_len = u8::try_from(metadata.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(metadata_len);
    out.extend_from_slice(metadata);
    out
}

/// The `ciphertextDataIntegrityValue`: SHA-256 over `aad || metadata || iv ||
/// ciphertext || tag` (no lengths, as the specification defines it).
pub fn integrity_value(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Appendix C of the XKS specification: its example's bytes hash to its CDIV.
    #[test]
    fn the_specifications_integrity_example() {
        let aad = b"project=nile,department=marketing";
        let metadata = b"key_version=1";
        let iv = hex::decode("1ccae5470f39700254779031").unwrap();
        let ciphertext = hex::decode("821c642b5b71783367deaf18").unwrap();
        let tag = hex::decode("bc1c4dda7707d6812447c5955e99b261").unwrap();
        assert_eq!(
            hex::encode(integrity_value(aad, metadata, &iv, &ciphertext, &tag)),
            "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7"
        );
    }

    #[test]
    fn aad_and_metadata_cannot_stand_in_for_each_other() {
        let meta = metadata(7);
        assert_ne!(associated_data(b"", &meta), associated_data(&meta, b""));
        assert_eq!(associated_data(b"ab", b"c"), [0, 2, b'a', b'b', 1, b'c']);
    }

    proptest! {
        #[test]
        fn versions_round_trip(version in 1u32..) {
            prop_assert_eq!(version_of(&metadata(version)), Some(version));
        }

        #[test]
        fn foreign_metadata_is_no_version(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(version) = version_of(&bytes) {
                prop_assert_eq!(&metadata(version)[..], &bytes[..]);
            }
        }
    }
}
