//! End-to-end tests: a real proxy on ephemeral ports, driven over real sockets.
#![allow(unreachable_pub, missing_docs)]
// common.rs and hsm_token.rs are shared with tests/hsm_recovery.rs; each binary uses a subset.
#![allow(dead_code)]

mod acl;
mod bad_input;
mod batching;
mod cache;
mod certs;
mod common;
mod hsm;
mod hsm_token;
mod lifecycle;
mod overload;
mod pipelining;
mod quic;
mod roundtrip;
mod sdk;
mod tls;
