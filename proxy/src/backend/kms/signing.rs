//! SIGN on KMS, and the public keys the proxy verifies with.
//!
//! Every SIGN is one KMS `Sign` on the current version's alias, through
//! [`Regions::call`](super::failover::Regions::call) like every data-path request
//! (admission, retries, circuit, failover). A message goes as `MessageType = RAW` (KMS
//! hashes it); with the digest flag, the input goes as `DIGEST`. KMS answers in
//! keymux's wire formats already: ECDSA signatures DER-encoded, RSA ones raw.
//!
//! `GetPublicKey` answers the DER SubjectPublicKeyInfo the wire serves; the refresher
//! asks for it once per version ([`crate::keys::PublicKeys`]), and VERIFY runs on the
//! proxy from then on, never reaching KMS.

use std::time::Instant;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use keymux_protocol::Reply;

use super::Shared;
use super::client::classify;
use super::key_types::signing_algorithm;
use super::worker::missing;
use crate::backend::{BackendFault, OpResult};
use crate::error::OpError;
use crate::keys::{KeyInfo, KeyType};

/// The largest message KMS signs as `RAW` (and the smallest is 1 byte).
pub(crate) const MAX_RAW_MESSAGE: usize = 4096;

/// What one KMS `Sign` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignRequest {
    pub(crate) algorithm: SigningAlgorithmSpec,
    pub(crate) message_type: MessageType,
}

impl SignRequest {
    /// The request for `input` (a digest with `digest`, whose length the router has
    /// checked) under a key of `key_type`. Refused before any KMS call: a type KMS does
    /// not sign with (UNSUPPORTED), and a message KMS would refuse (BAD_REQUEST).
    pub(crate) fn new(key_type: KeyType, input: &[u8], digest: bool) -> Result<Self, OpError> {
        let algorithm = signing_algorithm(key_type).ok_or(OpError::Unsupported)?;
        if digest {
            return Ok(Self { algorithm, message_type: MessageType::Digest });
        }
        if input.is_empty() || input.len() > MAX_RAW_MESSAGE {
            return Err(OpError::BadRequest(format!(
                "KMS signs messages of 1 to {MAX_RAW_MESSAGE} bytes, not {}: send a longer one's \
                 digest with the digest flag",
                input.len()
            )));
        }
        Ok(Self { algorithm, message_type: MessageType::Raw })
    }
}

impl Shared {
    /// SIGN with `key`'s current version: one KMS `Sign`.
    pub(crate) async fn sign(
        &self,
        key: &KeyInfo,
        input: &[u8],
        digest: bool,
        deadline: Instant,
    ) -> OpResult {
        key.check_signs()?;
        let request = SignRequest::new(key.key_type, input, digest)?;
        let version = key.current_version()?;
        let alias = self.names.version(&key.name, version);
        let signature = self
            .regions
            .call("sign", (&key.name, version), deadline, |client| {
                let call = client
                    .sign()
                    .key_id(&alias)
                    .message(Blob::new(input))
                    .message_type(request.message_type.clone())
                    .signing_algorithm(request.algorithm.clone())
                    .send();
                async move {
                    let output = call.await.map_err(classify)?;
                    output.signature.map(Blob::into_inner).ok_or_else(|| missing("a signature"))
                }
            })
            .await?;
        Ok(Reply::Sign { version, signature })
    }

    /// The DER SubjectPublicKeyInfo of `version` of `name`: one `GetPublicKey` on the
    /// version's alias, through the regions like a data-path request, due within
    /// `max_wait`.
    pub(crate) async fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault> {
        let alias = self.names.version(name, version);
        let deadline = Instant::now() + self.max_wait;
        let der = self
            .regions
            .call("get_public_key", (name, version), deadline, |client| {
                let call = client.get_public_key().key_id(&alias).send();
                async move {
                    let output = call.await.map_err(classify)?;
                    output.public_key.map(Blob::into_inner).ok_or_else(|| missing("a public key"))
                }
            })
            .await?;
        Ok(der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_raw_and_digests_as_digests() {
        let request = SignRequest::new(KeyType::EcP256, b"message", false).unwrap();
        assert_eq!(request.message_type, MessageType::Raw);
        assert_eq!(request.algorithm, SigningAlgorithmSpec::EcdsaSha256);
        let request = SignRequest::new(KeyType::EcP384, &[0; 48], true).unwrap();
        assert_eq!(request.message_type, MessageType::Digest);
        assert_eq!(request.algorithm, SigningAlgorithmSpec::EcdsaSha384);
        let pss = SignRequest::new(KeyType::Rsa3072Pss, &[0; 32], true).unwrap();
        assert_eq!(pss.algorithm, SigningAlgorithmSpec::RsassaPssSha256);
        let pkcs1 = SignRequest::new(KeyType::Rsa3072Pkcs1, &[1; MAX_RAW_MESSAGE], false).unwrap();
        assert_eq!(pkcs1.algorithm, SigningAlgorithmSpec::RsassaPkcs1V15Sha256);
    }

    #[test]
    fn what_kms_would_refuse_is_refused_first() {
        for input in [&[][..], &[0; MAX_RAW_MESSAGE + 1][..]] {
            let refused = SignRequest::new(KeyType::EcP256, input, false);
            assert!(matches!(refused, Err(OpError::BadRequest(_))), "{} bytes", input.len());
        }
        for key_type in [KeyType::Aes256, KeyType::Ed25519, KeyType::MlDsa65, KeyType::MlKem768] {
            assert_eq!(SignRequest::new(key_type, b"m", false), Err(OpError::Unsupported), "{key_type}");
        }
    }
}
