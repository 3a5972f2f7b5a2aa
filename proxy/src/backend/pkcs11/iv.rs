//! AES-GCM IVs that never repeat under a key.
//!
//! SoftHSM2 and most HSMs take the GCM IV from the caller, and a repeated (key, IV)
//! pair breaks GCM. keymux uses the deterministic construction of NIST SP 800-38D
//! §8.2.1: a 96-bit IV = a 64-bit *fixed field* || a 32-bit *invocation counter*.
//!
//! - The fixed field is drawn at random for every session opened (from the HSM's RNG
//!   XORed with the OS CSPRNG, so neither alone must be trusted), and drawn again
//!   whenever the counter would wrap. Within one fixed field the counter makes IVs
//!   distinct; across sessions, threads, restarts and proxies sharing the token, IVs
//!   can only collide if two fixed fields collide.
//! - With F fixed fields ever drawn under one key version, the chance of any collision
//!   is below F² / 2^65: for a million session starts (F = 2^20) that is 2^-25. Rotate
//!   keys long before that (and before the 2^32-invocation guidance for a key).
//!
//! Ordering by counter, not by a random IV per message, is what lets one fixed field
//! serve 2^32 wraps with no collision risk inside it.

/// Hands out IVs for one session.
#[derive(Debug)]
pub(crate) struct IvSequence {
    fixed: [u8; 8],
    counter: u32,
}

impl IvSequence {
    /// A sequence with the given random fixed field.
    pub(crate) fn new(fixed: [u8; 8]) -> Self {
        Self { fixed, counter: 0 }
    }

    /// The next IV, or `None` when the counter is exhausted and a new fixed field must
    /// be drawn.
    pub(crate) fn next_iv(&mut self) -> Option<[u8; 12]> {
        let counter = self.counter;
        self.counter = counter.checked_add(1)?;
        let mut iv = [0u8; 12];
        iv[..8].copy_from_slice(&self.fixed);
        iv[8..].copy_from_slice(&counter.to_be_bytes());
        Some(iv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivs_are_distinct_and_exhaust() {
        let mut seq = IvSequence::new([7; 8]);
        let a = seq.next_iv().unwrap();
        let b = seq.next_iv().unwrap();
        assert_ne!(a, b);
        assert_eq!(&a[..8], &[7; 8]);
        let mut seq = IvSequence { fixed: [0; 8], counter: u32::MAX - 1 };
        assert!(seq.next_iv().is_some());
        assert!(seq.next_iv().is_none(), "never wraps around to a used IV");
    }
}
