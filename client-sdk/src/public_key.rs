//! Public keys: fetched once with GET_PUBLIC_KEY, then used without the proxy.
//!
//! [`Client::public_key`] fetches a key version's public key as a [`PublicKeyInfo`]:
//! its algorithm and DER SubjectPublicKeyInfo, which any X.509 tool reads (`openssl
//! pkey -pubin -inform DER`). With it a client
//!
//! - verifies signatures locally ([`PublicKeyInfo::verify_locally`]), with the same
//!   RustCrypto verifiers the proxy uses (the `keymux-crypto` crate), so verification
//!   scales with the clients rather than the proxy;
//! - wraps data keys offline to an `ml-kem-768` key ([`wrap_offline`]): the blob is
//!   the one WRAP would have made (blob mode 3), and only its UNWRAP, which needs the
//!   private key, goes through the proxy. [`Client::wrap_locally`] fetches the current
//!   public key and wraps in one call, so the data key never leaves the process.
//!
//! A public key is per version: a key rotated since the fetch signs with, and WRAP
//! encapsulates to, its new version; blobs and signatures of the old version stay
//! good while it is enabled. Keep a [`PublicKeyInfo`] as long as its version serves
//! you, or store its DER and rebuild it with [`PublicKeyInfo::from_spki_der`].

use keymux_crypto::{CryptoError, KeyType, Operation, PublicKey, kem};
use keymux_protocol::{Algorithm, BlobHeader, BlobMode, Opcode, Reply, Request};

use crate::client::{Client, unexpected};
use crate::config::CallOptions;
use crate::error::{ProtocolError, PublicKeyError, Result};

/// One version of a key's public key, parsed and ready to verify or wrap with.
///
/// Made by [`Client::public_key`], or from stored DER by
/// [`PublicKeyInfo::from_spki_der`]. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    key: String,
    version: u32,
    algorithm: Algorithm,
    public: PublicKey,
}

impl PublicKeyInfo {
    /// Rebuilds a public key from its parts, as [`Client::public_key`] returned them
    /// (say, stored to wrap offline later without calling the proxy at all).
    ///
    /// `key` must be a valid key name (1 to 255 bytes), `version` 1 or more, and
    /// `spki_der` a DER SubjectPublicKeyInfo of an `algorithm` key.
    pub fn from_spki_der(
        key: impl Into<String>,
        version: u32,
        algorithm: Algorithm,
        spki_der: &[u8],
    ) -> Result<Self, PublicKeyError> {
        let key = key.into();
        if !(1..=255).contains(&key.len()) {
            return Err(PublicKeyError::InvalidKeyName { len: key.len() });
        }
        if version == 0 {
            return Err(PublicKeyError::InvalidVersion);
        }
        let invalid = PublicKeyError::InvalidPublicKey { algorithm };
        let key_type = key_type(algorithm).ok_or(invalid)?;
        let public = PublicKey::from_spki_der(key_type, spki_der).map_err(|_| invalid)?;
        Ok(Self { key, version, algorithm, public })
    }

    /// The key's name.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key version this public key belongs to (never 0: asking for version 0 gets
    /// the current version's key, and this names it).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The DER SubjectPublicKeyInfo, in canonical form (an EC point uncompressed).
    /// `openssl pkey -pubin -inform DER` reads it.
    pub fn spki_der(&self) -> &[u8] {
        self.public.spki_der()
    }

    /// Whether `signature` over `message` verifies under this key, checked locally:
    /// what [`Client::verify`] would answer for this key version, without calling the
    /// proxy.
    ///
    /// Any signature that does not verify, malformed ones included, is `Ok(false)`.
    /// An `ml-kem-768` key is [`PublicKeyError::CannotVerify`].
    pub fn verify_locally(&self, message: &[u8], signature: &[u8]) -> Result<bool, PublicKeyError> {
        self.public.verify(message, signature).map_err(|error| self.local_error(error))
    }

    /// [`PublicKeyInfo::verify_locally`] over a digest the caller computed with the
    /// key's hash, as for [`Client::verify_digest`]. A digest of the wrong length is
    /// [`PublicKeyError::DigestLength`]; Ed25519 and ML-DSA keys, which sign the
    /// message itself, are [`PublicKeyError::DigestUnsupported`].
    pub fn verify_digest_locally(&self, digest: &[u8], signature: &[u8]) -> Result<bool, PublicKeyError> {
        self.public.verify_digest(digest, signature).map_err(|error| self.local_error(error))
    }

    /// The one place a `keymux-crypto` refusal becomes this crate's error.
    fn local_error(&self, error: CryptoError) -> PublicKeyError {
        let algorithm = self.algorithm;
        match error {
            CryptoError::DigestLength { expected, actual } => {
                PublicKeyError::DigestLength { expected, actual }
            }
            CryptoError::Unsupported { operation: Operation::Seal, .. } => {
                PublicKeyError::CannotWrap { algorithm }
            }
            CryptoError::Unsupported { operation: Operation::VerifyDigest, .. } if algorithm.signs() => {
                PublicKeyError::DigestUnsupported { algorithm }
            }
            CryptoError::Unsupported { .. } => PublicKeyError::CannotVerify { algorithm },
            // Verifying and sealing refuse nothing else; a parsed key is valid.
            _ => PublicKeyError::InvalidPublicKey { algorithm },
        }
    }
}

/// Wraps `dek` to an `ml-kem-768` key's public key, bound to `aad`, without calling the
/// proxy: the blob is one [`Client::unwrap`] opens through the proxy with the same
/// `aad`, as it would a blob from [`Client::wrap`]. It is blob mode 3:
///
/// ```text
/// blob := "KMX" format:u8 (=1) key:str8 version:u32 mode:u8 (=3) body
/// body := keymux_crypto::kem::seal(encapsulation_key, header || aad, dek)
/// ```
///
/// The associated data is the header (everything before `body`) followed by `aad`, as
/// for every blob, so the blob cannot be moved to another key, version or context.
///
/// Any other algorithm is [`PublicKeyError::CannotWrap`]; a data key too long for its
/// blob to fit an UNWRAP request is [`PublicKeyError::DataKeyTooLong`]. Every call
/// encapsulates afresh, so two blobs of one data key share nothing.
pub fn wrap_offline(public_key: &PublicKeyInfo, aad: &[u8], dek: &[u8]) -> Result<Vec<u8>, PublicKeyError> {
    if public_key.algorithm != Algorithm::MlKem768 {
        return Err(PublicKeyError::CannotWrap { algorithm: public_key.algorithm });
    }
    let header = BlobHeader { key: public_key.key.clone(), version: public_key.version, mode: BlobMode::Kem };
    // The name was checked when the public key was made, so the header encodes.
    let mut blob = header.to_bytes().map_err(|_| PublicKeyError::InvalidKeyName { len: header.key.len() })?;
    let max = usize::from(u16::MAX) - blob.len() - kem::OVERHEAD;
    if dek.len() > max {
        return Err(PublicKeyError::DataKeyTooLong { len: dek.len(), max });
    }
    let body = kem::seal(&public_key.public, &BlobHeader::associated_data(&blob, aad), dek)
        .map_err(|error| public_key.local_error(error))?;
    blob.extend_from_slice(&body);
    Ok(blob)
}

impl Client {
    /// Fetches the public key of `key` version `version`; 0 asks for the current
    /// version, and the answer names it ([`PublicKeyInfo::version`]).
    ///
    /// A key without a public key (`aes-256`) is [`Error::BadRequest`](crate::Error::BadRequest);
    /// an unknown key or version [`Error::UnknownKey`](crate::Error::UnknownKey). A
    /// public key that does not parse as the algorithm the proxy named is
    /// [`ProtocolError::InvalidPublicKey`].
    pub async fn public_key(&self, key: &str, version: u32) -> Result<PublicKeyInfo> {
        self.public_key_with(key, version, &CallOptions::default()).await
    }

    /// [`Client::public_key`] with per-call options.
    pub async fn public_key_with(
        &self,
        key: &str,
        version: u32,
        options: &CallOptions,
    ) -> Result<PublicKeyInfo> {
        let request = Request::GetPublicKey { key: key.to_owned(), version };
        let (got, algorithm, public_key) = match self.call(request, options).await? {
            Reply::PublicKey { version, algorithm, public_key } => (version, algorithm, public_key),
            other => return Err(unexpected(Opcode::GetPublicKey, &other)),
        };
        if got == 0 || (version != 0 && got != version) {
            return Err(ProtocolError::UnexpectedVersion { requested: version, got }.into());
        }
        PublicKeyInfo::from_spki_der(key, got, algorithm, &public_key).map_err(|error| match error {
            PublicKeyError::InvalidPublicKey { algorithm } => {
                ProtocolError::InvalidPublicKey { algorithm }.into()
            }
            other => other.into(),
        })
    }

    /// Wraps `dek` under the current version of `key`, an `ml-kem-768` key, without
    /// sending the data key to the proxy: fetches the public key (one GET_PUBLIC_KEY)
    /// and [`wrap_offline`]s to it. To wrap many keys, fetch once with
    /// [`Client::public_key`] and call [`wrap_offline`] for each.
    pub async fn wrap_locally(&self, key: &str, aad: &[u8], dek: &[u8]) -> Result<Vec<u8>> {
        self.wrap_locally_with(key, aad, dek, &CallOptions::default()).await
    }

    /// [`Client::wrap_locally`] with per-call options for the GET_PUBLIC_KEY call.
    pub async fn wrap_locally_with(
        &self,
        key: &str,
        aad: &[u8],
        dek: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>> {
        let public_key = self.public_key_with(key, 0, options).await?;
        Ok(wrap_offline(&public_key, aad, dek)?)
    }
}

/// The key type of a wire algorithm: they share their names.
fn key_type(algorithm: Algorithm) -> Option<KeyType> {
    Some(match algorithm {
        Algorithm::EcdsaP256Sha256 => KeyType::EcP256,
        Algorithm::EcdsaP384Sha384 => KeyType::EcP384,
        Algorithm::Ed25519 => KeyType::Ed25519,
        Algorithm::Rsa3072PssSha256 => KeyType::Rsa3072Pss,
        Algorithm::Rsa3072Pkcs1Sha256 => KeyType::Rsa3072Pkcs1,
        Algorithm::MlDsa65 => KeyType::MlDsa65,
        Algorithm::MlKem768 => KeyType::MlKem768,
        // An algorithm newer than this client: it cannot use the key locally.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use keymux_crypto::PrivateKey;

    use super::*;

    fn pair(key_type: KeyType, algorithm: Algorithm) -> (PrivateKey, PublicKeyInfo) {
        let private = PrivateKey::generate(key_type).unwrap();
        let spki = private.public_key().spki_der().to_vec();
        let info = PublicKeyInfo::from_spki_der("k", 3, algorithm, &spki).unwrap();
        (private, info)
    }

    #[test]
    fn every_algorithm_has_its_key_type() {
        for algorithm in Algorithm::ALL {
            let key_type = key_type(algorithm).unwrap();
            assert_eq!(key_type.name(), algorithm.name());
            assert_eq!(key_type.signature_algorithm_id().is_some(), algorithm.signs(), "{algorithm}");
        }
    }

    #[test]
    fn verifies_locally_message_and_digest() {
        let (private, info) = pair(KeyType::EcP256, Algorithm::EcdsaP256Sha256);
        assert_eq!((info.key(), info.version(), info.algorithm()), ("k", 3, Algorithm::EcdsaP256Sha256));
        assert_eq!(info.spki_der(), private.public_key().spki_der());
        let signature = private.sign(b"message").unwrap();
        assert_eq!(info.verify_locally(b"message", &signature), Ok(true));
        assert_eq!(info.verify_locally(b"other", &signature), Ok(false));
        assert_eq!(info.verify_locally(b"message", b"not DER"), Ok(false));

        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"message");
        assert_eq!(info.verify_digest_locally(&digest, &signature), Ok(true));
        assert_eq!(
            info.verify_digest_locally(&digest[..31], &signature),
            Err(PublicKeyError::DigestLength { expected: 32, actual: 31 })
        );
    }

    #[test]
    fn refusals_are_typed() {
        let (_, ed25519) = pair(KeyType::Ed25519, Algorithm::Ed25519);
        assert_eq!(
            ed25519.verify_digest_locally(&[0; 32], &[0; 64]),
            Err(PublicKeyError::DigestUnsupported { algorithm: Algorithm::Ed25519 })
        );
        assert_eq!(
            wrap_offline(&ed25519, b"", &[1; 32]),
            Err(PublicKeyError::CannotWrap { algorithm: Algorithm::Ed25519 })
        );
        let (_, kem) = pair(KeyType::MlKem768, Algorithm::MlKem768);
        let cannot_verify = Err(PublicKeyError::CannotVerify { algorithm: Algorithm::MlKem768 });
        assert_eq!(kem.verify_locally(b"m", &[0; 64]), cannot_verify);
        assert_eq!(kem.verify_digest_locally(&[0; 32], &[0; 64]), cannot_verify);

        let spki = ed25519.spki_der();
        assert_eq!(
            PublicKeyInfo::from_spki_der("k", 1, Algorithm::EcdsaP256Sha256, spki),
            Err(PublicKeyError::InvalidPublicKey { algorithm: Algorithm::EcdsaP256Sha256 })
        );
        assert_eq!(
            PublicKeyInfo::from_spki_der("", 1, Algorithm::Ed25519, spki),
            Err(PublicKeyError::InvalidKeyName { len: 0 })
        );
        assert_eq!(
            PublicKeyInfo::from_spki_der("x".repeat(256), 1, Algorithm::Ed25519, spki),
            Err(PublicKeyError::InvalidKeyName { len: 256 })
        );
        assert_eq!(
            PublicKeyInfo::from_spki_der("k", 0, Algorithm::Ed25519, spki),
            Err(PublicKeyError::InvalidVersion)
        );
    }

    /// The offline blob has the mode-3 layout and opens with the private key under the
    /// header-bound associated data, as the proxy opens it.
    #[test]
    fn wrap_offline_writes_a_mode_3_blob_bound_to_its_header_and_aad() {
        let (private, info) = pair(KeyType::MlKem768, Algorithm::MlKem768);
        let blob = wrap_offline(&info, b"tenant=1", &[7; 32]).unwrap();
        let (header, body) = BlobHeader::parse(&blob).unwrap();
        assert_eq!(header, BlobHeader { key: "k".into(), version: 3, mode: BlobMode::Kem });
        assert_eq!(body.len(), kem::OVERHEAD + 32);
        let header_bytes = &blob[..blob.len() - body.len()];
        let opened = kem::open(&private, &BlobHeader::associated_data(header_bytes, b"tenant=1"), body);
        assert_eq!(opened.unwrap().as_slice(), &[7; 32]);
        let wrong = kem::open(&private, &BlobHeader::associated_data(header_bytes, b"tenant=2"), body);
        assert_eq!(wrong.unwrap_err(), CryptoError::Integrity);
        assert_ne!(wrap_offline(&info, b"tenant=1", &[7; 32]).unwrap(), blob, "fresh encapsulation");

        let max = usize::from(u16::MAX) - header_bytes.len() - kem::OVERHEAD;
        assert_eq!(wrap_offline(&info, b"", &vec![0; max]).unwrap().len(), usize::from(u16::MAX));
        assert_eq!(
            wrap_offline(&info, b"", &vec![0; max + 1]),
            Err(PublicKeyError::DataKeyTooLong { len: max + 1, max })
        );
    }
}
