//! `tokio_util::codec` adapters over the sans-IO core (feature `codec`).

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::decoder::FrameSplitter;
use crate::error::{EncodeError, FrameError, Rejected};
use crate::limits::Limits;
use crate::request::RequestFrame;
use crate::response::ResponseFrame;

/// Why a codec stopped: the stream is unusable after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The framing is corrupt.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer sent a response that does not parse (client side only).
    #[error(transparent)]
    Payload(#[from] Rejected),
    /// A message could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The server side: decodes requests, encodes responses.
///
/// A request whose payload does not parse is yielded as `Err(Rejected)` (answer it and
/// carry on); a framing fault is the decoder's error (answer if possible, then close).
#[derive(Debug, Clone)]
pub struct ServerCodec {
    splitter: FrameSplitter,
    limits: Limits,
}

impl ServerCodec {
    /// A codec that enforces `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { splitter: FrameSplitter::new(limits.max_frame), limits }
    }

    /// Whether part of a frame has been consumed from the buffer (its length) while
    /// the rest has yet to arrive.
    pub fn in_frame(&self) -> bool {
        self.splitter.in_frame()
    }
}

impl Decoder for ServerCodec {
    type Item = Result<RequestFrame, Rejected>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        let Some(mut body) = self.splitter.split(src)? else { return Ok(None) };
        let request = RequestFrame::decode(&body, &self.limits);
        FrameSplitter::wipe(&mut body);
        Ok(Some(request))
    }
}

impl Encoder<ResponseFrame> for ServerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: ResponseFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(dst, &self.limits)?)
    }
}

/// The client side: encodes requests, decodes responses.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    splitter: FrameSplitter,
    limits: Limits,
}

impl ClientCodec {
    /// A codec that enforces `limits` (the server's `max_frame`, learnt from HELLO, is
    /// the right `max_frame` here).
    pub fn new(limits: Limits) -> Self {
        Self { splitter: FrameSplitter::new(limits.max_frame), limits }
    }
}

impl Decoder for ClientCodec {
    type Item = ResponseFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ResponseFrame>, CodecError> {
        let Some(mut body) = self.splitter.split(src)? else { return Ok(None) };
        let response = ResponseFrame::decode(&body);
        FrameSplitter::wipe(&mut body);
        Ok(Some(response?))
    }
}

impl Encoder<&RequestFrame> for ClientCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &RequestFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(item.encode(dst, &self.limits)?)
    }
}
