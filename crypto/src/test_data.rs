//! Known-answer test data for the unit tests, from `tests/data/` (see its README).

use std::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};

/// Loads `tests/data/<name>`.
pub(crate) fn load(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The bytes of a hex string field.
pub(crate) fn hex(value: &serde_json::Value, field: &str) -> Vec<u8> {
    let text = value[field].as_str().unwrap_or_else(|| panic!("no string field {field}"));
    hex::decode(text).unwrap_or_else(|e| panic!("{field}: {e}"))
}

/// A "random" generator that replays fixed bytes, for known-answer tests of the
/// randomised operations; all zeros once the bytes run out (ML-DSA's deterministic
/// variant is the hedged one with an all-zero `rnd`).
pub(crate) struct Replay {
    bytes: Vec<u8>,
    at: usize,
}

impl Replay {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Replay { bytes, at: 0 }
    }

    /// Every byte was used: the operation drew exactly what the vector supplies.
    pub(crate) fn is_spent(&self) -> bool {
        self.at == self.bytes.len()
    }
}

impl TryRng for Replay {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for d in dst {
            *d = self.bytes.get(self.at).copied().unwrap_or(0);
            self.at = (self.at + 1).min(self.bytes.len());
        }
        Ok(())
    }
}

impl TryCryptoRng for Replay {}
