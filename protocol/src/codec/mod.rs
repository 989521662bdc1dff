//! The codec: postcard payloads, in two forms.
//!
//! - **Stream form** ([`write_frame`], [`FrameDecoder`]): a 4-byte big-endian
//!   length, then the payload. The length is checked against [`MAX_FRAME`]
//!   before a single byte of the body is buffered.
//! - **Datagram form** ([`Packer`], [`unpack`]): several small messages in
//!   one datagram, each prefixed by its length as a LEB128 varint, up to the
//!   datagram size the path allows.
//!
//! Decoding arbitrary bytes returns an error; it never panics, and it never
//! allocates more than the input justifies (postcard refuses a sequence length
//! larger than the bytes left, and every length here is checked first).

mod datagram;
mod payload;
mod stream;

pub use datagram::{entries, unpack, Entries, Packer};
pub use stream::{frame_len, write_frame, FrameDecoder, FRAME_HEADER};

pub use payload::{
    chunk_events, decode, encode, CodecError, DEFAULT_DATAGRAM, EVENTS_PER_FRAME_BYTES, MAX_FRAME,
};

#[cfg(test)]
mod tests;
