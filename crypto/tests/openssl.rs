//! An independent check: the `openssl` command line reads our DER public and private
//! keys and agrees with our signatures, both ways (it verifies ours, we verify its).
//!
//! Skipped, with a note on stderr, where `openssl` is not on the PATH. OpenSSL before
//! 3.5 has no ML-DSA or ML-KEM (Debian 12 ships 3.0), so those two are checked only on
//! 3.5 and later; `tests/python.rs` checks them against OpenSSL 4 through Python's
//! `cryptography` where that is installed.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{flip, key};
use keymux_crypto::{KeyType, PublicKey};

const MESSAGE: &[u8] = b"keymux and openssl agree on this";

/// `openssl version`'s (major, minor), or `None` (and a note) where it cannot run.
fn openssl_version() -> Option<(u32, u32)> {
    let Ok(output) = Command::new("openssl").arg("version").output() else {
        eprintln!("NOTE: openssl is not on the PATH; the OpenSSL cross-checks are skipped");
        return None;
    };
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let number = text.split_whitespace().nth(1)?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs")
}

fn says(output: &Output, text: &str) -> bool {
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains(text)
}

/// The openssl arguments that verify a signature over `msg.bin` with `pub.der`.
fn verify_args(key_type: KeyType) -> Vec<&'static str> {
    let dgst = |hash| vec!["dgst", hash, "-verify", "pub.der", "-keyform", "DER", "-signature", "sig.bin"];
    let mut args = match key_type {
        KeyType::EcP256 | KeyType::Rsa3072Pkcs1 => dgst("-sha256"),
        KeyType::EcP384 => dgst("-sha384"),
        KeyType::Rsa3072Pss => [dgst("-sha256"), PSS.to_vec()].concat(),
        KeyType::Ed25519 | KeyType::MlDsa65 => {
            vec![
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.der", "-keyform", "DER", "-rawin", "-sigfile",
                "sig.bin", "-in",
            ]
        }
        other => panic!("{other} does not sign"),
    };
    args.push("msg.bin");
    args
}

/// The openssl arguments that sign `msg.bin` into `sig.bin` with `key.der`.
fn sign_args(key_type: KeyType) -> Vec<&'static str> {
    let dgst = |hash| vec!["dgst", hash, "-sign", "key.der", "-keyform", "DER", "-out", "sig.bin"];
    let mut args = match key_type {
        KeyType::EcP256 | KeyType::Rsa3072Pkcs1 => dgst("-sha256"),
        KeyType::EcP384 => dgst("-sha384"),
        KeyType::Rsa3072Pss => [dgst("-sha256"), PSS.to_vec()].concat(),
        KeyType::Ed25519 | KeyType::MlDsa65 => {
            vec![
                "pkeyutl", "-sign", "-inkey", "key.der", "-keyform", "DER", "-rawin", "-out", "sig.bin",
                "-in",
            ]
        }
        other => panic!("{other} does not sign"),
    };
    args.push("msg.bin");
    args
}

const PSS: [&str; 6] =
    ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256"];

/// The signing types that this openssl can check.
fn checkable(version: (u32, u32)) -> Vec<KeyType> {
    let mut types =
        vec![KeyType::EcP256, KeyType::EcP384, KeyType::Ed25519, KeyType::Rsa3072Pss, KeyType::Rsa3072Pkcs1];
    if version >= (3, 5) {
        types.push(KeyType::MlDsa65);
    } else {
        eprintln!(
            "NOTE: OpenSSL {}.{} has no ML-DSA (3.5 and later do): ml-dsa-65 is not checked here",
            version.0, version.1
        );
    }
    types
}

#[test]
fn openssl_verifies_our_signatures_and_rejects_tampered_ones() {
    let Some(version) = openssl_version() else { return };
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("msg.bin", MESSAGE);
    for t in checkable(version) {
        write("pub.der", key(t).public_key().spki_der());
        let signature = key(t).sign(MESSAGE).unwrap();
        write("sig.bin", &signature);
        let output = openssl(dir.path(), &verify_args(t));
        let ok = says(&output, "Verified OK") || says(&output, "Signature Verified Successfully");
        assert!(ok, "{t}: openssl says {output:?}");

        write("sig.bin", &flip(&signature, signature.len() / 2));
        let output = openssl(dir.path(), &verify_args(t));
        assert!(!output.status.success(), "{t}: openssl accepted a tampered signature: {output:?}");
    }
}

#[test]
fn we_verify_signatures_openssl_makes_with_our_private_keys() {
    let Some(version) = openssl_version() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg.bin"), MESSAGE).unwrap();
    for t in checkable(version) {
        std::fs::write(dir.path().join("key.der"), key(t).to_pkcs8_der()).unwrap();
        let output = openssl(dir.path(), &sign_args(t));
        assert!(output.status.success(), "{t}: openssl could not sign with our PKCS#8 key: {output:?}");
        let signature = std::fs::read(dir.path().join("sig.bin")).unwrap();
        assert_eq!(key(t).public_key().verify(MESSAGE, &signature), Ok(true), "{t}");
    }
}

#[test]
fn openssl_reads_our_der_keys() {
    let Some(version) = openssl_version() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut types = checkable(version);
    if version >= (3, 5) {
        types.push(KeyType::MlKem768);
    } else {
        eprintln!(
            "NOTE: OpenSSL {}.{} has no ML-KEM: ml-kem-768 keys are not read back here",
            version.0, version.1
        );
    }
    for t in types {
        let public = key(t).public_key();
        std::fs::write(dir.path().join("pub.der"), public.spki_der()).unwrap();
        std::fs::write(dir.path().join("key.der"), key(t).to_pkcs8_der()).unwrap();
        let output =
            openssl(dir.path(), &["pkey", "-pubin", "-inform", "DER", "-in", "pub.der", "-outform", "DER"]);
        assert!(output.status.success(), "{t}: openssl pkey -pubin: {output:?}");
        assert_eq!(output.stdout, public.spki_der(), "{t}: openssl re-encodes the same DER");
        let output =
            openssl(dir.path(), &["pkey", "-inform", "DER", "-in", "key.der", "-pubout", "-outform", "DER"]);
        assert!(output.status.success(), "{t}: openssl pkey: {output:?}");
        assert_eq!(output.stdout, public.spki_der(), "{t}: openssl derives the same public key");
    }
}

/// RSASSA-PSS here is salt length 32 exactly: openssl's signatures with another salt
/// length are refused, as DESIGN.md's algorithm table implies.
#[test]
fn pss_signatures_with_another_salt_length_do_not_verify() {
    let Some(_) = openssl_version() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg.bin"), MESSAGE).unwrap();
    std::fs::write(dir.path().join("key.der"), key(KeyType::Rsa3072Pss).to_pkcs8_der()).unwrap();
    let public =
        PublicKey::from_spki_der(KeyType::Rsa3072Pss, key(KeyType::Rsa3072Pss).public_key().spki_der())
            .unwrap();
    for (salt, valid) in [("32", true), ("20", false), ("0", false), ("max", false)] {
        let mut args = sign_args(KeyType::Rsa3072Pss);
        let at = args.iter().position(|a| *a == "rsa_pss_saltlen:32").unwrap();
        let option = format!("rsa_pss_saltlen:{salt}");
        args[at] = &option;
        let output = openssl(dir.path(), &args);
        assert!(output.status.success(), "{output:?}");
        let signature = std::fs::read(dir.path().join("sig.bin")).unwrap();
        assert_eq!(public.verify(MESSAGE, &signature), Ok(valid), "salt length {salt}");
    }
}
