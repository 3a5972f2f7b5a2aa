//! Secret byte strings: data keys in flight.

use std::fmt;

use zeroize::Zeroizing;

/// Plaintext key material (a DEK, an intermediate key). Zeroized on drop; its `Debug`
/// output shows only the length, so it cannot leak through logs or error messages.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they are zeroized when the secret is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn copy_from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// A secret of `len` zero bytes, to be filled in place (for example by a RNG).
    pub fn zeroed(len: usize) -> Self {
        Self::new(vec![0; len])
    }

    /// The secret bytes. Callers must not copy them into memory that is not wiped.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, mutable, for filling in place.
    pub fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = SecretBytes::copy_from(b"hunter2-hunter2");
        let shown = format!("{secret:?}");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("15 bytes"));
    }
}
