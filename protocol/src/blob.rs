//! Wrapped blob v1: a self-describing header in front of the backend's ciphertext.
//!
//! ```text
//! blob := "KMX" format:u8 (=1) key:str8 version:u32 mode:u8 body
//! ```
//!
//! The mode says how the body was produced ([`BlobMode`]: direct, intermediate or
//! KEM); the body itself is the backend's to read.
//!
//! The header names the key and version, so UNWRAP needs no key name from the client.
//! The AEAD's associated data is always the header bytes followed by the client's AAD
//! (see [`BlobHeader::associated_data`]), so a blob cannot be moved to another key,
//! version or context.

use bytes::BufMut;

use crate::coding::put_str8;
use crate::error::{BlobError, EncodeError, Field};

/// The first three bytes of every blob.
pub const BLOB_MAGIC: &[u8; 3] = b"KMX";
/// The blob format this crate writes and reads.
pub const BLOB_FORMAT_V1: u8 = 1;

/// How the blob's body was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum BlobMode {
    /// The body is the backend's ciphertext of the DEK.
    Direct = 1,
    /// The body holds a backend-wrapped intermediate key and the locally sealed DEK.
    Intermediate = 2,
    /// The body holds an ML-KEM ciphertext (encapsulated to an `ml-kem-768` key's
    /// public key) and the DEK sealed under HKDF-SHA-256 of the shared secret. Anyone
    /// holding the public key can write one; only the private key's holder opens it.
    Kem = 3,
}

impl BlobMode {
    /// Every mode, in byte order.
    pub const ALL: [BlobMode; 3] = [BlobMode::Direct, BlobMode::Intermediate, BlobMode::Kem];

    /// The mode for a header's mode byte, if defined.
    pub fn from_u8(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| *mode as u8 == byte)
    }
}

/// A parsed blob header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobHeader {
    /// The key name.
    pub key: String,
    /// The key version that wrapped the body.
    pub version: u32,
    /// How the body was produced.
    pub mode: BlobMode,
}

impl BlobHeader {
    /// Header bytes: magic, format, key, version, mode.
    pub fn encoded_len(&self) -> usize {
        BLOB_MAGIC.len() + 1 + 1 + self.key.len() + 4 + 1
    }

    /// Appends the header to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) -> Result<(), EncodeError> {
        dst.put_slice(BLOB_MAGIC);
        dst.put_u8(BLOB_FORMAT_V1);
        put_str8(dst, Field::Key, &self.key)?;
        dst.put_u32(self.version);
        dst.put_u8(self.mode as u8);
        Ok(())
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Parses a blob into its header and body. The header's length is `blob.len() -
    /// body.len()`, and `&blob[..header_len]` is what the AEAD binds.
    pub fn parse(blob: &[u8]) -> Result<(BlobHeader, &[u8]), BlobError> {
        let fixed = BLOB_MAGIC.len() + 2;
        if blob.len() < fixed {
            return Err(BlobError::Truncated);
        }
        if &blob[..3] != BLOB_MAGIC {
            return Err(BlobError::BadMagic);
        }
        if blob[3] != BLOB_FORMAT_V1 {
            return Err(BlobError::UnsupportedFormat(blob[3]));
        }
        let key_len = usize::from(blob[4]);
        let rest = &blob[fixed..];
        if key_len == 0 {
            return Err(BlobError::BadKeyName);
        }
        if rest.len() < key_len + 5 {
            return Err(BlobError::Truncated);
        }
        let key = std::str::from_utf8(&rest[..key_len]).map_err(|_| BlobError::BadKeyName)?.to_owned();
        let rest = &rest[key_len..];
        let version = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let mode = BlobMode::from_u8(rest[4]).ok_or(BlobError::UnknownMode(rest[4]))?;
        let body = &rest[5..];
        if body.is_empty() {
            return Err(BlobError::EmptyBody);
        }
        Ok((BlobHeader { key, version, mode }, body))
    }

    /// The AEAD associated data for a blob: `header || aad`.
    pub fn associated_data(header_bytes: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(header_bytes.len() + aad.len());
        out.extend_from_slice(header_bytes);
        out.extend_from_slice(aad);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let header = BlobHeader { key: "payments".into(), version: 3, mode: BlobMode::Direct };
        let mut blob = header.to_bytes().unwrap();
        assert_eq!(blob.len(), header.encoded_len());
        blob.extend_from_slice(b"ciphertext");
        let (parsed, body) = BlobHeader::parse(&blob).unwrap();
        assert_eq!(parsed, header);
        assert_eq!(body, b"ciphertext");
    }

    #[test]
    fn every_mode_round_trips() {
        for mode in BlobMode::ALL {
            let header = BlobHeader { key: "pq/orders".into(), version: 1, mode };
            let mut blob = header.to_bytes().unwrap();
            assert_eq!(blob.last(), Some(&(mode as u8)));
            blob.push(0xaa);
            assert_eq!(BlobHeader::parse(&blob).unwrap(), (header, &[0xaa][..]));
        }
        assert_eq!(BlobMode::from_u8(3), Some(BlobMode::Kem));
        assert_eq!(BlobMode::from_u8(0), None);
        assert_eq!(BlobMode::from_u8(4), None);
    }

    #[test]
    fn rejects_malformed_headers() {
        assert_eq!(BlobHeader::parse(b"KM"), Err(BlobError::Truncated));
        assert_eq!(BlobHeader::parse(b"XYZ\x01\x01k\0\0\0\x01\x01b"), Err(BlobError::BadMagic));
        assert_eq!(BlobHeader::parse(b"KMX\x02\x01k\0\0\0\x01\x01b"), Err(BlobError::UnsupportedFormat(2)));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x00\0\0\0\x01\x01b"), Err(BlobError::BadKeyName));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x01k\0\0\0\x01\x07b"), Err(BlobError::UnknownMode(7)));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x01k\0\0\0\x01\x00b"), Err(BlobError::UnknownMode(0)));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x01k\0\0\0\x01\x04b"), Err(BlobError::UnknownMode(4)));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x01k\0\0\0\x01\x03"), Err(BlobError::EmptyBody));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x01k\0\0\0\x01\x01"), Err(BlobError::EmptyBody));
        assert_eq!(BlobHeader::parse(b"KMX\x01\x09k\0\0\0\x01\x01"), Err(BlobError::Truncated));
    }
}
