//! Envelope encryption: seal data locally under a fresh data key from the proxy, keep
//! only the wrapped data key beside the ciphertext.
//!
//! [`Client::seal`] asks the proxy for a 32-byte data key (GENERATE_DATA_KEY), encrypts
//! the data with AES-256-GCM under it, and returns an envelope holding the wrapped key,
//! the nonce and the ciphertext. [`Client::open`] unwraps the key through the proxy and
//! decrypts. The data never leaves the process; the plaintext data key lives only for
//! the call and is zeroized when dropped.
//!
//! # Byte format, version 1
//!
//! ```text
//! envelope := magic:"KMXE" version:u8 (=1) blob:bytes16 nonce:[u8; 12] sealed
//! bytes16  := len:u16 (big-endian) bytes
//! sealed   := AES-256-GCM(dek, nonce, data, ad) = ciphertext (len(data) bytes) tag (16 bytes)
//! ad       := "KMXE" version:u8 aad
//! ```
//!
//! - `blob` is the proxy's wrapped data key (itself self-describing, see the protocol's
//!   blob format), wrapped with the same `aad`, so the proxy checks `aad` first.
//! - The associated data binds the magic and version (no downgrade to a later, weaker
//!   format) and the caller's `aad` (no moving ciphertext between contexts). It does not
//!   include `blob`, so [`Client::rewrap_envelope`] can move an envelope to a key's new
//!   version without touching the ciphertext.
//! - The nonce is random. Every envelope has its own data key, so a nonce is never
//!   reused under a key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::client::Client;
use crate::config::CallOptions;
use crate::error::{EnvelopeError, Result};

/// The first four bytes of every envelope.
pub const ENVELOPE_MAGIC: [u8; 4] = *b"KMXE";
/// The envelope version this client writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes in an AES-256-GCM data key.
pub const DATA_KEY_LEN: u16 = 32;
/// Bytes in the nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes in the authentication tag at the end of the ciphertext.
pub const TAG_LEN: usize = 16;

/// A parsed envelope, borrowing from its bytes. See the [module docs](self) for the
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope<'a> {
    /// The wrapped data key.
    pub blob: &'a [u8],
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Splits `bytes` into its fields, checking magic, version and lengths (not the
    /// tag: that needs the data key).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        let (magic, rest) = bytes.split_first_chunk::<4>().ok_or(EnvelopeError::Truncated)?;
        if *magic != ENVELOPE_MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let (&version, rest) = rest.split_first().ok_or(EnvelopeError::Truncated)?;
        if version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(EnvelopeError::Truncated)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(EnvelopeError::Truncated);
        }
        let (blob, rest) = rest.split_at(len);
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>().ok_or(EnvelopeError::Truncated)?;
        if sealed.len() < TAG_LEN {
            return Err(EnvelopeError::Truncated);
        }
        Ok(Self { blob, nonce: *nonce, sealed })
    }

    /// The envelope's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        let len = u16::try_from(self.blob.len()).map_err(|_| EnvelopeError::BlobTooLong(self.blob.len()))?;
        let mut out = Vec::with_capacity(4 + 1 + 2 + self.blob.len() + NONCE_LEN + self.sealed.len());
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(self.blob);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(self.sealed);
        Ok(out)
    }
}

/// The AEAD's associated data: magic, version, then the caller's aad.
fn associated_data(aad: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(ENVELOPE_MAGIC.len() + 1 + aad.len());
    ad.extend_from_slice(&ENVELOPE_MAGIC);
    ad.push(ENVELOPE_VERSION);
    ad.extend_from_slice(aad);
    ad
}

fn cipher(data_key: &[u8]) -> Result<Aes256Gcm, EnvelopeError> {
    // The cipher zeroizes its key schedule on drop (aes-gcm's `zeroize` feature).
    Aes256Gcm::new_from_slice(data_key).map_err(|_| EnvelopeError::DataKeyLength(data_key.len()))
}

/// Encrypts `data` under `data_key` into an envelope carrying `blob`.
fn seal_with_key(data_key: &[u8], blob: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = cipher(data_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce[..]);
    let ad = associated_data(aad);
    let sealed = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: data, aad: &ad })
        // Only data over AES-GCM's 64 GiB limit fails to encrypt.
        .map_err(|_| EnvelopeError::Authentication)?;
    Envelope { blob, nonce, sealed: &sealed }.to_bytes()
}

/// Decrypts a parsed envelope with its unwrapped data key.
fn open_with_key(data_key: &[u8], envelope: &Envelope<'_>, aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = cipher(data_key)?;
    let ad = associated_data(aad);
    cipher
        .decrypt(&Nonce::from(envelope.nonce), Payload { msg: envelope.sealed, aad: &ad })
        .map_err(|_| EnvelopeError::Authentication)
}

impl Client {
    /// Encrypts `data` under a fresh data key generated by the proxy under `key`, and
    /// returns an envelope (see [the format](crate::envelope)). `aad` binds both the
    /// wrapped data key and the ciphertext to a context; [`Client::open`] needs the same.
    pub async fn seal(&self, key: &str, aad: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        self.seal_with(key, aad, data, &CallOptions::default()).await
    }

    /// [`Client::seal`] with per-call options for the GENERATE_DATA_KEY call.
    pub async fn seal_with(
        &self,
        key: &str,
        aad: &[u8],
        data: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>> {
        let data_key = self.generate_data_key_with(key, aad, DATA_KEY_LEN, options).await?;
        Ok(seal_with_key(data_key.plaintext.expose(), &data_key.blob, aad, data)?)
    }

    /// Unwraps an envelope's data key through the proxy and decrypts the data.
    ///
    /// A wrong `aad` fails at the proxy with [`Error::Integrity`](crate::Error::Integrity);
    /// altered ciphertext fails locally with [`EnvelopeError::Authentication`].
    pub async fn open(&self, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
        self.open_with(aad, envelope, &CallOptions::default()).await
    }

    /// [`Client::open`] with per-call options for the UNWRAP call.
    pub async fn open_with(&self, aad: &[u8], envelope: &[u8], options: &CallOptions) -> Result<Vec<u8>> {
        let envelope = Envelope::parse(envelope)?;
        let data_key = self.unwrap_with(aad, envelope.blob, options).await?;
        Ok(open_with_key(data_key.expose(), &envelope, aad)?)
    }

    /// Re-wraps an envelope's data key under its key's current version (after a
    /// rotation). The ciphertext is untouched and the data key never leaves the proxy.
    pub async fn rewrap_envelope(&self, aad: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
        let parsed = Envelope::parse(envelope)?;
        let blob = self.rewrap(aad, parsed.blob).await?;
        Ok(Envelope { blob: &blob, ..parsed }.to_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn local_round_trip_and_layout() {
        let bytes = seal_with_key(&KEY, b"wrapped", b"ctx", b"hello").unwrap();
        assert_eq!(&bytes[..5], b"KMXE\x01");
        assert_eq!(&bytes[5..7], &7u16.to_be_bytes());
        assert_eq!(&bytes[7..14], b"wrapped");
        assert_eq!(bytes.len(), 14 + NONCE_LEN + 5 + TAG_LEN);
        let envelope = Envelope::parse(&bytes).unwrap();
        assert_eq!(envelope.blob, b"wrapped");
        assert_eq!(open_with_key(&KEY, &envelope, b"ctx").unwrap(), b"hello");
    }

    #[test]
    fn tampering_or_a_wrong_aad_does_not_authenticate() {
        let bytes = seal_with_key(&KEY, b"wrapped", b"ctx", b"hello").unwrap();
        let envelope = Envelope::parse(&bytes).unwrap();
        assert_eq!(open_with_key(&KEY, &envelope, b"other"), Err(EnvelopeError::Authentication));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let envelope = Envelope::parse(&flipped).unwrap();
        assert_eq!(open_with_key(&KEY, &envelope, b"ctx"), Err(EnvelopeError::Authentication));
    }

    #[test]
    fn malformed_envelopes_are_rejected() {
        let bytes = seal_with_key(&KEY, b"wrapped", b"", b"").unwrap();
        assert_eq!(Envelope::parse(b"KMX"), Err(EnvelopeError::Truncated));
        assert_eq!(Envelope::parse(b"XXXX\x01\x00\x00"), Err(EnvelopeError::BadMagic));
        assert_eq!(Envelope::parse(b"KMXE\x02\x00\x00"), Err(EnvelopeError::UnsupportedVersion(2)));
        for cut in 0..bytes.len() {
            assert!(Envelope::parse(&bytes[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
        assert!(Envelope::parse(&bytes).is_ok());
    }

    #[test]
    fn a_short_data_key_is_refused() {
        assert_eq!(seal_with_key(&[1; 16], b"b", b"", b"x"), Err(EnvelopeError::DataKeyLength(16)));
    }
}
