//! Explicit, configurable bounds on what a peer may send.

use crate::algorithm::Algorithm;
use crate::frame::HEADER_LEN;

/// Bounds enforced while decoding requests, and the sizes [`Limits::validate`] makes
/// sure `max_frame` can carry. Every one is configurable; the defaults suit data keys,
/// short contexts and every supported signature algorithm. Request fields over these
/// limits are answered BAD_REQUEST, never buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame body accepted, in bytes (the `length` prefix). A longer frame
    /// closes the connection before its body is read.
    pub max_frame: u32,
    /// Largest additional authenticated data (AAD) accepted, in bytes.
    pub max_aad: usize,
    /// Largest plaintext key accepted for WRAP, and largest GENERATE_DATA_KEY length.
    pub max_plaintext: usize,
    /// Largest wrapped blob accepted for UNWRAP and REWRAP.
    pub max_blob: usize,
    /// Largest SIGN or VERIFY `input` accepted: a message to sign or verify, or a
    /// digest (at least [`Algorithm::MAX_DIGEST_LEN`], so that every digest fits).
    pub max_sign_input: usize,
    /// Largest signature accepted for VERIFY, and the size of SIGN's answer that
    /// `max_frame` must carry. At least [`Algorithm::MAX_SIGNATURE_LEN`], so that every
    /// algorithm's signature fits.
    pub max_signature: usize,
    /// Largest public key (DER SubjectPublicKeyInfo) a GET_PUBLIC_KEY response carries.
    /// No request carries one: it sizes `max_frame`, and the proxy checks what it
    /// serves against it. At least [`Limits::MIN_PUBLIC_KEY`], so that every key type's
    /// public key fits.
    pub max_public_key: usize,
}

impl Limits {
    /// The smallest legal `max_frame`: a frame header and nothing else.
    pub const MIN_FRAME: u32 = HEADER_LEN as u32;
    /// The largest `max_frame` keymux accepts (16 MiB).
    pub const MAX_FRAME_CEILING: u32 = 16 * 1024 * 1024;
    /// The largest value a `bytes16` field can carry.
    pub const BYTES16_MAX: usize = u16::MAX as usize;
    /// The longest ENCRYPT/DECRYPT initialisation vector a request may carry (AES-GCM
    /// uses 12 bytes; 16 is the most any caller of the raw AEAD passes).
    pub const MAX_IV: usize = 16;
    /// The longest ENCRYPT/DECRYPT authentication tag a request may carry (16 bytes).
    pub const MAX_TAG: usize = 16;
    /// The largest public key of any key type keymux serves: ML-DSA-65's
    /// SubjectPublicKeyInfo, a 1952-byte key in 22 bytes of DER (ML-KEM-768's is 1206
    /// bytes, RSA-3072's about 420).
    pub const MIN_PUBLIC_KEY: usize = 1974;

    /// Checks that the limits are usable, naming the first one that is not.
    pub fn validate(&self) -> Result<(), LimitError> {
        let fail = |field, message| Err(LimitError { field, message });
        if !(Self::MIN_FRAME..=Self::MAX_FRAME_CEILING).contains(&self.max_frame) {
            return fail(
                "max_frame",
                format!(
                    "max_frame must be between {} and {} bytes, got {}",
                    Self::MIN_FRAME,
                    Self::MAX_FRAME_CEILING,
                    self.max_frame
                ),
            );
        }
        for (name, value) in [
            ("max_aad", self.max_aad),
            ("max_plaintext", self.max_plaintext),
            ("max_blob", self.max_blob),
            ("max_sign_input", self.max_sign_input),
            ("max_signature", self.max_signature),
            ("max_public_key", self.max_public_key),
        ] {
            if value > Self::BYTES16_MAX {
                return fail(
                    name,
                    format!(
                        "{name} must be at most {} bytes (a bytes16 field), got {value}",
                        Self::BYTES16_MAX
                    ),
                );
            }
        }
        if self.max_plaintext == 0 {
            return fail("max_plaintext", "must be at least 1 byte".into());
        }
        if self.max_blob == 0 {
            return fail("max_blob", "must be at least 1 byte".into());
        }
        for (name, value, min, why) in [
            ("max_sign_input", self.max_sign_input, Algorithm::MAX_DIGEST_LEN, "every digest"),
            (
                "max_signature",
                self.max_signature,
                Algorithm::MAX_SIGNATURE_LEN,
                "every algorithm's signature",
            ),
            ("max_public_key", self.max_public_key, Self::MIN_PUBLIC_KEY, "every key type's public key"),
        ] {
            if value < min {
                return fail(
                    name,
                    format!("{name} must be at least {min} bytes so that {why} fits, got {value}"),
                );
            }
        }
        // A wrapped key must be unwrappable (see BLOB_OVERHEAD).
        if self.max_blob < self.max_plaintext + Self::BLOB_OVERHEAD {
            return fail(
                "max_blob",
                format!(
                    "max_blob ({}) must be at least max_plaintext ({}) + {} so that wrapped keys unwrap",
                    self.max_blob,
                    self.max_plaintext,
                    Self::BLOB_OVERHEAD
                ),
            );
        }
        let needed = self.frame_needed();
        if (self.max_frame as usize) < needed {
            return fail(
                "max_frame",
                format!(
                    "max_frame ({}) must be at least {needed} to carry the largest request or response these \
                 limits allow",
                    self.max_frame
                ),
            );
        }
        Ok(())
    }

    /// Bytes a blob may add to the key it wraps: a header of up to 265 bytes, at most
    /// 64 bytes of IV, tag and MAC, and in KEM mode (3) the ML-KEM ciphertext (1088
    /// bytes for ML-KEM-768, 1568 for ML-KEM-1024).
    pub const BLOB_OVERHEAD: usize = 2048;

    /// The largest frame the other limits allow, with headers and prefixes: the
    /// largest of an UNWRAP or REWRAP request, a WRAP request, a GENERATE_DATA_KEY
    /// response, a VERIFY request, a SIGN response and a GET_PUBLIC_KEY response.
    fn frame_needed(&self) -> usize {
        // Header, deadline, the longest str8, and up to three bytes16 prefixes and one
        // u32 (a key version): more than any one frame has.
        let fixed = crate::frame::HEADER_LEN + 4 + 256 + 3 * 2 + 4;
        let requests = (self.max_aad + self.max_blob)
            .max(self.max_aad + self.max_plaintext)
            .max(self.max_sign_input + self.max_signature);
        let responses =
            (self.max_plaintext + self.max_blob).max(self.max_signature).max(self.max_public_key + 1);
        fixed + requests.max(responses)
    }
}

/// A limit that is out of range: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    /// The limit at fault, as named in [`Limits`] (`max_frame`, `max_blob`, ...).
    pub field: &'static str,
    /// What is wrong with it, naming the values involved.
    pub message: String,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 64 * 1024,
            max_aad: 8 * 1024,
            max_plaintext: 4 * 1024,
            max_blob: 16 * 1024,
            max_sign_input: 16 * 1024,
            max_signature: 4 * 1024,
            max_public_key: 4 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn validate_names_the_bad_limit() {
        let limits = Limits { max_aad: 70_000, ..Limits::default() };
        assert_eq!(limits.validate().unwrap_err().field, "max_aad");
        let limits = Limits { max_frame: 4, ..Limits::default() };
        assert_eq!(limits.validate().unwrap_err().field, "max_frame");
        let limits = Limits { max_frame: 1024, ..Limits::default() };
        let error = limits.validate().unwrap_err();
        assert_eq!(error.field, "max_frame");
        assert!(error.message.contains("largest request or response"));
        let limits = Limits { max_blob: 4096, ..Limits::default() };
        assert_eq!(limits.validate().unwrap_err().field, "max_blob");
    }

    #[test]
    fn signing_limits_are_validated() {
        for (limits, name) in [
            (Limits { max_sign_input: 70_000, ..Limits::default() }, "max_sign_input"),
            (Limits { max_signature: 70_000, ..Limits::default() }, "max_signature"),
            (Limits { max_public_key: 70_000, ..Limits::default() }, "max_public_key"),
            (Limits { max_sign_input: 47, ..Limits::default() }, "max_sign_input"),
            (Limits { max_signature: 3308, ..Limits::default() }, "max_signature"),
            (Limits { max_public_key: 1973, ..Limits::default() }, "max_public_key"),
        ] {
            let error = limits.validate().unwrap_err();
            assert_eq!(error.field, name, "{name}: {error}");
        }
        // The smallest signing limits are usable.
        let smallest = Limits {
            max_sign_input: Algorithm::MAX_DIGEST_LEN,
            max_signature: Algorithm::MAX_SIGNATURE_LEN,
            max_public_key: Limits::MIN_PUBLIC_KEY,
            ..Limits::default()
        };
        smallest.validate().unwrap();
    }

    #[test]
    fn max_frame_must_carry_the_largest_signing_frame() {
        // A VERIFY request with the largest input and signature is the largest frame.
        let limits = Limits { max_sign_input: 60_000, max_signature: 65_535, ..Limits::default() };
        let error = limits.validate().unwrap_err();
        assert_eq!(error.field, "max_frame");
        assert!(error.message.contains("largest request or response"));
        Limits { max_frame: 128 * 1024, ..limits }.validate().unwrap();
    }
}
