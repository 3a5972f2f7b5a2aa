//! A test tool (not a fake KMS): a TCP forwarder in front of the KMS server that a
//! test can cut and restore, and that notes when each KMS request passes through.
//!
//! Cutting closes every forwarded connection and closes new ones as soon as they are
//! accepted, as a failed load balancer or a dead region would. Throttling answers the
//! next requests with KMS's `ThrottlingException` itself, as KMS does over its quota.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Every KMS request carries this header (hyper writes header names in lower case).
const REQUEST_MARK: &[u8] = b"x-amz-target:";

#[derive(Default)]
struct State {
    cut: AtomicBool,
    /// Requests still to answer with a throttling error.
    throttle: AtomicUsize,
    connections: Mutex<Vec<AbortHandle>>,
    requests: Mutex<Vec<Instant>>,
}

/// A forwarder on an ephemeral loopback port, on its own runtime (the proxy's
/// start-up blocks the test's thread on KMS calls that pass through it).
pub struct Forwarder {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Forwarder {
    /// Forwards connections to `target`.
    pub fn start(target: SocketAddr) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                if shared.cut.load(Ordering::SeqCst) {
                    continue;
                }
                let task = if shared.throttle.load(Ordering::SeqCst) > 0 {
                    tokio::spawn(throttle(client, target, Arc::clone(&shared)))
                } else {
                    tokio::spawn(forward(client, target, Arc::clone(&shared), Vec::new()))
                };
                shared.connections.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, state, runtime: Some(runtime) }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection, and every new one until [`Forwarder::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Answers the next `count` requests with `ThrottlingException` (closing the
    /// current connections, so that every request passes the check), then forwards.
    pub fn throttle_next(&self, count: usize) {
        self.state.throttle.store(count, Ordering::SeqCst);
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// When each KMS request seen so far passed through.
    pub fn requests(&self) -> Vec<Instant> {
        self.state.requests.lock().unwrap().clone()
    }
}

/// Reads one HTTP/1.1 request (headers, then a `content-length` body) into `buffer`.
async fn read_request(client: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Some(());
            }
        }
        let n = client.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Answers requests with `ThrottlingException` while the count lasts, then forwards
/// the connection.
async fn throttle(mut client: TcpStream, target: SocketAddr, state: Arc<State>) {
    const BODY: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    loop {
        let mut request = Vec::new();
        if read_request(&mut client, &mut request).await.is_none() {
            return;
        }
        let throttled =
            state.throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if !throttled {
            return forward(client, target, state, request).await;
        }
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Forwards a connection, `first` being bytes already read from the client.
async fn forward(mut client: TcpStream, target: SocketAddr, state: Arc<State>, first: Vec<u8>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    if !first.is_empty() {
        state.requests.lock().unwrap().push(Instant::now());
        if server.write_all(&first).await.is_err() {
            return;
        }
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        // The end of the previous read, so a mark split across reads is still seen.
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            carry.extend(buffer[..n].iter().map(u8::to_ascii_lowercase));
            let marks = carry.windows(REQUEST_MARK.len()).filter(|w| *w == REQUEST_MARK).count();
            if marks > 0 {
                let now = Instant::now();
                state.requests.lock().unwrap().extend(std::iter::repeat_n(now, marks));
            }
            let keep = carry.len().min(REQUEST_MARK.len() - 1);
            carry.drain(..carry.len() - keep);
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
}
