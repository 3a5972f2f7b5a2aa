//! One client connection: a reader that decodes and routes requests, and a writer that
//! sends responses as they complete, in any order.
//!
//! The loop is generic over the byte stream, so TCP, Unix sockets, TLS and QUIC
//! streams all share it. Backpressure: the reader holds one permit of a per-connection
//! semaphore per request in flight, and each permit is only released once its response
//! has been written, so a client that stops reading its responses stops being read.
//!
//! Slow clients: a frame whose first bytes have arrived must be complete within
//! `frame_timeout` (slowloris), and a connection with nothing in flight that sends
//! nothing for `idle_timeout` is closed. Both are checked by one ticking timer per
//! connection, so they hold to within a quarter of the shorter timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::StreamExt;
use keymux_protocol::{CodecError, Failure, Limits, Opcode, ResponseFrame, ServerCodec, Status};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use crate::access::acl::Acl;
use crate::access::quota::QuotaRegistry;
use crate::audit::AuditLog;
use crate::error::OpError;
use crate::router::Router;
use crate::server::peer::Peer;
use crate::server::responder::{Outgoing, Responder};
use crate::telemetry::Metrics;

/// What every connection shares.
pub struct ConnectionContext {
    /// Where requests go.
    pub router: Arc<Router>,
    /// Decoding limits.
    pub limits: Limits,
    /// Requests read ahead per connection.
    pub max_in_flight: u32,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access control rules.
    pub acl: Acl,
    /// Per-identity quotas.
    pub quotas: QuotaRegistry,
    /// Where denials and failed handshakes are recorded.
    pub audit: AuditLog,
    /// Longest a TLS/QUIC handshake may take.
    pub handshake_timeout: Duration,
    /// Close a connection idle this long (zero: never).
    pub idle_timeout: Duration,
    /// Longest a partially received frame may take to complete.
    pub frame_timeout: Duration,
    /// Longest one write to the client may block (a client that stops reading).
    pub write_timeout: Duration,
    /// A connection is closed (gracefully: reading stops, in-flight requests are
    /// answered) this long after it was set up; zero: never.
    pub max_lifetime: Duration,
}

/// How long a refused connection may take to send the request its refusal answers.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Responses gathered into one write, at most.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Serves one connection from `peer` until the client closes it, a frame fault or a
/// timeout ends it, or `shutdown` fires; then lets in-flight requests finish (up to the
/// grace period).
pub async fn serve<S>(stream: S, ctx: Arc<ConnectionContext>, peer: Peer, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    ctx.metrics.connections_add(1);
    let (read_half, write_half) = tokio::io::split(stream);
    let (sink, outgoing) = mpsc::unbounded_channel();
    // Cancelled by the writer when the client stops reading (a write times out or
    // fails): the reader then stops too.
    let write_failed = CancellationToken::new();
    let writer = tokio::spawn(write_responses(
        write_half,
        outgoing,
        ctx.limits,
        ctx.write_timeout,
        write_failed.clone(),
    ));
    let permits = Arc::new(Semaphore::new(ctx.max_in_flight as usize));
    let mut frames = FramedRead::new(read_half, ServerCodec::new(ctx.limits));
    let mut clock = SlowClientClock::new(&ctx);
    // Long-lived connections end, so an identity (a certificate that has since expired
    // or been revoked) is re-established from time to time.
    let end_of_life = (!ctx.max_lifetime.is_zero()).then(|| tokio::time::Instant::now() + ctx.max_lifetime);
    let lifetime = async {
        match end_of_life {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lifetime);

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
            () = write_failed.cancelled() => break,
            () = &mut lifetime => {
                tracing::debug!(peer = %peer.addr, "closing a connection at the end of its lifetime");
                break;
            }
        };
        let item = loop {
            tokio::select! {
                biased;
                item = frames.next() => break Some(item),
                () = shutdown.cancelled() => break None,
                () = write_failed.cancelled() => break None,
                () = &mut lifetime => {
                    tracing::debug!(peer = %peer.addr, "closing a connection at the end of its lifetime");
                    break None;
                }
                _ = clock.tick() => {
                    let in_flight = permits.available_permits() + 1 < ctx.max_in_flight as usize;
                    if let Some(reason) = clock.expired(partial_frame(&frames), in_flight) {
                        tracing::debug!(peer = %peer.addr, reason, "closing a slow or idle connection");
                        ctx.metrics.connection_timed_out();
                        break None;
                    }
                }
            }
        };
        let Some(item) = item else { break };
        let received = Instant::now();
        clock.frame_received(received);
        match item {
            Some(Ok(Ok(frame))) => {
                let opcode = frame.request.opcode();
                let admitted = match (&peer.quota, opcode) {
                    (Some(quota), op) if op != Opcode::Hello => quota.admit(received),
                    _ => Ok(None),
                };
                let responder = Responder::new(
                    frame.request_id,
                    opcode as u8,
                    received,
                    sink.clone(),
                    Some(permit),
                    Arc::clone(&ctx.metrics),
                );
                match admitted {
                    Ok(identity_permit) => {
                        let responder = responder.with_identity_permit(identity_permit);
                        ctx.router.dispatch(frame, responder, received, &peer);
                    }
                    Err(retry_after) => responder.send(Err(OpError::OverQuota { retry_after })),
                }
            }
            Some(Ok(Err(rejected))) => {
                Responder::for_rejected(&rejected, received, sink.clone(), permit, Arc::clone(&ctx.metrics))
                    .reject(rejected);
            }
            Some(Err(CodecError::Frame(error))) => {
                ctx.metrics.frame_rejected();
                tracing::debug!(%error, "closing connection after a frame fault");
                if let Some((request_id, opcode)) = error.request_id() {
                    let metrics = Arc::clone(&ctx.metrics);
                    Responder::new(request_id, opcode, received, sink.clone(), Some(permit), metrics)
                        .frame_fault(error.to_string());
                }
                break;
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "connection read failed");
                break;
            }
            None => break,
        }
    }

    // Stop reading; the writer ends once every in-flight responder has answered.
    drop(frames);
    drop(sink);
    if tokio::time::timeout(ctx.shutdown_grace, writer).await.is_err() {
        tracing::warn!("in-flight requests did not finish within the shutdown grace period");
    }
    ctx.metrics.connections_add(-1);
    drop(peer);
}

/// Whether part of a frame has arrived and the rest has not.
fn partial_frame<R>(frames: &FramedRead<R, ServerCodec>) -> bool {
    !frames.read_buffer().is_empty() || frames.decoder().in_frame()
}

/// Answers the first request of a connection the proxy will not serve (its identity is
/// at its connection limit, or the proxy at its own) with `why` (BUSY and a retry
/// hint), then closes it. The first request must come within a second.
pub(super) async fn refuse<S>(stream: S, ctx: Arc<ConnectionContext>, why: OpError)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read_half, ServerCodec::new(ctx.limits));
    let wait = ctx.frame_timeout.min(REFUSAL_WAIT);
    let Ok(Some(Ok(Ok(frame)))) = tokio::time::timeout(wait, frames.next()).await else {
        return;
    };
    let (sink, outgoing) = mpsc::unbounded_channel();
    let opcode = frame.request.opcode() as u8;
    Responder::new(frame.request_id, opcode, Instant::now(), sink, None, Arc::clone(&ctx.metrics))
        .send(Err(why));
    // The responder, and with it the only sender, is gone: the writer writes its one
    // answer, then shuts the connection down.
    write_responses(write_half, outgoing, ctx.limits, ctx.write_timeout, CancellationToken::new()).await;
}

/// Tracks when a connection last made progress, for the idle and frame timeouts.
struct SlowClientClock {
    ticker: tokio::time::Interval,
    frame_timeout: Duration,
    idle_timeout: Duration,
    /// When a partial frame was first seen in the read buffer.
    partial_since: Option<Instant>,
    last_activity: Instant,
}

impl SlowClientClock {
    fn new(ctx: &ConnectionContext) -> Self {
        let shortest = match ctx.idle_timeout {
            idle if idle.is_zero() => ctx.frame_timeout,
            idle => idle.min(ctx.frame_timeout),
        };
        let period = (shortest / 4).max(Duration::from_millis(5));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            frame_timeout: ctx.frame_timeout,
            idle_timeout: ctx.idle_timeout,
            partial_since: None,
            last_activity: Instant::now(),
        }
    }

    async fn tick(&mut self) {
        self.ticker.tick().await;
    }

    fn frame_received(&mut self, at: Instant) {
        self.partial_since = None;
        self.last_activity = at;
    }

    /// Why the connection should close, if it should: checked on each tick.
    fn expired(&mut self, partial_frame: bool, in_flight: bool) -> Option<&'static str> {
        let now = Instant::now();
        if partial_frame {
            let since = *self.partial_since.get_or_insert(now);
            if now.duration_since(since) >= self.frame_timeout {
                return Some("frame not completed within frame_timeout");
            }
            return None;
        }
        self.partial_since = None;
        if in_flight {
            self.last_activity = now;
            return None;
        }
        if !self.idle_timeout.is_zero() && now.duration_since(self.last_activity) >= self.idle_timeout {
            return Some("idle for idle_timeout");
        }
        None
    }
}

/// Writes responses as they arrive, coalescing whatever is queued into one write, and
/// wipes the buffer afterwards (it may have held unwrapped keys). A write that fails, or
/// blocks for `write_timeout` (a client that stopped reading), ends the writing and
/// cancels `failed`, which stops the connection's reader.
async fn write_responses<W>(
    mut writer: W,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    limits: Limits,
    write_timeout: Duration,
    failed: CancellationToken,
) where
    W: AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    let mut permits = Vec::new();
    while let Some(first) = outgoing.recv().await {
        let mut next = Some(first);
        while let Some(Outgoing { frame, permit, identity_permit }) = next.take() {
            if frame.encode(&mut buffer, &limits).is_err() {
                // Cannot happen with validated limits; answer anyway (an empty message
                // always fits the 12-byte minimum frame plus a status).
                let failure = Failure::new(Status::Internal, "");
                let fallback = ResponseFrame::failure(frame.request_id, frame.opcode, failure);
                let _ = fallback.encode(&mut buffer, &Limits { max_frame: u32::MAX, ..limits });
            }
            permits.extend(permit);
            permits.extend(identity_permit);
            if buffer.len() < WRITE_BATCH_BYTES {
                next = outgoing.try_recv().ok();
            }
        }
        let written = tokio::time::timeout(write_timeout, writer.write_all(&buffer)).await;
        buffer.as_mut().zeroize();
        buffer.clear();
        permits.clear();
        if !matches!(written, Ok(Ok(()))) {
            if written.is_err() {
                tracing::debug!(?write_timeout, "closing a connection whose client stopped reading");
            }
            // The client is gone or stuck: stop reading it, keep draining so responders
            // never block, but stop writing.
            failed.cancel();
            while outgoing.recv().await.is_some() {}
            return;
        }
    }
    let _ = writer.shutdown().await;
}
