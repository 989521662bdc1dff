use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::payload::{decode, encode, CodecError, MAX_FRAME};

/// Bytes of the length prefix in front of every stream frame.
pub const FRAME_HEADER: usize = 4;

/// Append `msg` to `out` as one length-prefixed frame.
pub fn write_frame<M: Serialize>(msg: &M, out: &mut BytesMut) -> Result<(), CodecError> {
    let payload = encode(msg)?;
    let len = payload.len();
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    out.reserve(FRAME_HEADER + len);
    // `len <= MAX_FRAME` fits in a u32.
    out.put_u32(len as u32);
    out.extend_from_slice(&payload);
    Ok(())
}

/// The payload length a frame header announces, refused if over the limit.
pub fn frame_len(header: [u8; FRAME_HEADER]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    Ok(len)
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
///
/// Memory stays bounded by one frame plus the piece last pushed: a header
/// that announces more than [`MAX_FRAME`] is an error at once.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes as they arrive.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn decode<M: DeserializeOwned>(&mut self) -> Result<Option<M>, CodecError> {
        let Some(header) = self.buf.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        let mut h = [0u8; FRAME_HEADER];
        h.copy_from_slice(header);
        let len = frame_len(h)?;
        if self.buf.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER);
        let body = self.buf.split_to(len);
        decode(&body).map(Some)
    }
}
