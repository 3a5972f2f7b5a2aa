//! The one way back to a client: a [`Responder`] answers exactly one request, whether
//! it succeeded, failed, was refused by a quota, or did not even decode; so every
//! response is counted in the metrics here and nowhere else.

use std::sync::Arc;
use std::time::Instant;

use keymux_protocol::{Failure, Opcode, Rejected, Reply, ResponseFrame, Status};
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
    /// The request's opcode byte: one this version may not know, for a request that
    /// did not decode.
    opcode: u8,
    started: Instant,
    sink: ResponseSink,
    permit: Option<OwnedSemaphorePermit>,
    identity_permit: Option<OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
    answered: bool,
}

impl Responder {
    /// A responder for request `request_id` (opcode byte `opcode`), read at `started`,
    /// holding the connection's in-flight `permit` until its answer is written.
    pub fn new(
        request_id: u64,
        opcode: u8,
        started: Instant,
        sink: ResponseSink,
        permit: Option<OwnedSemaphorePermit>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { request_id, opcode, started, sink, permit, identity_permit: None, metrics, answered: false }
    }

    /// Holds the identity's in-flight slot until this response is written.
    pub fn with_identity_permit(mut self, permit: Option<OwnedSemaphorePermit>) -> Self {
        self.identity_permit = permit;
        self
    }

    /// A responder for a request that did not decode (`rejected` names its id and
    /// opcode byte).
    pub fn for_rejected(
        rejected: &Rejected,
        started: Instant,
        sink: ResponseSink,
        permit: OwnedSemaphorePermit,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::new(rejected.request_id, rejected.opcode, started, sink, Some(permit), metrics)
    }

    /// Sends the outcome.
    pub fn send(mut self, result: Result<Reply, OpError>) {
        let frame = match result {
            Ok(reply) => ResponseFrame::ok(self.request_id, reply),
            Err(error) => ResponseFrame::failure(self.request_id, self.opcode, error.into()),
        };
        self.deliver(frame);
    }

    /// Answers a request that did not decode: BAD_REQUEST or UNSUPPORTED, naming the
    /// fault, while the connection stays up.
    pub fn reject(mut self, rejected: Rejected) {
        let failure = Failure::new(rejected.error.status(), rejected.error.to_string());
        self.deliver(ResponseFrame::failure(self.request_id, self.opcode, failure));
    }

    /// Answers the request whose frame broke the stream with BAD_REQUEST and `why`,
    /// just before the connection closes.
    pub fn frame_fault(mut self, why: String) {
        let failure = Failure::new(Status::BadRequest, why);
        self.deliver(ResponseFrame::failure(self.request_id, self.opcode, failure));
    }

    fn deliver(&mut self, frame: ResponseFrame) {
        self.answered = true;
        if let Some(opcode) = Opcode::from_u8(self.opcode) {
            self.metrics.record_request(opcode, frame.status(), self.started.elapsed());
        }
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
            let error = OpError::Internal("request dropped without an answer".into());
            self.deliver(ResponseFrame::failure(self.request_id, self.opcode, error.into()));
        }
    }
}
