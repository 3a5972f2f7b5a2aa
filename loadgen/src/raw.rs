//! The raw closed loop (`--driver raw`): speaks the wire protocol straight over TCP or a
//! Unix socket, the way `redis-benchmark` speaks RESP, so that what it measures is the
//! proxy rather than the generator.
//!
//! Each connection is one task that keeps `pipeline` requests in flight in fixed
//! slots. It reads whatever responses have arrived, records each, encodes the slot's
//! next request straight away, and sends all of them with one write. There is no
//! per-request task, channel, timer or lock: the client SDK has all of those, which
//! cost about as much as the proxy's own work (docs/PERFORMANCE.md).

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::BytesMut;
use keymux_client::Endpoint;
use keymux_protocol::{FrameSplitter, Limits, Reply, Request, RequestFrame, ResponseFrame};
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use crate::scenario::Window;
use crate::stats::{INVALID_SIGNATURE, Recorder};
use crate::workload::Workload;

/// How long a connection waits for its last answers after the window ends.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Request ids carry their slot in the low 32 bits.
const SLOT_BITS: u32 = 32;

/// What a raw connection needs to run.
pub(crate) struct RawLoop<'a> {
    /// Requests kept in flight.
    pub(crate) pipeline: usize,
    /// What to send.
    pub(crate) workload: &'a Workload,
    /// The measured window.
    pub(crate) window: Window,
}

/// Opens a byte stream to `target`; only TCP and Unix sockets are spoken raw.
pub(crate) async fn connect(target: &Endpoint) -> anyhow::Result<Box<dyn RawStream>> {
    Ok(match target {
        Endpoint::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .with_context(|| format!("cannot connect to {target}"))?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
        Endpoint::Unix(path) => Box::new(
            tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("cannot connect to {target}"))?,
        ),
        _ => bail!("--driver raw speaks tcp:// and unix:// only; use the sdk driver for {target}"),
    })
}

/// A byte stream the raw driver can use.
pub(crate) trait RawStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawStream for T {}

impl RawLoop<'_> {
    /// Runs the closed loop on `stream` until the window ends and every answer is in;
    /// records the requests sent during the window.
    pub(crate) async fn run(
        &self,
        mut stream: Box<dyn RawStream>,
        rng: &mut SmallRng,
        completed: &std::sync::atomic::AtomicU64,
    ) -> anyhow::Result<Recorder> {
        let limits = Limits::default();
        let mut splitter = FrameSplitter::new(limits.max_frame);
        let (mut inbox, mut outbox) =
            (BytesMut::with_capacity(64 * 1024), BytesMut::with_capacity(64 * 1024));
        let mut recorder = Recorder::new();
        let until = self.window.until;

        // HELLO first, as every client does, to check the proxy lets this many through.
        RequestFrame::new(0, Request::Hello { client_name: "keymux-loadgen raw".into() })
            .encode(&mut outbox, &limits)?;
        stream.write_all(&outbox).await?;
        outbox.clear();
        let hello = read_frame(&mut stream, &mut splitter, &mut inbox).await?;
        match ResponseFrame::decode(&hello).map_err(|e| anyhow::anyhow!("HELLO: {e:?}"))?.result {
            Ok(Reply::Hello { max_in_flight, .. }) => ensure!(
                self.pipeline <= max_in_flight as usize,
                "the proxy takes at most {max_in_flight} requests in flight per connection; lower --pipeline"
            ),
            other => bail!("HELLO was answered with {other:?}"),
        }

        let mut sent = vec![Instant::now(); self.pipeline];
        let mut generation = vec![1u32; self.pipeline]; // generation 0, slot 0 would be HELLO's id
        for slot in 0..self.pipeline {
            self.encode(slot, generation[slot], rng, &mut outbox)?;
            sent[slot] = Instant::now();
        }
        let mut outstanding = self.pipeline;
        while outstanding > 0 {
            if !outbox.is_empty() {
                stream.write_all(&outbox).await?;
                outbox.clear();
            }
            let read = match timeout_at(until.max(Instant::now()) + DRAIN_GRACE, stream.read_buf(&mut inbox))
                .await
            {
                Ok(read) => read?,
                Err(_) => bail!("{outstanding} requests were not answered within {DRAIN_GRACE:?}"),
            };
            ensure!(read > 0, "the proxy closed the connection");
            let now = Instant::now();
            while let Some(body) = splitter.split(&mut inbox).context("the proxy broke the framing")? {
                let response =
                    ResponseFrame::decode(&body).map_err(|e| anyhow::anyhow!("bad response: {e:?}"))?;
                let slot = (response.request_id & ((1 << SLOT_BITS) - 1)) as usize;
                ensure!(
                    slot < self.pipeline && (response.request_id >> SLOT_BITS) as u32 == generation[slot],
                    "an answer to request {} that is not in flight",
                    response.request_id
                );
                completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Counted by when it was sent: an answer that comes after the window
                // still counts, so the tail is not shaved.
                if self.window.contains(sent[slot]) {
                    match response.result {
                        Ok(Reply::Verify { valid: false }) => {
                            recorder.record_failure(INVALID_SIGNATURE, true)
                        }
                        Ok(_) => recorder.record_ok(now - sent[slot]),
                        Err(failure) => recorder.record_error(&failure.into()),
                    }
                }
                if now < until {
                    generation[slot] = generation[slot].wrapping_add(1);
                    self.encode(slot, generation[slot], rng, &mut outbox)?;
                    sent[slot] = now;
                } else {
                    outstanding -= 1;
                }
            }
        }
        Ok(recorder)
    }

    fn encode(
        &self,
        slot: usize,
        generation: u32,
        rng: &mut SmallRng,
        out: &mut BytesMut,
    ) -> anyhow::Result<()> {
        let request_id = (u64::from(generation) << SLOT_BITS) | slot as u64;
        let (request, bypass_cache) = self.workload.request(self.workload.pick(rng));
        let frame = RequestFrame { request_id, bypass_cache, timeout_ms: None, request };
        frame.encode(out, &Limits::default()).context("encoding a request")
    }
}

async fn read_frame(
    stream: &mut Box<dyn RawStream>,
    splitter: &mut FrameSplitter,
    inbox: &mut BytesMut,
) -> anyhow::Result<BytesMut> {
    loop {
        if let Some(body) = splitter.split(inbox).context("the proxy broke the framing")? {
            return Ok(body);
        }
        ensure!(stream.read_buf(inbox).await? > 0, "the proxy closed the connection");
    }
}
