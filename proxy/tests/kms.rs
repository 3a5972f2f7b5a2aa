//! The KMS backend against moto's AWS-KMS-compatible server on loopback.
#![allow(missing_docs, unreachable_pub, dead_code)]

#[path = "proxy/common.rs"]
mod common;
#[path = "kms/direct.rs"]
mod direct;
#[path = "proxy/hsm_token.rs"]
mod hsm_token;
#[path = "kms/moto.rs"]
mod moto;
