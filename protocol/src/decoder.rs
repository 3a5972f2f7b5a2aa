//! Cutting whole frames off a byte stream.

use bytes::{Buf, BytesMut};
use zeroize::Zeroize;

use crate::error::FrameError;
use crate::frame::{HEADER_LEN, Header, LENGTH_PREFIX_LEN, PROTOCOL_VERSION};

/// Splits length-prefixed frames off the front of a receive buffer.
///
/// A small state machine, as in `tokio_util::codec::LengthDelimitedCodec`: in `Head` it
/// waits for the 4-byte length and checks it against `max_frame` *before* any of the
/// body is buffered; in `Body(n)` it waits for `n` bytes. It never allocates more than
/// one frame's worth beyond what the caller already holds.
///
/// Frames may carry plaintext keys, so no copy is left behind: each frame is wiped
/// once parsed ([`FrameSplitter::wipe`]), and when the buffer's contents moved since
/// the last call (`BytesMut` reclaims the consumed front of its block by moving the
/// unread bytes down, leaving the old copy in place), the spare capacity is wiped.
/// A block freed by growing is wiped by the binary's allocator (`keymux_proxy::memory`).
#[derive(Debug, Clone)]
pub struct FrameSplitter {
    max_frame: u32,
    state: State,
    /// Where the buffer's contents started after the last call.
    last_start: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(usize),
}

impl FrameSplitter {
    /// A splitter that refuses frames over `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Self { max_frame, state: State::Head, last_start: 0 }
    }

    /// The limit this splitter enforces.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Whether a frame's length has been read but not yet its whole body: the caller
    /// holds part of a frame even if its buffer is empty (for frame deadlines).
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::Body(_))
    }

    /// Takes the next whole frame body (header and payload, without the length) off
    /// `buf`. `Ok(None)` means more bytes are needed; an error means the stream is
    /// corrupt and must be closed.
    ///
    /// The returned buffer holds the frame alone: callers parse it and then call
    /// [`FrameSplitter::wipe`] so that key material does not linger in memory.
    pub fn split(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        Self::wipe_if_moved(buf, self.last_start);
        let split = self.split_frame(buf);
        self.last_start = buf.as_ptr() as usize;
        split
    }

    /// Wipes `buf`'s spare capacity if its contents no longer start at `start`.
    fn wipe_if_moved(buf: &mut BytesMut, start: usize) {
        if buf.as_ptr() as usize != start {
            buf.spare_capacity_mut().fill(std::mem::MaybeUninit::new(0));
        }
    }

    /// Reserves room for `additional` more bytes, wiping what a move left behind.
    fn reserve(buf: &mut BytesMut, additional: usize) {
        let start = buf.as_ptr() as usize;
        buf.reserve(additional);
        Self::wipe_if_moved(buf, start);
    }

    fn split_frame(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let len = match self.state {
            State::Body(len) => len,
            State::Head => {
                if buf.len() < LENGTH_PREFIX_LEN {
                    Self::reserve(buf, LENGTH_PREFIX_LEN);
                    return Ok(None);
                }
                let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if (length as usize) < HEADER_LEN {
                    return Err(FrameError::TooShort(length));
                }
                if length > self.max_frame {
                    return Err(FrameError::TooLong { length, max: self.max_frame });
                }
                buf.advance(LENGTH_PREFIX_LEN);
                self.state = State::Body(length as usize);
                length as usize
            }
        };
        if buf.len() < len {
            Self::reserve(buf, len - buf.len());
            return Ok(None);
        }
        self.state = State::Head;
        let mut body = buf.split_to(len);
        if body[0] != PROTOCOL_VERSION {
            // The length check above guarantees a whole header.
            let (opcode, request_id) = Header::read(&body).map_or((0, 0), |h| (h.opcode, h.request_id));
            let error = FrameError::BadVersion { version: body[0], opcode, request_id };
            Self::wipe(&mut body);
            return Err(error);
        }
        Ok(Some(body))
    }

    /// Overwrites a parsed frame with zeros (it may have carried a plaintext key).
    pub fn wipe(body: &mut BytesMut) {
        body.as_mut().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_whole_frame() {
        let mut splitter = FrameSplitter::new(64);
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 1, 0x10, 0, 0][..]);
        assert_eq!(splitter.split(&mut buf), Ok(None));
        buf.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        let body = splitter.split(&mut buf).unwrap().unwrap();
        assert_eq!(body.len(), 12);
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_long_frames_before_buffering() {
        let mut splitter = FrameSplitter::new(64);
        let mut buf = BytesMut::from(&[0, 0, 1, 0][..]);
        assert_eq!(splitter.split(&mut buf), Err(FrameError::TooLong { length: 256, max: 64 }));
        assert!(buf.capacity() < 256);
    }

    #[test]
    fn refuses_short_frames_and_bad_versions() {
        let mut splitter = FrameSplitter::new(64);
        assert_eq!(splitter.split(&mut BytesMut::from(&[0, 0, 0, 11][..])), Err(FrameError::TooShort(11)));
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 2, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5][..]);
        assert_eq!(
            splitter.split(&mut buf),
            Err(FrameError::BadVersion { version: 2, opcode: 1, request_id: 5 })
        );
    }
}
