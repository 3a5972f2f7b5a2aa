//! AES-GCM on the token: an encryption that reads back the IV the token used, and the
//! self-test every session passes before it serves.
//!
//! keymux hands the token an IV from its own sequence (`iv.rs`), but AWS CloudHSM and
//! some FIPS-mode tokens ignore it and write the IV they chose into the mechanism
//! parameter. The blob must store the IV that was used, so it is read back after
//! `C_Encrypt`. A token that encrypts under an IV it does not report would write blobs
//! nobody can open; the self-test catches that before any blob is written.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::describe;
use super::scheme::{GCM_IV_LEN, GCM_TAG_LEN};

const TAG_BITS: u64 = (GCM_TAG_LEN * 8) as u64;

/// Encrypts `plaintext` under `key` with `iv`, leaving in `iv` the IV the token used.
pub(crate) fn encrypt(
    session: &Session,
    key: ObjectHandle,
    iv: &mut [u8; GCM_IV_LEN],
    associated: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CkError> {
    let params = GcmParams::new(iv, associated, TAG_BITS.into())?;
    session.encrypt(&Mechanism::AesGcm(params), key, plaintext)
}

/// Decrypts `sealed` (ciphertext || tag) under `key` with `iv`.
pub(crate) fn decrypt(
    session: &Session,
    key: ObjectHandle,
    iv: [u8; GCM_IV_LEN],
    associated: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CkError> {
    let mut iv = iv;
    let params = GcmParams::new(&mut iv, associated, TAG_BITS.into())?;
    session.decrypt(&Mechanism::AesGcm(params), key, sealed)
}

/// What the self-test learnt of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IvHandling {
    /// The token encrypted under the caller's IV.
    KeepsCallersIv,
    /// The token chose its own IV and reported it.
    ChoosesItsOwn,
}

/// Wraps and unwraps a test value under a throwaway session key (never stored on the
/// token): the token must decrypt what it encrypted, with the IV it reported, and must
/// refuse a tampered tag. On failure, a secret-free sentence saying what went wrong.
pub(crate) fn self_test(session: &Session) -> Result<IvHandling, String> {
    let template = [
        Attribute::Token(false),
        Attribute::ValueLen(32.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| format!("cannot make a session AES key: {}", describe(&e)))?;
    let outcome = round_trip(session, key);
    if let Err(error) = session.destroy_object(key) {
        tracing::debug!(error = %describe(&error), "cannot destroy the self-test's session key");
    }
    outcome
}

fn round_trip(session: &Session, key: ObjectHandle) -> Result<IvHandling, String> {
    const PLAINTEXT: [u8; 32] = [0x5a; 32];
    const ASSOCIATED: &[u8] = b"keymux self-test";
    // A fresh key, so a constant IV repeats nothing.
    const OFFERED: [u8; GCM_IV_LEN] = [0x4b; GCM_IV_LEN];
    let mut iv = OFFERED;
    let sealed = encrypt(session, key, &mut iv, ASSOCIATED, &PLAINTEXT)
        .map_err(|e| format!("AES-GCM encryption failed: {}", describe(&e)))?;
    if sealed.len() != PLAINTEXT.len() + GCM_TAG_LEN {
        return Err(format!(
            "AES-GCM gave {} bytes for {} of plaintext (expected ciphertext and a {GCM_TAG_LEN}-byte tag)",
            sealed.len(),
            PLAINTEXT.len()
        ));
    }
    match decrypt(session, key, iv, ASSOCIATED, &sealed) {
        Ok(opened) if opened == PLAINTEXT => {}
        Ok(_) => return Err("AES-GCM decrypted to a different value".into()),
        Err(error) => {
            return Err(format!(
                "AES-GCM cannot decrypt what it encrypted with the IV it reported ({}): the token \
                 encrypts under an IV it does not write back",
                describe(&error)
            ));
        }
    }
    let mut tampered = sealed;
    if let Some(last) = tampered.last_mut() {
        *last ^= 1;
    }
    if decrypt(session, key, iv, ASSOCIATED, &tampered).is_ok() {
        return Err("AES-GCM accepted a tampered tag".into());
    }
    Ok(if iv == OFFERED { IvHandling::KeepsCallersIv } else { IvHandling::ChoosesItsOwn })
}
