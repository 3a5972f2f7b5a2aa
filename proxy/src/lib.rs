//! keymux: a batching crypto proxy in front of HSMs and cloud KMS.
//!
//! Clients speak the binary protocol of `keymux-protocol`; the proxy batches their
//! wraps and unwraps per key, runs them on a backend's executor threads, and answers
//! repeated unwraps from a zeroizing cache. See `DESIGN.md` for the architecture and
//! `docs/ARCHITECTURE.md` for the map of concepts to modules.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod backend;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod config;
#[cfg(test)]
mod dashboards;
pub mod error;
pub mod frontend;
pub mod keys;
pub mod memory;
pub mod router;
#[cfg(unix)]
pub mod sd_notify;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod transport;
