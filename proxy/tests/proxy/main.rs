//! End-to-end tests: a real proxy on ephemeral ports, driven over real sockets. What
//! they start comes from `keymux-test-support`.

mod acl;
mod bad_input;
mod batching;
mod cache;
mod connections;
mod floods;
mod front_door;
mod hsm;
mod hsm_signing;
mod http_listener;
mod lifecycle;
mod overload;
mod pipelining;
mod quic;
mod reload;
mod roundtrip;
mod sdk;
mod signing;
mod tls;
mod vault;
