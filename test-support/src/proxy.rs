//! The one place tests start a proxy: [`TestProxy`] on ephemeral ports, its backend
//! behind a [`Gate`], and SDK clients for it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_proxy::backend::soft::SoftConfig;
use keymux_proxy::backend::{Backend, BackendConfig};
use keymux_proxy::config::Config;
use keymux_proxy::keys::{KeyLifecycle, KeyType};
use keymux_proxy::server::{self, RunningServer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gate::{Gate, GatedBackend};
use crate::raw::RawClient;

/// A proxy on ephemeral ports, its backend behind a [`Gate`].
pub struct TestProxy {
    /// The running proxy.
    pub server: RunningServer,
    /// The backend itself, for admin operations behind the proxy's back.
    pub backend: Arc<dyn Backend>,
    /// The switch in front of every backend batch.
    pub gate: Gate,
    _dir: TempDir,
}

/// A test config: ephemeral ports, a soft keystore in `dir` with a cheap KDF.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_grace = Duration::from_secs(5);
    // Tests reach every proxy over plain TCP, whatever else they configure.
    config.server.plain_tcp = Some(true);
    config.server.allow_anonymous = true;
    config.backend = BackendConfig::Soft(SoftConfig::throwaway(dir));
    config
}

impl TestProxy {
    /// Starts a proxy on a fresh soft keystore, with the test config adjusted by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(|_| {}, tweak).await
    }

    /// Starts a proxy whose one executor runs batches of one request from a queue of
    /// `capacity`: every request past the queue is refused BUSY while the [`Gate`] holds
    /// the executor.
    pub async fn start_with_queue_of(capacity: usize) -> Self {
        Self::start(|config| {
            config.batch.executor_threads = 1;
            config.batch.queue_capacity = capacity;
            config.batch.max_batch = 1;
        })
        .await
    }

    /// Starts a proxy on the shared PKCS#11 test token ([`crate::pkcs11::token`]).
    pub async fn start_hsm(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(|config| config.backend = crate::pkcs11::token().backend_config(), tweak).await
    }

    /// Starts a proxy whose backend `backend` configures, then `tweak` the rest.
    pub async fn start_on(backend: impl FnOnce(&mut Config), tweak: impl FnOnce(&mut Config)) -> Self {
        keymux_proxy::telemetry::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        backend(&mut config);
        tweak(&mut config);
        config.validate().unwrap();
        let backend = keymux_proxy::backend::open(&config.backend).unwrap();
        let gate = Gate::default();
        let gated = Arc::new(GatedBackend::new(Arc::clone(&backend), gate.clone()));
        let server = server::start_with_backend(&config, gated).await.unwrap();
        Self { server, backend, gate, _dir: dir }
    }

    /// The plain TCP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.tcp_addr().expect("test proxies serve plain TCP")
    }

    /// The TLS listener, as the SDK names it: by the name the test certificates carry.
    pub fn tls_endpoint(&self) -> Endpoint {
        Endpoint::tls("localhost", self.server.tls_addr().unwrap().port())
    }

    /// The QUIC listener, as the SDK names it: by the name the test certificates carry.
    pub fn quic_endpoint(&self) -> Endpoint {
        Endpoint::quic("localhost", self.server.quic_addr().unwrap().port())
    }

    /// A raw protocol connection to the TCP listener.
    pub async fn connect(&self) -> RawClient {
        RawClient::connect(self.addr()).await
    }

    /// Creates `aes-256` key `name` through the proxy's backend and makes the proxy see
    /// it.
    pub fn create_key(&self, name: &str) {
        self.create_key_of_type(name, KeyType::Aes256);
    }

    /// Creates key `name` of `key_type` through the proxy's backend and makes the proxy
    /// see it (and load its public key).
    pub fn create_key_of_type(&self, name: &str, key_type: KeyType) {
        self.backend.create_key(name, key_type).unwrap();
        self.server.refresh_keys().unwrap();
    }

    /// The admin endpoint's `/metrics` page.
    pub async fn scrape(&self) -> String {
        http_get(self.server.admin_addr().unwrap(), "/metrics").await.1
    }

    /// Operations of kind `op` the backend has run.
    pub fn backend_ops(&self, op: &'static str) -> u64 {
        self.server.metrics().backend_ops(self.backend.kind(), op)
    }

    /// A sample of the proxy's own metrics (`keymux_queue_depth`, `keymux_connections`,
    /// ...), read without going through the admin endpoint.
    pub fn sample(&self, name: &str) -> f64 {
        crate::metrics::metric(&self.server.metrics().encode(), name)
    }

    /// Jobs waiting in the proxy's queues, and in the batches held at the closed gate:
    /// every queued request not yet at the backend.
    pub fn held_back(&self) -> usize {
        self.sample("keymux_queue_depth") as usize + self.gate.held()
    }
}

/// An SDK client for `proxy` that does not retry, so every status is seen.
pub async fn client_for(proxy: &TestProxy) -> Client {
    let mut config = ClientConfig::new(vec![Endpoint::from(proxy.addr())]);
    config.max_retries = 0;
    Client::connect(config).await.unwrap()
}

/// A minimal HTTP/1.1 GET, returning the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

/// Every operation once through `client` (ping, wrap and unwrap of `first`-filled key,
/// a `dek_len`-byte data key rewrapped and unwrapped), then 2,000 concurrent wraps and
/// unwraps of `pipelined`-filled keys: what each transport must carry.
pub async fn every_op_then_pipelined(client: Arc<Client>, dek_len: u16, first: u8, pipelined: u8) {
    client.ping().await.unwrap();
    let blob = client.wrap("default", b"ctx", &[first; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[first; 32]);
    let data_key = client.generate_data_key("default", b"ctx", dek_len).await.unwrap();
    let rewrapped = client.rewrap(b"ctx", &data_key.blob).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &rewrapped).await.unwrap().expose(), data_key.plaintext.expose());

    let calls = (0..2000u32).map(|i| {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let blob = client.wrap("default", &i.to_be_bytes(), &[pipelined; 32]).await.unwrap();
            client.unwrap(&i.to_be_bytes(), &blob).await.unwrap()
        })
    });
    for call in futures_util::future::join_all(calls).await {
        assert_eq!(call.unwrap().expose(), &[pipelined; 32]);
    }
}

/// Turns on the Vault Transit API on an ephemeral port, every other `[vault]` setting
/// at its default; returns the table for more changes.
pub fn enable_vault(config: &mut Config) -> &mut keymux_proxy::frontend::vault::VaultConfig {
    config.vault.insert(keymux_proxy::frontend::vault::VaultConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
}

/// A Vault token for `[[vault.tokens]]`, in a file of its own (tests do not set
/// environment variables: the test threads share them).
pub struct VaultToken {
    /// The entry's name (`token = "<name>"` in `[[acl]]` rules).
    pub name: String,
    /// The token itself, as a client sends it.
    pub token: String,
    dir: TempDir,
}

impl VaultToken {
    /// Token `token` named `name`.
    pub fn new(name: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        Self { name: name.to_owned(), token: token.to_owned(), dir }
    }

    /// Its `[[vault.tokens]]` entry (the token read from its file).
    pub fn entry(&self) -> keymux_proxy::frontend::vault::TokenConfig {
        keymux_proxy::frontend::vault::TokenConfig {
            name: self.name.clone(),
            token: Some(keymux_proxy::secrets::SecretSource::File(self.dir.path().join("token"))),
            sha256: None,
        }
    }
}
