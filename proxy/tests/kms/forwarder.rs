//! A test tool (not a fake KMS): a TCP forwarder in front of the KMS server that a
//! test can cut and restore, and that notes when each KMS request passes through.
//!
//! Cutting closes every forwarded connection and closes new ones as soon as they are
//! accepted, as a failed load balancer or a dead region would.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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
    connections: Mutex<Vec<AbortHandle>>,
    requests: Mutex<Vec<Instant>>,
}

/// A forwarder on an ephemeral loopback port, on its own runtime (the proxy's
/// start-up blocks the test's thread on KMS calls that pass through it).
pub struct Forwarder {
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
                let task = tokio::spawn(forward(client, target, Arc::clone(&shared)));
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

    /// Forwards again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// When each KMS request seen so far passed through.
    pub fn requests(&self) -> Vec<Instant> {
        self.state.requests.lock().unwrap().clone()
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, state: Arc<State>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
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
