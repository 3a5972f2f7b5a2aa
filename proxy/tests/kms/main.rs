//! The KMS backend against moto's AWS-KMS-compatible server on loopback (started by
//! `keymux_test_support::moto`).

mod admission;
mod circuit;
mod direct;
mod failover;
mod intermediate;
mod signing;
