//! The KMS backend against moto's AWS-KMS-compatible server on loopback.
#![allow(missing_docs, unreachable_pub, dead_code)]

#[path = "kms/admission.rs"]
mod admission;
#[path = "kms/circuit.rs"]
mod circuit;
#[path = "proxy/common.rs"]
mod common;
#[path = "kms/direct.rs"]
mod direct;
#[path = "kms/failover.rs"]
mod failover;
#[path = "kms/forwarder.rs"]
mod forwarder;
#[path = "proxy/hsm_token.rs"]
mod hsm_token;
#[path = "kms/intermediate.rs"]
mod intermediate;
#[path = "kms/moto.rs"]
mod moto;
