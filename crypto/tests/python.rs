//! An independent check of ML-DSA-65 and ML-KEM-768, which OpenSSL before 3.5 lacks:
//! Python's `cryptography` (backed by its own OpenSSL 3.5+ or AWS-LC) reads our DER
//! keys, verifies our ML-DSA signatures and signs for us to verify, and both opens our
//! mode-3 bodies and seals bodies that we open, from the layout in `src/kem.rs`.
//!
//! Skipped, with a note on stderr, where `python3` or a `cryptography` with ML-DSA and
//! ML-KEM (46 and later, on a backend that has them) is missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::key;
use keymux_crypto::{KeyType, kem};

const SCRIPT: &str = r#"
import sys
from pathlib import Path
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

d = Path(sys.argv[2])
raw = serialization.PublicFormat.Raw, serialization.Encoding.Raw
def aead_key(shared_secret):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keymux blob mode 3 v1").derive(shared_secret)

if sys.argv[1] == "probe":
    mldsa.MLDSA65PrivateKey.generate()
    mlkem.MLKEM768PrivateKey.generate()
    sys.exit(0)

public = serialization.load_der_public_key((d / "pub.der").read_bytes())
private = serialization.load_der_private_key((d / "key.der").read_bytes(), password=None)
assert private.public_key().public_bytes_raw() == public.public_bytes_raw(), "the PKCS#8 key matches the SPKI"
assert public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == (d / "pub.der").read_bytes()
message = (d / "msg.bin").read_bytes()

if sys.argv[1] == "ml-dsa-65":
    assert isinstance(public, mldsa.MLDSA65PublicKey)
    public.verify((d / "sig.bin").read_bytes(), message)  # raises if it does not verify
    bad = bytearray((d / "sig.bin").read_bytes()); bad[100] ^= 1
    try:
        public.verify(bytes(bad), message)
        sys.exit("a tampered signature verified")
    except Exception:
        pass
    (d / "their-sig.bin").write_bytes(private.sign(message))
elif sys.argv[1] == "ml-kem-768":
    assert isinstance(public, mlkem.MLKEM768PublicKey)
    body = (d / "body.bin").read_bytes()
    ct, nonce, sealed = body[:1088], body[1088:1100], body[1100:]
    dek = AESGCM(aead_key(private.decapsulate(ct))).decrypt(nonce, sealed, message)
    assert dek == (d / "dek.bin").read_bytes(), "the DEK comes back"
    shared_secret, ct = public.encapsulate()
    nonce = bytes(range(12))
    (d / "their-body.bin").write_bytes(ct + nonce + AESGCM(aead_key(shared_secret)).encrypt(nonce, b"from python", message))
"#;

fn python(dir: &Path, what: &str) -> Option<std::process::Output> {
    Command::new("python3").arg("-c").arg(SCRIPT).arg(what).arg(dir).output().ok()
}

/// Whether python3 with an ML-DSA/ML-KEM-capable `cryptography` is here.
fn available(dir: &Path) -> bool {
    match python(dir, "probe") {
        Some(output) if output.status.success() => true,
        Some(output) => {
            eprintln!(
                "NOTE: python3's cryptography lacks ML-DSA or ML-KEM; the Python cross-checks are skipped: {}",
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
            );
            false
        }
        None => {
            eprintln!("NOTE: python3 is not on the PATH; the Python cross-checks are skipped");
            false
        }
    }
}

fn write_keys(dir: &Path, key_type: KeyType) {
    std::fs::write(dir.join("pub.der"), key(key_type).public_key().spki_der()).unwrap();
    std::fs::write(dir.join("key.der"), key(key_type).to_pkcs8_der()).unwrap();
}

fn run(dir: &Path, what: &str) {
    let output = python(dir, what).unwrap();
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn python_cryptography_agrees_on_ml_dsa_65() {
    let dir = tempfile::tempdir().unwrap();
    if !available(dir.path()) {
        return;
    }
    let message = b"keymux and python agree on this";
    write_keys(dir.path(), KeyType::MlDsa65);
    std::fs::write(dir.path().join("msg.bin"), message).unwrap();
    std::fs::write(dir.path().join("sig.bin"), key(KeyType::MlDsa65).sign(message).unwrap()).unwrap();
    run(dir.path(), "ml-dsa-65");
    let theirs = std::fs::read(dir.path().join("their-sig.bin")).unwrap();
    assert_eq!(key(KeyType::MlDsa65).public_key().verify(message, &theirs), Ok(true));
    assert_eq!(key(KeyType::MlDsa65).public_key().verify(b"another message", &theirs), Ok(false));
}

#[test]
fn python_cryptography_opens_our_mode_3_bodies_and_seals_ones_we_open() {
    let dir = tempfile::tempdir().unwrap();
    if !available(dir.path()) {
        return;
    }
    let aad = b"KMX\x01\x07example\x00\x00\x00\x01\x03tenant=42";
    let dek = [0x5c; 32];
    write_keys(dir.path(), KeyType::MlKem768);
    std::fs::write(dir.path().join("msg.bin"), aad).unwrap();
    std::fs::write(dir.path().join("dek.bin"), dek).unwrap();
    let body = kem::seal(&key(KeyType::MlKem768).public_key(), aad, &dek).unwrap();
    std::fs::write(dir.path().join("body.bin"), &body).unwrap();
    run(dir.path(), "ml-kem-768");
    let theirs = std::fs::read(dir.path().join("their-body.bin")).unwrap();
    assert_eq!(*kem::open(key(KeyType::MlKem768), aad, &theirs).unwrap(), b"from python");
    assert!(kem::open(key(KeyType::MlKem768), b"other aad", &theirs).is_err());
}
