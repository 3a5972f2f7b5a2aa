//! One client connection: a reader that decodes and routes requests, and a writer that
//! sends responses as they complete, in any order.
//!
//! The loop is generic over the byte stream, so TCP, Unix sockets, TLS and QUIC
//! streams all share it. Backpressure: the reader holds one permit of a per-connection
//! semaphore per request in flight, and each permit is only released once its response
//! has been written, so a client that stops reading its responses stops being read.

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

use crate::reply::{Outgoing, Responder};
use crate::router::Router;
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
}

/// Responses gathered into one write, at most.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Serves one connection until the client closes it, a frame fault ends it, or
/// `shutdown` fires; then lets in-flight requests finish (up to the grace period).
pub async fn serve<S>(stream: S, ctx: Arc<ConnectionContext>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    ctx.metrics.connections_add(1);
    let (read_half, write_half) = tokio::io::split(stream);
    let (sink, outgoing) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_responses(write_half, outgoing, ctx.limits));
    let permits = Arc::new(Semaphore::new(ctx.max_in_flight as usize));
    let mut frames = FramedRead::new(read_half, ServerCodec::new(ctx.limits));

    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let item = tokio::select! {
            item = frames.next() => item,
            () = shutdown.cancelled() => break,
        };
        let received = Instant::now();
        match item {
            Some(Ok(Ok(frame))) => {
                let opcode = frame.request.opcode();
                let responder = Responder::new(
                    frame.request_id,
                    opcode,
                    received,
                    sink.clone(),
                    permit,
                    Arc::clone(&ctx.metrics),
                );
                ctx.router.dispatch(frame, responder, received);
            }
            Some(Ok(Err(rejected))) => {
                if let Some(opcode) = Opcode::from_u8(rejected.opcode) {
                    ctx.metrics.record_request(opcode, rejected.error.status(), received.elapsed());
                }
                let _ = sink.send(Outgoing { frame: rejected.into(), permit: Some(permit) });
            }
            Some(Err(CodecError::Frame(error))) => {
                ctx.metrics.frame_rejected();
                tracing::debug!(%error, "closing connection after a frame fault");
                if let Some((request_id, opcode)) = error.request_id() {
                    let failure = Failure::new(Status::BadRequest, error.to_string());
                    let frame = ResponseFrame::failure(request_id, opcode, failure);
                    let _ = sink.send(Outgoing { frame, permit: Some(permit) });
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
}

/// Writes responses as they arrive, coalescing whatever is queued into one write, and
/// wipes the buffer afterwards (it may have held unwrapped keys).
async fn write_responses<W>(mut writer: W, mut outgoing: mpsc::UnboundedReceiver<Outgoing>, limits: Limits)
where
    W: AsyncWrite + Unpin,
{
    let mut buffer = BytesMut::with_capacity(WRITE_BATCH_BYTES);
    let mut permits = Vec::new();
    while let Some(first) = outgoing.recv().await {
        let mut next = Some(first);
        while let Some(Outgoing { frame, permit }) = next.take() {
            if frame.encode(&mut buffer, &limits).is_err() {
                // Cannot happen with validated limits; answer anyway (an empty message
                // always fits the 12-byte minimum frame plus a status).
                let failure = Failure::new(Status::Internal, "");
                let fallback = ResponseFrame::failure(frame.request_id, frame.opcode, failure);
                let _ = fallback.encode(&mut buffer, &Limits { max_frame: u32::MAX, ..limits });
            }
            permits.extend(permit);
            if buffer.len() < WRITE_BATCH_BYTES {
                next = outgoing.try_recv().ok();
            }
        }
        let written = writer.write_all(&buffer).await;
        buffer.as_mut().zeroize();
        buffer.clear();
        permits.clear();
        if written.is_err() {
            // The client is gone: keep draining so responders never block, but stop writing.
            while outgoing.recv().await.is_some() {}
            return;
        }
    }
    let _ = writer.shutdown().await;
}
