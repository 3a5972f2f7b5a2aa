//! Signatures checked by the `openssl` command line (Debian's), from the DER public key
//! keymux serves: an independent judge, so keymux's own verifier is not the only one.

use std::path::Path;
use std::process::Command;

use keymux_protocol::Algorithm;

/// Whether `openssl` says `signature` over `message` verifies under `spki_der` (a DER
/// SubjectPublicKeyInfo) with `algorithm`'s parameters. Panics if `openssl` is missing
/// or the algorithm is not a classical one (OpenSSL 3.0 has no ML-DSA).
pub fn verifies(algorithm: Algorithm, spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let (key, data, sig) = (write("key.der", spki_der), write("data", message), write("sig", signature));
    let mut command = Command::new("openssl");
    match algorithm {
        // EdDSA signs the message itself: pkeyutl with -rawin.
        Algorithm::Ed25519 => {
            command.args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-rawin"]);
            command.arg("-inkey").arg(&key).arg("-in").arg(&data).arg("-sigfile").arg(&sig);
        }
        Algorithm::EcdsaP256Sha256
        | Algorithm::EcdsaP384Sha384
        | Algorithm::Rsa3072PssSha256
        | Algorithm::Rsa3072Pkcs1Sha256 => {
            let pem = der_to_pem(dir.path(), &key);
            let hash = if algorithm == Algorithm::EcdsaP384Sha384 { "-sha384" } else { "-sha256" };
            command.args(["dgst", hash, "-verify"]).arg(&pem).arg("-signature").arg(&sig);
            if algorithm == Algorithm::Rsa3072PssSha256 {
                command.args(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]);
                command.args(["-sigopt", "rsa_mgf1_md:sha256"]);
            }
            command.arg(&data);
        }
        other => panic!("openssl here cannot check {other} signatures"),
    }
    let output = command.output().expect("openssl is installed (the test command installs it)");
    let said = String::from_utf8_lossy(&output.stdout);
    output.status.success()
        && (said.contains("Verified OK") || said.contains("Signature Verified Successfully"))
}

/// `openssl dgst -verify` wants a PEM public key: converts the DER one.
fn der_to_pem(dir: &Path, der: &Path) -> std::path::PathBuf {
    let pem = dir.join("key.pem");
    let status = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-outform", "PEM"])
        .arg("-in")
        .arg(der)
        .arg("-out")
        .arg(&pem)
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl reads the DER SubjectPublicKeyInfo");
    pem
}
