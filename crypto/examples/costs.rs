//! Rough per-operation costs of every key type, for sizing: how many signatures or
//! verifications one core does per second.
//!
//! `cargo run --release -p keymux-crypto --example costs` (optionally with a count of
//! iterations, default 200). A rough guide, not a benchmark: one thread, no warm-up
//! beyond the first call, wall-clock time.

use std::time::{Duration, Instant};

use keymux_crypto::{KeyType, PrivateKey, kem};

fn time(iterations: u32, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let iterations = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200);
    println!("{:<16} {:>12} {:>12} {:>12}", "key type", "generate", "sign", "verify");
    for t in KeyType::ALL.into_iter().filter(|t| t.is_signing()) {
        let generate_runs =
            if matches!(t, KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1) { 3 } else { iterations };
        let generate = time(generate_runs, || drop(PrivateKey::generate(t).unwrap()));
        let key = PrivateKey::generate(t).unwrap();
        let public = key.public_key();
        let message = [0x42u8; 64];
        let signature = key.sign(&message).unwrap();
        let sign = time(iterations, || drop(key.sign(&message).unwrap()));
        let verify = time(iterations, || assert!(public.verify(&message, &signature).unwrap()));
        println!("{:<16} {:>12?} {:>12?} {:>12?}", t.name(), generate, sign, verify);
    }
    let key = PrivateKey::generate(KeyType::MlKem768).unwrap();
    let public = key.public_key();
    let body = kem::seal(&public, b"aad", &[0; 32]).unwrap();
    let generate = time(iterations, || drop(PrivateKey::generate(KeyType::MlKem768).unwrap()));
    let seal = time(iterations, || drop(kem::seal(&public, b"aad", &[0; 32]).unwrap()));
    let open = time(iterations, || drop(kem::open(&key, b"aad", &body).unwrap()));
    println!("{:<16} {:>12?} {:>12?} {:>12?}   (seal, open)", "ml-kem-768", generate, seal, open);
}
