//! The one home of keymux's test set-up, shared by the proxy's integration tests and the
//! benches: it makes SoftHSM2 tokens (or points the tests at opencryptoki), starts moto,
//! issues certificates and starts proxies. Test binaries hold tests; everything they
//! start comes from here.
//!
//! | module | what it sets up |
//! |---|---|
//! | [`softhsm`] | a SoftHSM2 configuration and token (the tests' token, the comparison bench's) |
//! | [`pkcs11`] | the token the PKCS#11 tests target: SoftHSM2 by default, opencryptoki by env |
//! | [`moto`] | moto's KMS-compatible server, and KMS configs and proxies for it |
//! | [`forwarder`] | a TCP forwarder in front of the KMS server that a test can cut |
//! | [`certs`] | a test CA, server and client certificates, TLS clients |
//! | [`proxy`] | [`proxy::TestProxy`]: a proxy on ephemeral ports, and SDK clients for it |
//! | [`gate`] | the switch in front of a test proxy's backend workers |
//! | [`http`] | an HTTP/1.1 and HTTP/2 client for the HTTP front ends (Vault Transit) |
//! | [`replica`] | `keymux serve` as its own process on fixed ports, signalled like a replica |
//! | [`haproxy`] | HAProxy in TCP mode in front of replicas, checking their `/readyz` |
//! | [`raw`] | a raw protocol connection, and frames built by hand |
//! | [`metrics`] | samples read from a Prometheus metrics page |
//! | [`audit`] | events an audit log accounts for, floods' summaries included |
//! | [`openssl`] | signatures checked by the `openssl` command line, an independent judge |
//! | [`heap`] | an allocator that tracks and quarantines blocks, to scan the heap for secrets |
//! | [`wait`] | waiting on an observable condition, with a timeout, instead of a sleep |
//!
//! Unpublished (`publish = false`). `keymux-proxy` takes it as a dev-dependency while it
//! depends on `keymux-proxy` itself: cargo allows that cycle, because the proxy's
//! integration tests and this crate link the same `keymux-proxy` library.
//!
//! Helpers panic on failure, as test code does, except [`softhsm`], [`replica`] and
//! [`haproxy`], which the benches' binaries also use and which return errors.

pub mod audit;
pub mod certs;
pub mod forwarder;
pub mod gate;
pub mod haproxy;
pub mod heap;
pub mod http;
pub mod metrics;
pub mod moto;
pub mod openssl;
pub mod pkcs11;
pub mod proxy;
pub mod raw;
pub mod replica;
pub mod softhsm;
pub mod wait;

use std::sync::atomic::{AtomicU32, Ordering};

/// A key name no other test of this run uses: tests share one token and one moto
/// server, and keep apart by their key names.
pub fn unique_key(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The process id keeps names apart on a token that outlives the run (opencryptoki).
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
