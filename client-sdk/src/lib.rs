//! Async client for keymux, the batching crypto proxy.
//!
//! A [`Client`] keeps a few connections to one or several proxies and multiplexes many
//! requests over each: requests are pipelined with ids, answers may come back in any
//! order, and queued requests go out in one write. Every call has a deadline that is
//! sent to the proxy and enforced locally, and retryable failures (BUSY,
//! BACKEND_UNAVAILABLE, TIMEOUT, a lost connection) are retried with jittered backoff
//! within it. Errors are typed: match on [`Error`] variants, never on messages.
//!
//! The operations are those of the wire protocol (see `DESIGN.md`): [`Client::wrap`],
//! [`Client::unwrap`], [`Client::generate_data_key`], [`Client::rewrap`],
//! [`Client::sign`] (and [`Client::sign_digest`]), [`Client::verify`] (and
//! [`Client::verify_digest`]), [`Client::public_key`] and [`Client::ping`], each with a
//! `_with` form taking [`CallOptions`]. On top of them, [`Client::seal`] and
//! [`Client::open`] do envelope encryption: data is encrypted locally with AES-256-GCM
//! under a fresh data key, and only the wrapped data key is kept (format in
//! [`envelope`]). A [`PublicKeyInfo`] verifies signatures locally
//! ([`PublicKeyInfo::verify_locally`]), and [`wrap_offline`] wraps a data key to an
//! `ml-kem-768` key's public key without calling the proxy; only the unwrap goes through
//! it.
//!
//! ```no_run
//! use std::time::Duration;
//! use keymux_client::{CallOptions, Client, ClientConfig, Error};
//!
//! # async fn demo() -> Result<(), Error> {
//! let mut config = ClientConfig::new(vec![
//!     "tcp://10.0.0.1:7450".parse()?,
//!     "tcp://10.0.0.2:7450".parse()?,
//! ]);
//! config.default_timeout = Duration::from_millis(500);
//! let client = Client::connect(config).await?;
//!
//! // Wrap and unwrap a data key bound to a context.
//! let blob = client.wrap("payments", b"tenant=42", &[0u8; 32]).await?;
//! let key = client.unwrap(b"tenant=42", &blob).await?;
//! assert_eq!(key.expose(), &[0u8; 32]);
//!
//! // Envelope encryption: the proxy never sees the data.
//! let envelope = client.seal("payments", b"tenant=42", b"card 4111...").await?;
//! let data = client.open(b"tenant=42", &envelope).await?;
//!
//! // Per-call options, and errors to match on.
//! let fresh = CallOptions::new().with_timeout(Duration::from_millis(50)).with_bypass_cache(true);
//! match client.unwrap_with(b"tenant=7", &blob, &fresh).await {
//!     Err(Error::Integrity { .. }) => { /* wrong context */ }
//!     Err(error) if error.is_retryable() => { /* out of retries or time */ }
//!     other => { other?; }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Signing, and verifying with or without the proxy:
//!
//! ```no_run
//! # async fn demo(client: keymux_client::Client) -> Result<(), keymux_client::Error> {
//! // `keymux key create release-signing --type ed25519` made the key.
//! let signature = client.sign("release-signing", b"artifact digest").await?;
//! assert!(client.verify("release-signing", signature.version, b"artifact digest", &signature.bytes).await?);
//!
//! // Fetch the public key once; then verify locally, or hand its DER to openssl.
//! let public_key = client.public_key("release-signing", signature.version).await?;
//! assert!(public_key.verify_locally(b"artifact digest", &signature.bytes)?);
//! std::fs::write("release-signing.der", public_key.spki_der()).unwrap();
//!
//! // An ml-kem-768 key: wrap offline, unwrap through the proxy.
//! let pq = client.public_key("archive", 0).await?;
//! let blob = keymux_client::wrap_offline(&pq, b"tenant=42", &[0u8; 32])?;
//! let dek = client.unwrap(b"tenant=42", &blob).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Transports: plain TCP (`tcp://host:port`), TLS 1.3 over TCP (`tls://host:port`),
//! QUIC (`quic://host:port`) and Unix sockets (`unix:///path`). TLS and QUIC verify the
//! server's certificate against the CA in [`ClientConfig::tls`] and the endpoint's host
//! name, and present a client certificate when one is configured (mutual TLS).
#![forbid(unsafe_code)]

mod client;
mod config;
pub mod envelope;
mod error;
mod pipeline;
mod pool;
mod public_key;
mod retry;
mod signing;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tls;
mod transport;

pub use client::{Client, DataKey};
pub use config::{CallOptions, ClientConfig, Endpoint};
pub use envelope::Envelope;
pub use error::{ConfigError, EnvelopeError, Error, InvalidEndpoint, ProtocolError, PublicKeyError, Result};
pub use keymux_protocol::{Algorithm, SecretBytes, Status};
pub use pipeline::ServerInfo;
pub use public_key::{PublicKeyInfo, wrap_offline};
pub use signing::Signature;
pub use tls::TlsConfig;
