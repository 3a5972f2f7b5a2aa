//! How a blob's body is sealed on the token.
//!
//! ```text
//! body := scheme:u8 sealed
//! scheme 1, AES-256-GCM:           iv:[12] ciphertext tag:[16]
//! scheme 2, AES-256-CBC + HMAC:    iv:[16] ciphertext mac:[32]
//! ```
//!
//! Scheme 1 is used wherever the token offers `CKM_AES_GCM`. Scheme 2 is for tokens that
//! do not (opencryptoki's soft token, for one): the AEAD composition of RFC 7518
//! §5.2.2 with two keys held on the token, encrypt-then-MAC. The IV is random (CBC needs
//! unpredictable IVs), E = AES-256-CBC-PAD(iv, plaintext), and
//! `mac = HMAC-SHA256(mac_key, A || iv || E || AL)` where A is the associated data (blob
//! header || client AAD) and AL its length in bits as a 64-bit big-endian integer. The
//! MAC is verified on the token before anything is decrypted.

use cryptoki::mechanism::MechanismType;

use super::config::Pkcs11Mechanism;

/// A sealing scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// AES-256-GCM.
    Gcm = 1,
    /// AES-256-CBC-PAD then HMAC-SHA256.
    CbcHmac = 2,
}

/// GCM IV bytes.
pub(crate) const GCM_IV_LEN: usize = 12;
/// GCM tag bytes.
pub(crate) const GCM_TAG_LEN: usize = 16;
/// CBC IV bytes.
pub(crate) const CBC_IV_LEN: usize = 16;
/// HMAC-SHA256 bytes.
pub(crate) const MAC_LEN: usize = 32;

impl Scheme {
    /// The scheme of a body's first byte.
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Scheme::Gcm),
            2 => Some(Scheme::CbcHmac),
            _ => None,
        }
    }

    /// The scheme for new blobs, given the setting and what the token offers.
    pub(crate) fn choose(setting: Pkcs11Mechanism, offered: &[MechanismType]) -> Result<Self, String> {
        let has = |m: MechanismType| offered.contains(&m);
        let cbc_hmac = has(MechanismType::AES_CBC_PAD) && has(MechanismType::SHA256_HMAC);
        match setting {
            Pkcs11Mechanism::AesGcm if has(MechanismType::AES_GCM) => Ok(Scheme::Gcm),
            Pkcs11Mechanism::AesCbcHmacSha256 if cbc_hmac => Ok(Scheme::CbcHmac),
            Pkcs11Mechanism::Auto if has(MechanismType::AES_GCM) => Ok(Scheme::Gcm),
            Pkcs11Mechanism::Auto if cbc_hmac => Ok(Scheme::CbcHmac),
            _ => Err(format!(
                "the token does not offer what mechanism = {setting:?} needs \
                 (CKM_AES_GCM, or CKM_AES_CBC_PAD with CKM_SHA256_HMAC)"
            )),
        }
    }
}

/// The bytes the HMAC covers: `A || iv || E || AL`.
pub(crate) fn mac_input(associated: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(associated.len() + iv.len() + ciphertext.len() + 8);
    input.extend_from_slice(associated);
    input.extend_from_slice(iv);
    input.extend_from_slice(ciphertext);
    input.extend_from_slice(&((associated.len() as u64) * 8).to_be_bytes());
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_follows_the_token() {
        let gcm = [MechanismType::AES_GCM, MechanismType::AES_CBC_PAD, MechanismType::SHA256_HMAC];
        let no_gcm = [MechanismType::AES_CBC_PAD, MechanismType::SHA256_HMAC];
        assert_eq!(Scheme::choose(Pkcs11Mechanism::Auto, &gcm), Ok(Scheme::Gcm));
        assert_eq!(Scheme::choose(Pkcs11Mechanism::Auto, &no_gcm), Ok(Scheme::CbcHmac));
        assert_eq!(Scheme::choose(Pkcs11Mechanism::AesCbcHmacSha256, &gcm), Ok(Scheme::CbcHmac));
        assert!(Scheme::choose(Pkcs11Mechanism::AesGcm, &no_gcm).is_err());
        assert!(Scheme::choose(Pkcs11Mechanism::Auto, &[MechanismType::AES_CBC_PAD]).is_err());
    }

    #[test]
    fn mac_input_ends_with_the_bit_length_of_a() {
        let input = mac_input(b"abc", b"iv", b"ct");
        assert_eq!(&input[..7], b"abcivct");
        assert_eq!(&input[7..], &24u64.to_be_bytes());
    }
}
