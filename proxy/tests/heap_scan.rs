//! No DEK survives in the proxy's heap after the requests that carried it: the test
//! binary's allocator tracks every block and keeps freed ones in quarantine, and after
//! wraps and unwraps of marked DEKs over a connection that then closes, neither live
//! nor freed blocks hold a marker. A control run without the binary's wipe-on-free
//! shows the scan finds what it looks for: freed buffers do hold DEKs otherwise.
//!
//! Its own test binary, because it needs its own global allocator.

use std::time::Duration;

use bytes::BytesMut;
use keymux_protocol::{Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes};
use keymux_test_support::heap::{self, Found, ScanningAllocator};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::wait::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static HEAP: ScanningAllocator = ScanningAllocator::new();

/// A client that keeps frames on the stack (heap copies are wiped at once), so that
/// while its connection is open the heap scan sees only the proxy's memory.
struct StackClient {
    stream: TcpStream,
}

impl StackClient {
    /// Sends `requests` in one write, then reads their replies.
    async fn call_many(&mut self, requests: Vec<Request>) -> Vec<Reply> {
        let count = requests.len();
        let mut frames = vec_on_stack();
        let mut len = 0;
        for request in requests {
            let mut encoded = BytesMut::with_capacity(512);
            RequestFrame::new(1, request).encode(&mut encoded, &Limits::default()).unwrap();
            frames[len..len + encoded.len()].copy_from_slice(&encoded);
            len += encoded.len();
            zeroize::Zeroize::zeroize(encoded.as_mut());
        }
        self.stream.write_all(&frames[..len]).await.unwrap();
        zeroize::Zeroize::zeroize(&mut frames[..]);
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let mut length = [0u8; 4];
            self.stream.read_exact(&mut length).await.unwrap();
            let mut body = [0u8; 2048];
            let body = &mut body[..u32::from_be_bytes(length) as usize];
            self.stream.read_exact(body).await.unwrap();
            replies.push(ResponseFrame::decode(body).unwrap().result.unwrap());
            zeroize::Zeroize::zeroize(body);
        }
        replies
    }

    async fn call(&mut self, request: Request) -> Reply {
        self.call_many(vec![request]).await.pop().unwrap()
    }
}

/// Room for the largest burst: 100 frames of a 1 KiB DEK or its blob.
fn vec_on_stack() -> [u8; 128 * 1024] {
    [0u8; 128 * 1024]
}

/// A `LEN`-byte DEK starting with `marker` and then `i`.
fn marked_dek<const LEN: usize>(marker: &[u8; 16], i: u32) -> [u8; LEN] {
    let mut dek = [0u8; LEN];
    dek[..16].copy_from_slice(marker);
    dek[16..20].copy_from_slice(&i.to_be_bytes());
    dek
}

fn wrap(dek: &[u8]) -> Request {
    Request::Wrap { key: "default".into(), aad: b"tenant=7".to_vec(), plaintext: SecretBytes::copy_from(dek) }
}

fn unwrap(blob: Vec<u8>) -> Request {
    Request::Unwrap { aad: b"tenant=7".to_vec(), blob }
}

/// Wraps and unwraps 200 DEKs that start with `marker` one at a time, then wraps 100
/// DEKs of 1 KiB in one write and unwraps them in another (over 100 KiB each way: the
/// proxy's read buffer moves its unparsed frames, and its writer's 64 KiB batch grows,
/// freeing a block of plaintext DEKs); the heap as found with the connection still
/// open; then closes it and waits for the proxy to be idle.
async fn workload(proxy: &TestProxy, marker: &[u8; 16]) -> Found {
    let mut client = StackClient { stream: TcpStream::connect(proxy.addr()).await.unwrap() };
    for i in 0..200u32 {
        let mut dek: [u8; 32] = marked_dek(marker, i);
        let Reply::Wrap { blob } = client.call(wrap(&dek)).await else { panic!("not a WRAP reply") };
        let Reply::Unwrap { plaintext } = client.call(unwrap(blob)).await else {
            panic!("not an UNWRAP reply")
        };
        assert_eq!(plaintext.expose(), &dek);
        // The test's own future is on the heap (tokio boxes large futures): wipe it too.
        zeroize::Zeroize::zeroize(&mut dek);
    }
    let wraps = (200..300).map(|i| wrap(&marked_dek::<1024>(marker, i))).collect();
    let unwraps = client
        .call_many(wraps)
        .await
        .into_iter()
        .map(|reply| match reply {
            Reply::Wrap { blob } => unwrap(blob),
            other => panic!("not a WRAP reply: {other:?}"),
        })
        .collect();
    let replies = client.call_many(unwraps).await;
    assert!(
        replies.iter().all(|reply| matches!(reply, Reply::Unwrap { plaintext } if plaintext.len() == 1024))
    );
    drop(replies);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let while_open = heap::scan(marker);
    if while_open != Found::default() {
        eprintln!(
            "blocks holding a DEK, connection open (size, freed, index): {:?}",
            heap::blocks_holding(marker)
        );
    }
    drop(client);
    wait_until("the connection to close", Duration::from_secs(5), || {
        metric(&proxy.server.metrics().encode(), "keymux_connections") == 0.0
    })
    .await;
    // Let the executors and the writer finish dropping what they held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while_open
}

/// The client's frames live on the stack: the test runs on a thread with room for them.
#[test]
fn no_dek_outlives_its_requests_in_live_or_freed_memory() {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(scan_after_workloads());
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn scan_after_workloads() {
    // The unwrap cache keeps DEKs on purpose (bounded, zeroized on eviction): off here.
    let proxy = TestProxy::start(|config| config.cache.enabled = false).await;
    heap::start_quarantine();

    // The scan sees what it looks for: a marker in a live block, in a block freed
    // without the wipe, and none in a block freed with it.
    let held = b"kmx-live-marker!".repeat(4);
    heap::set_wipe_on_free(false);
    drop(b"kmx-free-marker!".repeat(4));
    heap::set_wipe_on_free(true);
    drop(b"kmx-wipe-marker!".repeat(4));
    assert_eq!(heap::scan(b"kmx-live-marker!"), Found { live: 1, freed: 0 });
    assert_eq!(heap::scan(b"kmx-free-marker!"), Found { live: 0, freed: 1 });
    assert_eq!(heap::scan(b"kmx-wipe-marker!"), Found { live: 0, freed: 0 });
    drop(held);

    // The proxy's own wiping alone (codec, writer, secrets), without wipe-on-free.
    heap::set_wipe_on_free(false);
    let unwiped_open = workload(&proxy, b"kmx-ctrl-marker!").await;
    let unwiped_closed = heap::scan(b"kmx-ctrl-marker!");
    heap::set_wipe_on_free(true);

    // As the keymux binary runs: every freed block wiped.
    let while_open = workload(&proxy, b"kmx-dek-marker!!").await;
    let closed = heap::scan(b"kmx-dek-marker!!");
    eprintln!(
        "without wipe-on-free: open {unwiped_open:?}, closed {unwiped_closed:?}; with it: open {while_open:?}, closed {closed:?}"
    );
    assert_eq!(while_open, Found::default(), "a DEK outlived its request while the connection is open");
    assert_eq!(closed, Found::default(), "a DEK outlived its connection in the heap");
}
