//! The one random number generator: the operating system's CSPRNG.

use std::convert::Infallible;

use rand_core::{TryCryptoRng, TryRng};

/// The OS CSPRNG (`getrandom`) as a `rand_core` 0.10 `CryptoRng`, handed to every
/// RustCrypto crate here so that none of them needs its own `getrandom` feature.
///
/// It panics if the OS generator fails, as the proxy's keystore does: carrying on
/// would risk weak keys or repeated nonces, and on the platforms keymux supports the
/// call blocks until the generator is seeded rather than failing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OsRng;

const FAILED: &str = "the operating system's random number generator failed";

impl TryRng for OsRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(getrandom::u32().expect(FAILED))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(getrandom::u64().expect(FAILED))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        getrandom::fill(dst).expect(FAILED);
        Ok(())
    }
}

impl TryCryptoRng for OsRng {}

/// Fills `out` from the OS CSPRNG.
pub(crate) fn fill(out: &mut [u8]) {
    getrandom::fill(out).expect(FAILED);
}
