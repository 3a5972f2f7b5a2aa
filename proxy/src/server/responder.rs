//! The way back to a client: a [`Responder`] answers exactly one request.

use std::sync::Arc;
use std::time::Instant;

use keymux_protocol::{Opcode, Reply, ResponseFrame};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::OpError;
use crate::telemetry::Metrics;

/// A response on its way to a connection's writer, holding the connection's in-flight
/// permit until it is written, so queued responses are bounded too.
pub struct Outgoing {
    /// The response.
    pub frame: ResponseFrame,
    /// Released once the frame is written.
    pub permit: Option<OwnedSemaphorePermit>,
    /// The identity's in-flight slot, also released once the frame is written.
    pub identity_permit: Option<OwnedSemaphorePermit>,
}

/// The channel into a connection's writer.
pub type ResponseSink = mpsc::UnboundedSender<Outgoing>;

/// Answers one request, from whichever thread completes it, and records its metrics.
/// Dropping a responder unanswered sends INTERNAL, so no request is ever left hanging.
pub struct Responder {
    request_id: u64,
    opcode: Opcode,
    started: Instant,
    sink: ResponseSink,
    permit: Option<OwnedSemaphorePermit>,
    identity_permit: Option<OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
    answered: bool,
}

impl Responder {
    /// A responder for request `request_id`, read at `started`.
    pub fn new(
        request_id: u64,
        opcode: Opcode,
        started: Instant,
        sink: ResponseSink,
        permit: OwnedSemaphorePermit,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            request_id,
            opcode,
            started,
            sink,
            permit: Some(permit),
            identity_permit: None,
            metrics,
            answered: false,
        }
    }

    /// Holds the identity's in-flight slot until this response is written.
    pub fn with_identity_permit(mut self, permit: Option<OwnedSemaphorePermit>) -> Self {
        self.identity_permit = permit;
        self
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }

    /// Sends the outcome.
    pub fn send(mut self, result: Result<Reply, OpError>) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: Result<Reply, OpError>) {
        self.answered = true;
        let frame = match result {
            Ok(reply) => ResponseFrame::ok(self.request_id, reply),
            Err(error) => ResponseFrame::failure(self.request_id, self.opcode as u8, error.into()),
        };
        self.metrics.record_request(self.opcode, frame.status(), self.started.elapsed());
        // The writer is gone only if the connection died; nobody is left to answer.
        let _ = self.sink.send(Outgoing {
            frame,
            permit: self.permit.take(),
            identity_permit: self.identity_permit.take(),
        });
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            self.deliver(Err(OpError::Internal("request dropped without an answer".into())));
        }
    }
}
