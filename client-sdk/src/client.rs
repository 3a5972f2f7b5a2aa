//! The public client: operations with deadlines and retries over the pool.

use std::sync::Arc;

use keymux_protocol::{BlobHeader, Opcode, Reply, Request, SecretBytes};
use tokio::time::{Instant, sleep_until};

use crate::config::{CallOptions, ClientConfig, Endpoint};
use crate::error::{Error, ProtocolError, Result};
use crate::pipeline::ServerInfo;
use crate::pool::Pool;
use crate::retry::Backoff;

/// A data key from [`Client::generate_data_key`]: use `plaintext` to encrypt, store
/// `blob`, and drop `plaintext` as soon as possible (it is zeroized on drop).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DataKey {
    /// The data key itself.
    pub plaintext: SecretBytes,
    /// The data key wrapped under the named key; [`Client::unwrap`] recovers it.
    pub blob: Vec<u8>,
}

/// An async keymux client.
///
/// Cheap to clone (the clones share the connections) and safe to use from many tasks at
/// once: each connection carries many requests in flight. Every call has a deadline
/// ([`ClientConfig::default_timeout`] or [`CallOptions::timeout`]) that covers its
/// retries, is sent to the proxy so it can drop expired work, and is enforced locally.
/// Retryable failures ([`Error::is_retryable`]) are retried up to
/// [`ClientConfig::max_retries`] times with full-jitter exponential backoff, never sooner
/// than the proxy's `retry_after` and never past the deadline; a call that cannot retry
/// returns its last error.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    backoff: Backoff,
    pool: Pool,
}

impl Client {
    /// Validates `config` and opens the first connection (failing over between
    /// endpoints as needed); the others open on first use.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        config.validate()?;
        let pool = Pool::connect(&config).await?;
        let backoff = Backoff::new(&config);
        Ok(Self { inner: Arc::new(Inner { config, backoff, pool }) })
    }

    /// Connects to one endpoint, such as `tcp://127.0.0.1:7450`, with default settings.
    pub async fn connect_to(endpoint: &str) -> Result<Self> {
        let endpoint: Endpoint = endpoint.parse()?;
        Self::connect(ClientConfig::new(vec![endpoint])).await
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// What the proxy announced in HELLO on the most recent connection.
    pub fn server_info(&self) -> ServerInfo {
        self.inner.pool.server_info()
    }

    /// Wraps `plaintext` (a key) under the current version of `key`, bound to `aad`;
    /// returns the self-describing blob.
    pub async fn wrap(&self, key: &str, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.wrap_with(key, aad, plaintext, &CallOptions::default()).await
    }

    /// [`Client::wrap`] with per-call options.
    pub async fn wrap_with(
        &self,
        key: &str,
        aad: &[u8],
        plaintext: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>> {
        let request = Request::Wrap {
            key: key.to_owned(),
            aad: aad.to_vec(),
            plaintext: SecretBytes::copy_from(plaintext),
        };
        match self.call(request, options).await? {
            Reply::Wrap { blob } => Ok(blob),
            other => Err(unexpected(Opcode::Wrap, &other)),
        }
    }

    /// Unwraps `blob`, which must have been made with the same `aad`.
    pub async fn unwrap(&self, aad: &[u8], blob: &[u8]) -> Result<SecretBytes> {
        self.unwrap_with(aad, blob, &CallOptions::default()).await
    }

    /// [`Client::unwrap`] with per-call options ([`CallOptions::bypass_cache`] applies).
    pub async fn unwrap_with(&self, aad: &[u8], blob: &[u8], options: &CallOptions) -> Result<SecretBytes> {
        let request = Request::Unwrap { aad: aad.to_vec(), blob: blob.to_vec() };
        match self.call(request, options).await? {
            Reply::Unwrap { plaintext } => Ok(plaintext),
            other => Err(unexpected(Opcode::Unwrap, &other)),
        }
    }

    /// Asks the proxy for a fresh `length`-byte data key under `key`, bound to `aad`.
    pub async fn generate_data_key(&self, key: &str, aad: &[u8], length: u16) -> Result<DataKey> {
        self.generate_data_key_with(key, aad, length, &CallOptions::default()).await
    }

    /// [`Client::generate_data_key`] with per-call options.
    pub async fn generate_data_key_with(
        &self,
        key: &str,
        aad: &[u8],
        length: u16,
        options: &CallOptions,
    ) -> Result<DataKey> {
        let request = Request::GenerateDataKey { key: key.to_owned(), aad: aad.to_vec(), length };
        match self.call(request, options).await? {
            Reply::GenerateDataKey { plaintext, blob } => Ok(DataKey { plaintext, blob }),
            other => Err(unexpected(Opcode::GenerateDataKey, &other)),
        }
    }

    /// Re-wraps `blob` under its key's current version (after a rotation); the `aad`
    /// stays the same. The answer must be the same key at the same or a later version
    /// ([`Error::RewrapWentBack`] otherwise), so a stale proxy never moves a blob back
    /// to a version an admin may be about to destroy.
    pub async fn rewrap(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>> {
        self.rewrap_with(aad, blob, &CallOptions::default()).await
    }

    /// [`Client::rewrap`] with per-call options ([`CallOptions::bypass_cache`] applies).
    pub async fn rewrap_with(&self, aad: &[u8], blob: &[u8], options: &CallOptions) -> Result<Vec<u8>> {
        let request = Request::Rewrap { aad: aad.to_vec(), blob: blob.to_vec() };
        match self.call(request, options).await? {
            Reply::Rewrap { blob: rewrapped } => {
                check_rewrap_went_forward(blob, &rewrapped)?;
                Ok(rewrapped)
            }
            other => Err(unexpected(Opcode::Rewrap, &other)),
        }
    }

    /// Checks that a proxy answers.
    pub async fn ping(&self) -> Result<()> {
        self.ping_with(&CallOptions::default()).await
    }

    /// [`Client::ping`] with per-call options.
    pub async fn ping_with(&self, options: &CallOptions) -> Result<()> {
        match self.call(Request::Ping, options).await? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(Opcode::Ping, &other)),
        }
    }

    /// Sends `request` until it succeeds, fails for good, runs out of retries or would
    /// run past its deadline.
    pub(crate) async fn call(&self, request: Request, options: &CallOptions) -> Result<Reply> {
        let inner = &*self.inner;
        let deadline = Instant::now() + options.timeout.unwrap_or(inner.config.default_timeout);
        let bypass_cache =
            options.bypass_cache && matches!(request, Request::Unwrap { .. } | Request::Rewrap { .. });
        let mut retries = 0;
        loop {
            let attempt = async {
                let connection = inner.pool.get(deadline).await?;
                connection.call(request.clone(), bypass_cache, deadline).await
            };
            let error = match attempt.await {
                Ok(reply) => return Ok(reply),
                Err(error) => error,
            };
            if !error.is_retryable() || retries >= inner.config.max_retries {
                return Err(error);
            }
            let Some(at) = inner.backoff.next_attempt(retries, &error, deadline) else {
                return Err(error);
            };
            tracing::debug!(%error, retry = retries + 1, "retrying");
            sleep_until(at).await;
            retries += 1;
        }
    }
}

/// Checks that `rewrapped` is under the same key as `original`, at the same or a later
/// version. A blob the client sent that does not parse was refused by the proxy before
/// this is reached, so only the answer's header is treated as a protocol violation.
fn check_rewrap_went_forward(original: &[u8], rewrapped: &[u8]) -> Result<()> {
    let Ok((before, _)) = BlobHeader::parse(original) else { return Ok(()) };
    let (after, _) = BlobHeader::parse(rewrapped).map_err(ProtocolError::MalformedBlob)?;
    if after.key == before.key && after.version >= before.version {
        return Ok(());
    }
    Err(Error::RewrapWentBack {
        key: before.key,
        from: before.version,
        new_key: after.key,
        to: after.version,
    })
}

/// A reply of the wrong kind; the connection already checks the opcode, so this is a
/// defence against a decoder change rather than an expected path.
pub(crate) fn unexpected(expected: Opcode, reply: &Reply) -> Error {
    ProtocolError::UnexpectedReply { expected: expected as u8, got: reply.opcode() as u8 }.into()
}

#[cfg(test)]
mod tests {
    use keymux_protocol::BlobMode;

    use super::*;

    fn blob(key: &str, version: u32) -> Vec<u8> {
        let mut bytes = BlobHeader { key: key.into(), version, mode: BlobMode::Direct }.to_bytes().unwrap();
        bytes.extend_from_slice(&[0; 28]);
        bytes
    }

    #[test]
    fn a_rewrap_must_keep_the_key_and_not_go_back() {
        assert!(check_rewrap_went_forward(&blob("k", 2), &blob("k", 3)).is_ok());
        assert!(check_rewrap_went_forward(&blob("k", 3), &blob("k", 3)).is_ok(), "already current");
        assert!(matches!(
            check_rewrap_went_forward(&blob("k", 3), &blob("k", 2)),
            Err(Error::RewrapWentBack { from: 3, to: 2, .. })
        ));
        assert!(matches!(
            check_rewrap_went_forward(&blob("k", 1), &blob("other", 5)),
            Err(Error::RewrapWentBack { .. })
        ));
        assert!(matches!(
            check_rewrap_went_forward(&blob("k", 1), b"junk"),
            Err(Error::Protocol(ProtocolError::MalformedBlob(_)))
        ));
    }
}
