//! Explicit, configurable bounds on what a peer may send.

use crate::frame::HEADER_LEN;

/// Bounds enforced while decoding. Every one is configurable; the defaults suit data
/// keys and short contexts. Values over these limits are answered BAD_REQUEST, never
/// buffered.
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
}

impl Limits {
    /// The smallest legal `max_frame`: a frame header and nothing else.
    pub const MIN_FRAME: u32 = HEADER_LEN as u32;
    /// The largest `max_frame` keymux accepts (16 MiB).
    pub const MAX_FRAME_CEILING: u32 = 16 * 1024 * 1024;
    /// The largest value a `bytes16` field can carry.
    pub const BYTES16_MAX: usize = u16::MAX as usize;

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
        for (name, value) in
            [("max_aad", self.max_aad), ("max_plaintext", self.max_plaintext), ("max_blob", self.max_blob)]
        {
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
        // A wrapped key must be unwrappable: a blob is the plaintext plus a header of
        // up to 265 bytes and at most 64 bytes of IV, tag and MAC.
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

    /// Bytes a blob may add to the key it wraps (header, IV, tag or MAC).
    pub const BLOB_OVERHEAD: usize = 512;

    /// The largest frame the other limits allow: an UNWRAP or REWRAP request, a WRAP
    /// request, or a GENERATE_DATA_KEY response, with headers and prefixes.
    fn frame_needed(&self) -> usize {
        let fixed = crate::frame::HEADER_LEN + 4 + 256 + 3 * 2;
        let requests = (self.max_aad + self.max_blob).max(self.max_aad + self.max_plaintext);
        let responses = self.max_plaintext + self.max_blob;
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
        Self { max_frame: 64 * 1024, max_aad: 8 * 1024, max_plaintext: 4 * 1024, max_blob: 16 * 1024 }
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
}
