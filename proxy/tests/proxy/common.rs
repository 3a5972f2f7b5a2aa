//! The one place integration tests start a proxy, talk raw protocol to it and read its
//! metrics.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use keymux_protocol::{
    ClientCodec, Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes, Status,
};
use keymux_proxy::backend::soft::SoftConfig;
use keymux_proxy::backend::{Backend, BackendConfig, BackendFault, BackendWorker, BatchOp, Completions};
use keymux_proxy::config::Config;
use keymux_proxy::keys::{KeyAdminError, KeyInfo, KeyStore, VersionState};
use keymux_proxy::server::{self, RunningServer};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// A proxy on ephemeral ports, its backend behind a [`Gate`].
pub struct TestProxy {
    pub server: RunningServer,
    /// The backend itself, for admin operations behind the proxy's back.
    pub backend: Arc<dyn Backend>,
    pub gate: Gate,
    _dir: TempDir,
}

/// A test config: ephemeral ports, a soft keystore in `dir` with a cheap KDF.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config.server.shutdown_grace = Duration::from_secs(5);
    config.backend = BackendConfig::Soft(SoftConfig::throwaway(dir));
    config
}

impl TestProxy {
    /// Starts a proxy on a fresh soft keystore, with the test config adjusted by `tweak`.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(|_| {}, tweak).await
    }

    /// Starts a proxy on the shared SoftHSM2 test token.
    pub async fn start_hsm(tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on(|config| config.backend = crate::hsm_token::token().backend_config(), tweak).await
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
        let gated = Arc::new(GatedBackend { inner: Arc::clone(&backend), gate: gate.clone() });
        let server = server::start_with_backend(&config, gated).await.unwrap();
        Self { server, backend, gate, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.tcp_addr()
    }

    pub async fn connect(&self) -> RawClient {
        RawClient::connect(self.addr()).await
    }

    /// The admin endpoint's `/metrics` page.
    pub async fn scrape(&self) -> String {
        http_get(self.server.admin_addr().unwrap(), "/metrics").await.1
    }

    /// Operations of kind `op` the backend has run.
    pub fn backend_ops(&self, op: &'static str) -> u64 {
        self.server.metrics().backend_ops(self.backend.kind(), op)
    }
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

/// The sum of every sample in a metrics page whose name and labels start with
/// `prefix` (e.g. `keymux_kms_calls_total{backend="a",call="decrypt"`); 0 if none.
pub fn metric_sum(page: &str, prefix: &str) -> f64 {
    page.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the sample `name` (with labels, as printed) in a metrics page.
pub fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics page"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A switch that makes backend workers wait before each batch, so tests can hold work
/// in the queues deterministically. Open by default.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
    /// Workers inside a batch (past the gate).
    active: usize,
}

impl Gate {
    pub fn close(&self) {
        self.state.0.lock().unwrap().closed = true;
    }

    pub fn open(&self) {
        self.state.0.lock().unwrap().closed = false;
        self.state.1.notify_all();
    }

    /// Waits until `count` workers are blocked at the closed gate.
    pub async fn wait_for_blocked(&self, count: usize) {
        for _ in 0..500 {
            if self.state.0.lock().unwrap().waiting >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("workers never reached the gate");
    }

    /// Waits until no worker is inside a batch: with the gate closed, every worker is
    /// then either idle or waiting at the gate, so none is in a backend call.
    pub async fn wait_until_quiet(&self) {
        for _ in 0..500 {
            if self.state.0.lock().unwrap().active == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("a worker never finished its batch");
    }

    /// Waits while the gate is closed, then counts the caller as inside a batch until
    /// the returned guard drops.
    fn pass(&self) -> Inside<'_> {
        let (lock, condvar) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.waiting += 1;
        while state.closed {
            state = condvar.wait(state).unwrap();
        }
        state.waiting -= 1;
        state.active += 1;
        Inside(self)
    }
}

/// A worker inside a batch.
struct Inside<'a>(&'a Gate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.state.0.lock().unwrap().active -= 1;
    }
}

/// A real backend, with a [`Gate`] in front of every batch.
struct GatedBackend {
    inner: Arc<dyn Backend>,
    gate: Gate,
}

impl Backend for GatedBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault> {
        Ok(Box::new(GatedWorker { inner: self.inner.open_worker()?, gate: self.gate.clone() }))
    }

    fn preferred_workers(&self) -> Option<usize> {
        self.inner.preferred_workers()
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.register_metrics(registry);
    }
}

impl KeyStore for GatedBackend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        self.inner.list_keys()
    }

    fn check_name(&self, name: &str) -> Result<(), KeyAdminError> {
        self.inner.check_name(name)
    }

    fn write_new_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.inner.write_new_version(name, version)
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        self.inner.write_version_state(name, version, state)
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.inner.write_min_decryption_version(name, version)
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.inner.erase_version(name, version)
    }
}

struct GatedWorker {
    inner: Box<dyn BackendWorker>,
    gate: Gate,
}

impl BackendWorker for GatedWorker {
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>) {
        let _inside = self.gate.pass();
        self.inner.run_batch(key, ops, done);
    }
}

/// A raw protocol connection: frames in, frames out, nothing hidden.
pub struct RawClient {
    pub writer: FramedWrite<OwnedWriteHalf, ClientCodec>,
    pub reader: FramedRead<OwnedReadHalf, ClientCodec>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        Self {
            writer: FramedWrite::new(write, ClientCodec::new(Limits::default())),
            reader: FramedRead::new(read, ClientCodec::new(Limits::default())),
        }
    }

    pub async fn send(&mut self, frame: &RequestFrame) {
        self.writer.send(frame).await.unwrap();
    }

    /// Writes raw bytes, bypassing the encoder.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next response, or `None` once the proxy closed the connection.
    pub async fn recv(&mut self) -> Option<ResponseFrame> {
        match tokio::time::timeout(Duration::from_secs(10), self.reader.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no response within 10 s"),
        }
    }

    pub async fn call(&mut self, frame: RequestFrame) -> ResponseFrame {
        let id = frame.request_id;
        self.send(&frame).await;
        let response = self.recv().await.expect("connection closed");
        assert_eq!(response.request_id, id);
        response
    }

    pub async fn wrap(&mut self, key: &str, aad: &[u8], dek: &[u8]) -> Result<Vec<u8>, Status> {
        let request =
            Request::Wrap { key: key.into(), aad: aad.to_vec(), plaintext: SecretBytes::copy_from(dek) };
        match self.call(RequestFrame::new(1, request)).await.result {
            Ok(Reply::Wrap { blob }) => Ok(blob),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    pub async fn unwrap(&mut self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, Status> {
        self.unwrap_with(aad, blob, false).await
    }

    pub async fn unwrap_with(
        &mut self,
        aad: &[u8],
        blob: &[u8],
        bypass_cache: bool,
    ) -> Result<Vec<u8>, Status> {
        let mut frame = RequestFrame::new(2, unwrap_request(aad, blob));
        frame.bypass_cache = bypass_cache;
        match self.call(frame).await.result {
            Ok(Reply::Unwrap { plaintext }) => Ok(plaintext.expose().to_vec()),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    pub async fn ping(&mut self) {
        let response = self.call(RequestFrame::new(99, Request::Ping)).await;
        assert!(matches!(response.result, Ok(Reply::Pong)), "{response:?}");
    }
}

pub fn wrap_request(key: &str, aad: &[u8], dek: &[u8]) -> Request {
    Request::Wrap { key: key.into(), aad: aad.to_vec(), plaintext: SecretBytes::copy_from(dek) }
}

pub fn unwrap_request(aad: &[u8], blob: &[u8]) -> Request {
    Request::Unwrap { aad: aad.to_vec(), blob: blob.to_vec() }
}

/// Encodes a frame by hand: `length | version | opcode | flags | id | payload`.
pub fn raw_frame(version: u8, opcode: u8, flags: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.extend_from_slice(&[version, opcode]);
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Every operation once through `client` (ping, wrap and unwrap of `first`-filled key,
/// a `dek_len`-byte data key rewrapped and unwrapped), then 2,000 concurrent wraps and
/// unwraps of `pipelined`-filled keys: what each transport must carry.
pub async fn every_op_then_pipelined(
    client: Arc<keymux_client::Client>,
    dek_len: u16,
    first: u8,
    pipelined: u8,
) {
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
