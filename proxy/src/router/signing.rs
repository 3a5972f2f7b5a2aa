//! SIGN's checks before it is queued, and VERIFY and GET_PUBLIC_KEY, which never reach
//! a backend: they are answered on the connection's task from the public keys the
//! refresher loaded ([`crate::keys::PublicKeys`]), so they scale with the proxy's cores,
//! not with the HSM.
//!
//! - With the digest flag, the input must be as long as the algorithm's hash
//!   (BAD_REQUEST otherwise); on Ed25519 and ML-DSA, which sign the message itself, the
//!   flag is UNSUPPORTED.
//! - A signature that does not verify is `valid = 0` with status OK; an unknown key or
//!   version is UNKNOWN_KEY, a disabled version (or one below the key's minimum
//!   version) KEY_DISABLED, a key of the wrong type BAD_REQUEST.

use std::sync::Arc;

use keymux_crypto::PublicKey;
use keymux_protocol::{Algorithm, Reply};

use super::Router;
use crate::access::ops::AclOp;
use crate::error::OpError;
use crate::keys::KeyInfo;
use crate::server::peer::Peer;

/// Checks a SIGN input's digest flag and length against `algorithm`.
fn check_input(key: &KeyInfo, algorithm: Algorithm, input: &[u8], digest: bool) -> Result<(), OpError> {
    if !digest {
        return Ok(());
    }
    match algorithm.digest_len() {
        None => Err(OpError::Unsupported),
        Some(len) if len == input.len() => Ok(()),
        Some(len) => Err(OpError::BadRequest(format!(
            "a {} digest for key {:?} is {len} bytes, not {}",
            algorithm,
            key.name,
            input.len()
        ))),
    }
}

impl Router {
    /// The checks SIGN passes before it is queued: the ACL, a signing key, the input.
    pub(super) fn check_sign(
        &self,
        peer: &Peer,
        key: &str,
        input: &[u8],
        digest: bool,
    ) -> Result<(), OpError> {
        self.authorize(peer, AclOp::Sign, key)?;
        let info = self.registry.get(key)?;
        let algorithm = info.check_signs()?;
        check_input(&info, algorithm, input, digest)
    }

    /// VERIFY, locally.
    pub(super) fn verify(
        &self,
        peer: &Peer,
        key: &str,
        version: u32,
        input: &[u8],
        signature: &[u8],
        digest: bool,
    ) -> Result<Reply, OpError> {
        self.authorize(peer, AclOp::Verify, key)?;
        let info = self.registry.get(key)?;
        let algorithm = info.check_signs()?;
        check_input(&info, algorithm, input, digest)?;
        info.check_usable(version)?;
        let public = self.loaded_public_key(&info, version)?;
        let verified =
            if digest { public.verify_digest(input, signature) } else { public.verify(input, signature) };
        let valid = verified.map_err(|error| OpError::BadRequest(error.to_string()))?;
        Ok(Reply::Verify { valid })
    }

    /// GET_PUBLIC_KEY: `version` 0 is the current version.
    pub(super) fn public_key(&self, peer: &Peer, key: &str, version: u32) -> Result<Reply, OpError> {
        self.authorize(peer, AclOp::GetPublicKey, key)?;
        let info = self.registry.get(key)?;
        let Some(algorithm) = info.algorithm() else {
            return Err(OpError::BadRequest(format!(
                "key {key:?} is a {} key: a symmetric key has no public key",
                info.key_type
            )));
        };
        let version = if version == 0 { info.current_version()? } else { version };
        info.check_usable(version)?;
        let public = self.loaded_public_key(&info, version)?;
        Ok(Reply::PublicKey { version, algorithm, public_key: public.spki_der().to_vec() })
    }

    /// The public key of a listed version; a version whose public key the refresher
    /// could not load yet is BACKEND_UNAVAILABLE (retryable: the next refresh retries).
    fn loaded_public_key(&self, info: &KeyInfo, version: u32) -> Result<Arc<PublicKey>, OpError> {
        self.public_keys.get(&info.name, version).ok_or_else(|| OpError::BackendUnavailable {
            reason: format!("the public key of {:?} version {version} is not loaded yet", info.name),
            retry_after: std::time::Duration::from_millis(500),
        })
    }
}
