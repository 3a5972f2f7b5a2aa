//! keymux: a batching crypto proxy in front of HSMs and cloud KMS.
//!
//! Clients speak the binary protocol of `keymux-protocol`; the proxy batches their
//! wraps and unwraps per key, runs them on a backend's executor threads, and answers
//! repeated unwraps from a zeroizing cache. See `DESIGN.md` for the architecture.
#![forbid(unsafe_code)]

pub mod acl;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod batch;
pub mod cache;
pub mod config;
pub mod error;
pub mod keys;
pub mod limits;
pub mod reply;
pub mod router;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod transport;
