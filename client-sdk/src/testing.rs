//! A scripted test server: a test double that speaks keymux wire protocol v1 and answers
//! each request as a test script says (feature `test-util`).
//!
//! It is **not** the proxy and does no cryptography. It exists so that the client and
//! the load generator can be tested without the proxy: out-of-order and delayed
//! answers, chosen failures, dropped connections. The server answers HELLO itself, with
//! the limits set on its [`ScriptedServerBuilder`], and hands every other request to the
//! script. [`toy_keystore`] is a ready-made script with plain-text "blobs" and checksum
//! "signatures", and [`free_port`] and [`refused_endpoint`] give a test a port or an
//! endpoint that nothing listens on.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), keymux_client::Error> {
//! use keymux_client::testing::{ScriptedServer, toy_keystore};
//! use keymux_client::{Client, ClientConfig};
//!
//! let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
//! let client = Client::connect(ClientConfig::new(vec![server.endpoint()])).await?;
//! client.ping().await?;
//! assert_eq!(server.received(), 1);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use keymux_protocol::{
    Failure, Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes, ServerCodec, Status,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use crate::config::Endpoint;

/// How the scripted server answers one request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Answer OK with this reply.
    Reply(Reply),
    /// Answer with this failure.
    Fail(Failure),
    /// Wait, then take the inner action. Other requests are served meanwhile, so
    /// answers come back out of order.
    After(Duration, Box<Action>),
    /// Wait until the gate opens, then take the inner action: holds answers back until
    /// the script has seen enough requests.
    When(Gate, Box<Action>),
    /// Never answer.
    Ignore,
    /// Close the connection without answering.
    Close,
}

impl Action {
    /// [`Action::After`], boxed for you.
    pub fn after(delay: Duration, action: Action) -> Self {
        Action::After(delay, Box::new(action))
    }

    /// [`Action::When`], boxed for you.
    pub fn when(gate: &Gate, action: Action) -> Self {
        Action::When(gate.clone(), Box::new(action))
    }

    /// A failure with a retry hint (as retryable statuses carry).
    pub fn fail(status: Status, message: &str, retry_after_ms: u32) -> Self {
        Action::Fail(Failure::retry_after(status, message, retry_after_ms))
    }
}

/// A one-way latch for [`Action::When`]: closed when made, open for good once
/// [`Gate::open`] is called.
#[derive(Debug, Clone, Default)]
pub struct Gate(CancellationToken);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens the gate, releasing every action waiting on it.
    pub fn open(&self) {
        self.0.cancel();
    }
}

/// Configures a [`ScriptedServer`] before it starts.
#[derive(Debug, Clone)]
pub struct ScriptedServerBuilder {
    max_frame: u32,
    max_in_flight: u32,
    server_version: String,
    record_limit: usize,
}

impl Default for ScriptedServerBuilder {
    fn default() -> Self {
        Self {
            max_frame: Limits::default().max_frame,
            max_in_flight: 4096,
            server_version: "scripted-test-server".to_owned(),
            record_limit: 10_000,
        }
    }
}

impl ScriptedServerBuilder {
    /// The `max_in_flight` announced in HELLO (default 4096).
    pub fn max_in_flight(mut self, max_in_flight: u32) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// The `max_frame` announced in HELLO and enforced on requests (default 64 KiB).
    pub fn max_frame(mut self, max_frame: u32) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// How many requests [`ScriptedServer::requests`] keeps (default 10,000; the
    /// count in [`ScriptedServer::received`] is always exact).
    pub fn record_limit(mut self, record_limit: usize) -> Self {
        self.record_limit = record_limit;
        self
    }

    /// Listens on an ephemeral loopback TCP port and serves every connection with
    /// `script`.
    pub async fn start_tcp<F>(self, script: F) -> io::Result<ScriptedServer>
    where
        F: Fn(&RequestFrame) -> Action + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let endpoint = Endpoint::from(listener.local_addr()?);
        Ok(self.serve(listener, endpoint, script))
    }

    /// Listens on a Unix socket at `path` and serves every connection with `script`.
    #[cfg(unix)]
    pub async fn start_unix<F>(self, path: &Path, script: F) -> io::Result<ScriptedServer>
    where
        F: Fn(&RequestFrame) -> Action + Send + Sync + 'static,
    {
        let listener = tokio::net::UnixListener::bind(path)?;
        Ok(self.serve(listener, Endpoint::unix(path), script))
    }

    /// The one accept loop: serves every connection `listener` accepts with `script`
    /// until the server is dropped.
    fn serve<L, F>(self, listener: L, endpoint: Endpoint, script: F) -> ScriptedServer
    where
        L: Listener,
        F: Fn(&RequestFrame) -> Action + Send + Sync + 'static,
    {
        let server = ScriptedServer::new(self, endpoint, script);
        let (state, stop) = (Arc::clone(&server.state), server.stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => break,
                    accepted = listener.accept_stream() => accepted,
                };
                match accepted {
                    Ok(stream) => state.spawn_connection(stream),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        server
    }
}

/// What the accept loop needs of a listener: TCP and Unix sockets alike.
trait Listener: Send + 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Send + 'static;

    /// The next connection, ready to serve.
    fn accept_stream(&self) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept_stream(&self) -> io::Result<Self::Stream> {
        Ok(self.accept().await?.0)
    }
}

/// A loopback TCP port that nothing listens on: one that was just bound and released.
///
/// For a server a test starts on a port of its choosing, or an endpoint that refuses
/// connections ([`refused_endpoint`]).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind an ephemeral loopback port");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// A loopback TCP endpoint that refuses connections (on a [`free_port`]).
pub fn refused_endpoint() -> Endpoint {
    Endpoint::from(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())))
}

type Script = dyn Fn(&RequestFrame) -> Action + Send + Sync;

struct State {
    settings: ScriptedServerBuilder,
    script: Box<Script>,
    accepted: AtomicUsize,
    received: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    requests: Mutex<Vec<RequestFrame>>,
    /// Cancelled by [`ScriptedServer::close_connections`] (then replaced) and on drop.
    connections: Mutex<CancellationToken>,
}

/// A running scripted test server; it stops, closing its connections, when dropped.
pub struct ScriptedServer {
    endpoint: Endpoint,
    state: Arc<State>,
    stop: CancellationToken,
}

impl std::fmt::Debug for ScriptedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedServer").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl ScriptedServer {
    /// A builder with the default HELLO limits.
    pub fn builder() -> ScriptedServerBuilder {
        ScriptedServerBuilder::default()
    }

    fn new<F>(settings: ScriptedServerBuilder, endpoint: Endpoint, script: F) -> Self
    where
        F: Fn(&RequestFrame) -> Action + Send + Sync + 'static,
    {
        let stop = CancellationToken::new();
        let state = Arc::new(State {
            settings,
            script: Box::new(script),
            accepted: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            connections: Mutex::new(stop.child_token()),
        });
        Self { endpoint, state, stop }
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Requests received so far, HELLO not counted.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
    }

    /// The most requests that were received and not yet answered at one time.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    /// The first requests received (up to the builder's `record_limit`), HELLO not
    /// included, in arrival order.
    pub fn requests(&self) -> Vec<RequestFrame> {
        self.state.requests.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Closes every open connection; the server keeps accepting new ones.
    pub fn close_connections(&self) {
        let mut current = self.state.connections.lock().unwrap_or_else(PoisonError::into_inner);
        current.cancel();
        *current = self.stop.child_token();
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl State {
    fn spawn_connection<S>(self: &Arc<Self>, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let close = self.connections.lock().unwrap_or_else(PoisonError::into_inner).child_token();
        tokio::spawn(Arc::clone(self).serve(stream, close));
    }

    async fn serve<S>(self: Arc<Self>, stream: S, close: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let limits = Limits { max_frame: self.settings.max_frame, ..Limits::default() };
        let (mut reader, writer) = tokio::io::split(stream);
        let (answers, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_answers(writer, queue, ServerCodec::new(limits), close.clone()));

        let mut codec = ServerCodec::new(limits);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        'serve: loop {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(Ok(request))) => self.answer(request, &answers, &close),
                    Ok(Some(Err(rejected))) => {
                        let _ = answers.send(ResponseFrame::from(rejected));
                    }
                    Ok(None) => break,
                    Err(_) => break 'serve,
                }
            }
            let read = tokio::select! {
                () = close.cancelled() => break,
                read = reader.read_buf(&mut buf) => read,
            };
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
        close.cancel();
    }

    fn answer(
        self: &Arc<Self>,
        request: RequestFrame,
        answers: &mpsc::UnboundedSender<ResponseFrame>,
        close: &CancellationToken,
    ) {
        if let Request::Hello { .. } = request.request {
            let reply = Reply::Hello {
                max_frame: self.settings.max_frame,
                max_in_flight: self.settings.max_in_flight,
                server_version: self.settings.server_version.clone(),
            };
            let _ = answers.send(ResponseFrame::ok(request.request_id, reply));
            return;
        }
        self.received.fetch_add(1, Ordering::SeqCst);
        let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            if requests.len() < self.settings.record_limit {
                requests.push(request.clone());
            }
        }
        let action = (self.script)(&request);
        let (id, opcode) = (request.request_id, request.request.opcode() as u8);
        let state = Arc::clone(self);
        let (answers, close) = (answers.clone(), close.clone());
        let run = async move {
            let mut action = action;
            let action = loop {
                action = match action {
                    Action::After(delay, next) => {
                        tokio::time::sleep(delay).await;
                        *next
                    }
                    Action::When(gate, next) => {
                        gate.0.cancelled().await;
                        *next
                    }
                    last => break last,
                };
            };
            // Count the request as answered before the answer can reach the client.
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            match action {
                Action::Reply(reply) => drop(answers.send(ResponseFrame::ok(id, reply))),
                Action::Fail(failure) => drop(answers.send(ResponseFrame::failure(id, opcode, failure))),
                Action::Close => close.cancel(),
                Action::Ignore | Action::After(..) | Action::When(..) => {}
            }
        };
        tokio::spawn(run);
    }
}

/// Encodes answers in batches and writes them until the connection closes.
async fn write_answers<S: AsyncWrite>(
    mut writer: tokio::io::WriteHalf<S>,
    mut queue: mpsc::UnboundedReceiver<ResponseFrame>,
    mut codec: ServerCodec,
    close: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        let received = tokio::select! {
            () = close.cancelled() => break,
            received = queue.recv_many(&mut batch, 256) => received,
        };
        if received == 0 {
            break;
        }
        for answer in batch.drain(..) {
            // A script that builds an unencodable answer gets no answer.
            let _ = codec.encode(answer, &mut buf);
        }
        if writer.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
    }
    close.cancel();
    let _ = writer.shutdown().await;
}

/// Magic of the [`toy_keystore`]'s plain-text blobs.
pub const TOY_BLOB_MAGIC: &[u8; 4] = b"TOY1";

/// Magic of the [`toy_keystore`]'s checksum "signatures".
pub const TOY_SIGNATURE_MAGIC: &[u8; 4] = b"TOYS";

/// A script that behaves like a proxy over one trivial, **insecure** keystore: a blob is
/// `"TOY1" key:str8 version:u32 aad:bytes16 plaintext:bytes16`, in the clear. UNWRAP
/// and REWRAP check the aad (INTEGRITY if it differs); REWRAP bumps the version. SIGN
/// answers version 1 and a "signature" that is `"TOYS"` and an unkeyed checksum of the
/// key name, the digest flag and the input; VERIFY recomputes it (any other version is
/// UNKNOWN_KEY). A key named `missing` is UNKNOWN_KEY; PING answers; GET_PUBLIC_KEY is
/// not scripted (the toy has no key pairs). Good for exercising clients, useless for
/// anything else.
pub fn toy_keystore(request: &RequestFrame) -> Action {
    match &request.request {
        Request::Sign { key, .. } | Request::Verify { key, .. } if key == "missing" => {
            Action::Fail(Failure::new(Status::UnknownKey, "no such key"))
        }
        Request::Sign { key, input, digest } => {
            Action::Reply(Reply::Sign { version: 1, signature: toy_signature(key, input, *digest) })
        }
        Request::Verify { version, .. } if *version != 1 => {
            Action::Fail(Failure::new(Status::UnknownKey, "no such version"))
        }
        Request::Verify { key, input, signature, digest, .. } => {
            Action::Reply(Reply::Verify { valid: *signature == toy_signature(key, input, *digest) })
        }
        Request::Wrap { key, aad, plaintext } => toy_wrap(key, 1, aad, plaintext.expose())
            .map_or_else(Action::Fail, |blob| Action::Reply(Reply::Wrap { blob })),
        Request::GenerateDataKey { key, aad, length } => {
            let mut plaintext = SecretBytes::zeroed(usize::from(*length));
            rand::fill(plaintext.expose_mut());
            match toy_wrap(key, 1, aad, plaintext.expose()) {
                Ok(blob) => Action::Reply(Reply::GenerateDataKey { plaintext, blob }),
                Err(failure) => Action::Fail(failure),
            }
        }
        Request::Unwrap { aad, blob } => match toy_unwrap(aad, blob) {
            Ok((_, _, plaintext)) => {
                Action::Reply(Reply::Unwrap { plaintext: SecretBytes::copy_from(plaintext) })
            }
            Err(failure) => Action::Fail(failure),
        },
        Request::Rewrap { aad, blob } => match toy_unwrap(aad, blob)
            .and_then(|(key, version, plaintext)| toy_wrap(key, version.saturating_add(1), aad, plaintext))
        {
            Ok(blob) => Action::Reply(Reply::Rewrap { blob }),
            Err(failure) => Action::Fail(failure),
        },
        Request::Ping => Action::Reply(Reply::Pong),
        _ => Action::Fail(Failure::new(Status::Unsupported, "not scripted")),
    }
}

/// The toy "signature": the magic and a 64-bit FNV-1a checksum of what was signed.
fn toy_signature(key: &str, input: &[u8], digest: bool) -> Vec<u8> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0, u8::from(digest)]).chain(input.iter().copied()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    [&TOY_SIGNATURE_MAGIC[..], &hash.to_be_bytes()].concat()
}

fn toy_wrap(key: &str, version: u32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Failure> {
    if key == "missing" {
        return Err(Failure::new(Status::UnknownKey, "no such key"));
    }
    let mut blob = Vec::with_capacity(4 + 1 + key.len() + 4 + 2 + aad.len() + 2 + plaintext.len());
    blob.extend_from_slice(TOY_BLOB_MAGIC);
    blob.push(key.len() as u8); // str8: the decoder bounded it to 255
    blob.extend_from_slice(key.as_bytes());
    blob.extend_from_slice(&version.to_be_bytes());
    blob.extend_from_slice(&(aad.len() as u16).to_be_bytes()); // bytes16, bounded by the decoder
    blob.extend_from_slice(aad);
    blob.extend_from_slice(&(plaintext.len() as u16).to_be_bytes());
    blob.extend_from_slice(plaintext);
    Ok(blob)
}

/// Parses a toy blob, checking the aad: `(key, version, plaintext)`.
fn toy_unwrap<'a>(aad: &[u8], blob: &'a [u8]) -> Result<(&'a str, u32, &'a [u8]), Failure> {
    let malformed = || Failure::new(Status::Integrity, "not a toy blob");
    let rest = blob.strip_prefix(TOY_BLOB_MAGIC).ok_or_else(malformed)?;
    let (&key_len, rest) = rest.split_first().ok_or_else(malformed)?;
    let (key, rest) = rest.split_at_checked(usize::from(key_len)).ok_or_else(malformed)?;
    let key = std::str::from_utf8(key).map_err(|_| malformed())?;
    let (version, rest) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    let (bound, rest) = take_bytes16(rest).ok_or_else(malformed)?;
    let (plaintext, rest) = take_bytes16(rest).ok_or_else(malformed)?;
    if !rest.is_empty() {
        return Err(malformed());
    }
    if bound != aad {
        return Err(Failure::new(Status::Integrity, "aad does not match"));
    }
    Ok((key, u32::from_be_bytes(*version), plaintext))
}

fn take_bytes16(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))
}
