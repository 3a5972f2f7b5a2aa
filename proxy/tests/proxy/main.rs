//! End-to-end tests: a real proxy on ephemeral ports, driven over real sockets.
#![allow(unreachable_pub, missing_docs)]

mod acl;
mod bad_input;
mod batching;
mod cache;
mod certs;
mod common;
mod lifecycle;
mod overload;
mod pipelining;
mod quic;
mod roundtrip;
mod sdk;
mod tls;
