//! One multiplexed connection: many requests in flight, answered in any order.
//!
//! A [`Connection`] owns two tasks. The writer takes requests from a channel, encodes
//! every one already queued into one buffer and writes it with one call, so a burst of
//! calls costs one syscall. The reader cuts responses off the stream and completes the
//! caller waiting on that request id. Callers register in the pending map *before* their
//! request is queued, so a response can never arrive before its caller is listening.
//!
//! When either side of the stream fails, or the proxy breaks the framing, the
//! connection closes: every pending call and every later call on it fails with
//! [`Error::ConnectionClosed`], and the pool replaces it on next use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use keymux_protocol::{Flags, FrameSplitter, Limits, Opcode, Reply, Request, RequestFrame, ResponseFrame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use crate::config::Endpoint;
use crate::error::{Error, ProtocolError};

/// What the proxy announced in its HELLO response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The largest frame body the proxy accepts, in bytes; larger requests fail locally
    /// with [`Error::InvalidRequest`].
    pub max_frame: u32,
    /// Requests the proxy reads ahead on one connection; the client never has more than
    /// this many in flight on a connection.
    pub max_in_flight: u32,
    /// The proxy's version string.
    pub server_version: String,
}

/// Most requests the writer encodes into one write.
const MAX_WRITE_BATCH: usize = 256;
/// Request id of the HELLO exchange; calls count up from 1.
const HELLO_ID: u64 = 0;
/// Initial receive buffer size.
const READ_BUFFER: usize = 16 * 1024;

/// A request on its way to the writer.
struct Outgoing {
    request_id: u64,
    request: Request,
    bypass_cache: bool,
    /// Sent as `timeout_ms`, measured when the writer encodes the frame.
    deadline: Instant,
}

type Completion = oneshot::Sender<Result<ResponseFrame, Error>>;

/// Calls waiting for a response. Closing drops every sender, which the waiting calls see
/// as [`Error::ConnectionClosed`]; the flag keeps late registrations out.
#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Completion>,
    closed: bool,
}

/// State shared by the handle and its two tasks.
struct Shared {
    pending: Mutex<Pending>,
    /// Cancelled when the connection closes, for whatever reason.
    closed: CancellationToken,
    /// Caps calls in flight at the proxy's `max_in_flight`; closed with the connection.
    permits: Semaphore,
    /// The number of permits `permits` started with.
    max_in_flight: usize,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves the map consistent: keep going.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, request_id: u64, completion: Completion) -> Result<(), Error> {
        let mut pending = self.pending();
        if pending.closed {
            return Err(Error::ConnectionClosed);
        }
        pending.calls.insert(request_id, completion);
        Ok(())
    }

    fn take(&self, request_id: u64) -> Option<Completion> {
        self.pending().calls.remove(&request_id)
    }

    /// Calls holding a permit: queued, sent or being answered.
    fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// Fails every pending call and wakes every task waiting on this connection.
    fn close(&self) {
        let calls = {
            let mut pending = self.pending();
            pending.closed = true;
            std::mem::take(&mut pending.calls)
        };
        // Dropping the senders outside the lock completes the callers.
        drop(calls);
        self.permits.close();
        self.closed.cancel();
    }
}

/// Removes a call's pending entry if the call gives up (deadline, or its future dropped)
/// before the response arrives.
struct PendingGuard<'a> {
    shared: &'a Shared,
    request_id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.take(self.request_id);
        }
    }
}

/// A handle to one multiplexed connection. Dropping it closes the connection.
pub(crate) struct Connection {
    endpoint: Endpoint,
    server: ServerInfo,
    next_id: AtomicU64,
    requests: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Sends HELLO on a fresh byte stream, learns the proxy's limits and starts the
    /// reader and writer tasks. The caller bounds the time this may take.
    pub(crate) async fn handshake<S>(stream: S, endpoint: Endpoint, client_name: &str) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let transport = |source| Error::Connect { endpoint: endpoint.clone(), source };

        let limits = Limits::default();
        let mut out = BytesMut::new();
        let hello = RequestFrame::new(HELLO_ID, Request::Hello { client_name: client_name.to_owned() });
        hello.encode(&mut out, &limits)?;
        writer.write_all(&out).await.map_err(transport)?;

        // HELLO's answer is small; the default limit is plenty until we know the real one.
        let mut splitter = FrameSplitter::new(limits.max_frame);
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let body = loop {
            if let Some(body) = splitter.split(&mut buf).map_err(ProtocolError::from)? {
                break body;
            }
            if reader.read_buf(&mut buf).await.map_err(transport)? == 0 {
                return Err(transport(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        let response = ResponseFrame::decode(&body).map_err(ProtocolError::from)?;
        if response.request_id != HELLO_ID {
            return Err(ProtocolError::UnexpectedRequestId(response.request_id).into());
        }
        let server = match response.result {
            Ok(Reply::Hello { max_frame, max_in_flight, server_version }) => {
                if !(Limits::MIN_FRAME..=Limits::MAX_FRAME_CEILING).contains(&max_frame) {
                    return Err(ProtocolError::InvalidHello { max_frame }.into());
                }
                ServerInfo { max_frame, max_in_flight, server_version }
            }
            Ok(other) => {
                return Err(ProtocolError::UnexpectedReply {
                    expected: Opcode::Hello as u8,
                    got: other.opcode() as u8,
                }
                .into());
            }
            Err(failure) => return Err(failure.into()),
        };

        // A proxy that announces 0 still serves one request at a time.
        let permits =
            usize::try_from(server.max_in_flight).unwrap_or(usize::MAX).clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            closed: CancellationToken::new(),
            permits: Semaphore::new(permits),
            max_in_flight: permits,
        });
        // Unbounded, yet bounded in practice: a request is queued only while its caller
        // holds one of the `max_in_flight` permits (or until its deadline, if the caller
        // gave up).
        let (requests, queue) = mpsc::unbounded_channel();
        let limits = Limits { max_frame: server.max_frame, ..limits };
        tokio::spawn(write_loop(writer, queue, limits, Arc::clone(&shared)));
        let splitter = FrameSplitter::new(server.max_frame);
        tokio::spawn(read_loop(reader, buf, splitter, Arc::clone(&shared)));
        tracing::debug!(%endpoint, server_version = %server.server_version, "connected");
        Ok(Self { endpoint, server, next_id: AtomicU64::new(HELLO_ID + 1), requests, shared })
    }

    /// What the proxy announced in HELLO.
    pub(crate) fn server_info(&self) -> &ServerInfo {
        &self.server
    }

    /// Whether the connection can still carry calls.
    pub(crate) fn is_open(&self) -> bool {
        !self.shared.closed.is_cancelled()
    }

    /// Sends one request and waits for its response until `deadline`.
    ///
    /// The request is sent with `timeout_ms` set to the time left until `deadline` when
    /// it is encoded, and the local wait ends at `deadline` too.
    pub(crate) async fn call(
        &self,
        request: Request,
        bypass_cache: bool,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let opcode = request.opcode() as u8;
        let _permit = match timeout_at(deadline, self.shared.permits.acquire()).await {
            Err(_elapsed) => return Err(Error::DeadlineExceeded),
            Ok(Err(_closed)) => return Err(Error::ConnectionClosed),
            Ok(Ok(permit)) => permit,
        };
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (completion, response) = oneshot::channel();
        self.shared.register(request_id, completion)?;
        let mut guard = PendingGuard { shared: &self.shared, request_id, armed: true };
        self.requests
            .send(Outgoing { request_id, request, bypass_cache, deadline })
            .map_err(|_| Error::ConnectionClosed)?;

        let response = match timeout_at(deadline, response).await {
            Err(_elapsed) => return Err(Error::DeadlineExceeded),
            Ok(Err(_dropped)) => {
                guard.armed = false;
                return Err(Error::ConnectionClosed);
            }
            Ok(Ok(response)) => {
                guard.armed = false;
                response?
            }
        };
        if response.opcode != opcode {
            return Err(ProtocolError::UnexpectedReply { expected: opcode, got: response.opcode }.into());
        }
        response.result.map_err(Error::from)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("server", &self.server)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

/// The writer task: batches every queued request into one buffer and one write.
async fn write_loop<S: AsyncWrite>(
    mut writer: WriteHalf<S>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    limits: Limits,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(MAX_WRITE_BATCH);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        let received = tokio::select! {
            biased;
            () = shared.closed.cancelled() => break,
            received = queue.recv_many(&mut batch, MAX_WRITE_BATCH) => received,
        };
        if received == 0 {
            break; // every handle is gone
        }
        if received < MAX_WRITE_BATCH && shared.in_flight() > received {
            // Other calls are out, and answers come in bursts: callers woken by the same
            // burst are about to queue their next requests. Let them run first, so one
            // write carries them all. (With nothing else out, nobody is coming: write.)
            tokio::task::yield_now().await;
            while batch.len() < MAX_WRITE_BATCH {
                match queue.try_recv() {
                    Ok(outgoing) => batch.push(outgoing),
                    Err(_) => break,
                }
            }
        }
        let now = Instant::now();
        for outgoing in batch.drain(..) {
            let remaining = outgoing.deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                // The caller's own timer fails it with DeadlineExceeded.
                continue;
            }
            // Round up so that a request with under a millisecond left is not sent as
            // "already expired".
            let timeout_ms = u32::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(u32::MAX);
            let carries_deadline = Flags::allowed(outgoing.request.opcode()) & Flags::DEADLINE != 0;
            let frame = RequestFrame {
                request_id: outgoing.request_id,
                bypass_cache: outgoing.bypass_cache,
                timeout_ms: carries_deadline.then_some(timeout_ms),
                request: outgoing.request,
            };
            if let Err(error) = frame.encode(&mut buf, &limits) {
                if let Some(completion) = shared.take(outgoing.request_id) {
                    let _ = completion.send(Err(Error::InvalidRequest(error)));
                }
            }
        }
        if buf.is_empty() {
            continue;
        }
        let written = writer.write_all(&buf).await;
        // WRAP requests carry plaintext keys: do not leave them in a reused buffer.
        buf.as_mut().zeroize();
        buf.clear();
        if let Err(error) = written {
            tracing::debug!(%error, "write failed; closing connection");
            break;
        }
    }
    shared.close();
    let _ = writer.shutdown().await;
}

/// The reader task: completes pending calls as their responses arrive, in any order.
async fn read_loop<S: AsyncRead>(
    mut reader: ReadHalf<S>,
    mut buf: BytesMut,
    mut splitter: FrameSplitter,
    shared: Arc<Shared>,
) {
    'read: loop {
        loop {
            match splitter.split(&mut buf) {
                Ok(Some(mut body)) => {
                    let decoded = ResponseFrame::decode(&body);
                    FrameSplitter::wipe(&mut body);
                    dispatch(&shared, decoded);
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "proxy sent corrupt framing; closing connection");
                    break 'read;
                }
            }
        }
        let read = tokio::select! {
            biased;
            () = shared.closed.cancelled() => break,
            read = reader.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "read failed; closing connection");
                break;
            }
        }
    }
    // A partial frame may hold key material.
    buf.as_mut().zeroize();
    shared.close();
}

/// Hands one decoded response to its caller.
fn dispatch(shared: &Shared, decoded: Result<ResponseFrame, keymux_protocol::Rejected>) {
    let (request_id, outcome) = match decoded {
        Ok(response) => (response.request_id, Ok(response)),
        // The framing is intact, so only this call is affected.
        Err(rejected) => (rejected.request_id, Err(Error::Protocol(rejected.into()))),
    };
    match shared.take(request_id) {
        Some(completion) => {
            let _ = completion.send(outcome);
        }
        // The caller gave up (deadline or cancellation) before the answer came.
        None => tracing::trace!(request_id, "response for a call no longer waiting"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keymux_protocol::{Failure, Status};
    use tokio::io::DuplexStream;

    use super::*;

    /// Reads one request frame off the server end of a duplex pipe.
    async fn read_request(server: &mut DuplexStream, buf: &mut BytesMut) -> RequestFrame {
        let mut splitter = FrameSplitter::new(Limits::default().max_frame);
        loop {
            if let Some(body) = splitter.split(buf).unwrap() {
                return RequestFrame::decode(&body, &Limits::default()).unwrap();
            }
            assert_ne!(server.read_buf(buf).await.unwrap(), 0, "client closed");
        }
    }

    async fn send(server: &mut DuplexStream, response: ResponseFrame) {
        let mut out = BytesMut::new();
        response.encode(&mut out, &Limits::default()).unwrap();
        server.write_all(&out).await.unwrap();
    }

    /// A connection over an in-memory pipe, after the HELLO exchange.
    async fn connected() -> (Connection, DuplexStream, BytesMut) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let handshake = tokio::spawn(Connection::handshake(client, Endpoint::tcp("pipe", 1), "unit"));
        let mut buf = BytesMut::new();
        let hello = read_request(&mut server, &mut buf).await;
        assert!(matches!(hello.request, Request::Hello { ref client_name } if client_name == "unit"));
        let reply = Reply::Hello { max_frame: 65536, max_in_flight: 64, server_version: "test".into() };
        send(&mut server, ResponseFrame::ok(hello.request_id, reply)).await;
        (handshake.await.unwrap().unwrap(), server, buf)
    }

    #[tokio::test]
    async fn works_over_any_byte_stream() {
        let (connection, mut server, mut buf) = connected().await;
        assert_eq!(connection.server_info().max_in_flight, 64);
        let deadline = Instant::now() + Duration::from_secs(5);
        let call = connection.call(Request::Ping, false, deadline);
        let serve = async {
            let request = read_request(&mut server, &mut buf).await;
            assert!(request.timeout_ms.is_some_and(|ms| ms > 4000 && ms <= 5000));
            send(&mut server, ResponseFrame::ok(request.request_id, Reply::Pong)).await;
        };
        let (reply, ()) = tokio::join!(call, serve);
        assert!(matches!(reply.unwrap(), Reply::Pong));
    }

    #[tokio::test]
    async fn a_reply_to_another_opcode_is_a_protocol_error() {
        let (connection, mut server, mut buf) = connected().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let call = connection.call(Request::Ping, false, deadline);
        let serve = async {
            let request = read_request(&mut server, &mut buf).await;
            let reply = Reply::Rewrap { blob: vec![1] };
            send(&mut server, ResponseFrame::ok(request.request_id, reply)).await;
        };
        let (reply, ()) = tokio::join!(call, serve);
        assert!(matches!(reply, Err(Error::Protocol(ProtocolError::UnexpectedReply { .. }))));
        assert!(connection.is_open());
    }

    #[tokio::test]
    async fn corrupt_framing_closes_the_connection() {
        let (connection, mut server, _buf) = connected().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let call = connection.call(Request::Ping, false, deadline);
        let serve = async { server.write_all(&[0, 0, 0, 3]).await.unwrap() };
        let (reply, ()) = tokio::join!(call, serve);
        assert!(matches!(reply, Err(Error::ConnectionClosed)));
        assert!(!connection.is_open());
    }

    #[tokio::test]
    async fn an_oversized_request_fails_locally_and_the_connection_stays_up() {
        let (connection, _server, _buf) = connected().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let request = Request::Unwrap { aad: vec![0; 40_000], blob: vec![0; 40_000] };
        let reply = connection.call(request, false, deadline).await;
        assert!(matches!(reply, Err(Error::InvalidRequest(_))), "{reply:?}");
        assert!(connection.is_open());
    }

    #[tokio::test]
    async fn hello_failure_is_reported_with_its_status() {
        let (client, mut server) = tokio::io::duplex(4096);
        let handshake = tokio::spawn(Connection::handshake(client, Endpoint::tcp("pipe", 1), "unit"));
        let mut buf = BytesMut::new();
        let hello = read_request(&mut server, &mut buf).await;
        let failure = Failure::new(Status::Forbidden, "no");
        send(&mut server, ResponseFrame::failure(hello.request_id, Opcode::Hello as u8, failure)).await;
        let error = handshake.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::Forbidden { .. }), "{error:?}");
    }
}
