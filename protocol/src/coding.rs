//! Primitive field coding: big-endian integers, `str8` and `bytes16`.
//!
//! [`Reader`] reads from a borrowed slice and copies what it returns, so a parsed frame
//! never borrows the receive buffer (which is wiped after parsing).

use bytes::BufMut;

use crate::error::{EncodeError, Field, PayloadError};

/// A cursor over a frame payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, len: usize, field: Field) -> Result<&'a [u8], PayloadError> {
        if self.buf.len() < len {
            return Err(PayloadError::Truncated(field));
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: Field) -> Result<u8, PayloadError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: Field) -> Result<u16, PayloadError> {
        let bytes = self.take(2, field)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self, field: Field) -> Result<u32, PayloadError> {
        let bytes = self.take(4, field)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A `str8`: 1..=255 bytes of UTF-8.
    pub(crate) fn str8(&mut self, field: Field) -> Result<String, PayloadError> {
        let len = self.take(1, field)?[0] as usize;
        if len == 0 {
            return Err(PayloadError::Empty(field));
        }
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| PayloadError::InvalidUtf8(field))
    }

    /// A `bytes16` borrowed from the payload, checked against `max`.
    pub(crate) fn bytes16_ref(&mut self, field: Field, max: usize) -> Result<&'a [u8], PayloadError> {
        let len = self.u16(field)? as usize;
        if len > max {
            return Err(PayloadError::TooLarge { field, len, max });
        }
        self.take(len, field)
    }

    /// A `bytes16`, copied out and checked against `max`.
    pub(crate) fn bytes16(&mut self, field: Field, max: usize) -> Result<Vec<u8>, PayloadError> {
        self.bytes16_ref(field, max).map(<[u8]>::to_vec)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), PayloadError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(PayloadError::TrailingBytes(n)),
        }
    }
}

/// Writes a `str8`.
pub(crate) fn put_str8(dst: &mut impl BufMut, field: Field, value: &str) -> Result<(), EncodeError> {
    let len = value.len();
    if len == 0 {
        return Err(EncodeError::Empty(field));
    }
    let len8 = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong { field, len, max: 255 })?;
    dst.put_u8(len8);
    dst.put_slice(value.as_bytes());
    Ok(())
}

/// Writes a `bytes16`.
pub(crate) fn put_bytes16(dst: &mut impl BufMut, field: Field, value: &[u8]) -> Result<(), EncodeError> {
    let len = value.len();
    let len16 =
        u16::try_from(len).map_err(|_| EncodeError::FieldTooLong { field, len, max: u16::MAX as usize })?;
    dst.put_u16(len16);
    dst.put_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str8_rejects_empty_and_bad_utf8() {
        assert_eq!(Reader::new(&[0]).str8(Field::Key), Err(PayloadError::Empty(Field::Key)));
        assert_eq!(Reader::new(&[1, 0xff]).str8(Field::Key), Err(PayloadError::InvalidUtf8(Field::Key)));
        assert_eq!(Reader::new(&[3, b'a']).str8(Field::Key), Err(PayloadError::Truncated(Field::Key)));
    }

    #[test]
    fn bytes16_checks_the_limit_before_reading() {
        let mut reader = Reader::new(&[0x01, 0x00]);
        assert_eq!(
            reader.bytes16(Field::Aad, 10),
            Err(PayloadError::TooLarge { field: Field::Aad, len: 256, max: 10 })
        );
    }

    #[test]
    fn put_str8_refuses_what_does_not_fit() {
        let mut out = Vec::new();
        assert_eq!(put_str8(&mut out, Field::Key, ""), Err(EncodeError::Empty(Field::Key)));
        let long = "x".repeat(256);
        assert!(matches!(put_str8(&mut out, Field::Key, &long), Err(EncodeError::FieldTooLong { .. })));
    }
}
