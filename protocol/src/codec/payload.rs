//! One message as bytes (postcard), the limits every transport shares, and
//! what can go wrong decoding. Frames (`stream.rs`) and datagrams
//! (`datagram.rs`) are built from these.

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// The longest stream frame payload, in bytes. Larger frames are refused
/// before anything is allocated for them.
pub const MAX_FRAME: usize = 64 * 1024;

/// A conservative datagram payload size that every QUIC path carries.
pub const DEFAULT_DATAGRAM: usize = 1150;

/// What can go wrong turning bytes into messages or back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// A message or frame is longer than the limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The bytes end in the middle of a message.
    #[error("truncated message")]
    Truncated,
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
            e => CodecError::Malformed(e.to_string()),
        }
    }
}

/// Split consecutive events into batches whose encoding stays well inside a
/// frame (`budget` bytes of events each), so a long backlog travels as
/// several frames instead of one too large to send.
pub fn chunk_events(events: Vec<crate::Event>, budget: usize) -> Vec<Vec<crate::Event>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for e in events {
        let len = postcard::experimental::serialized_size(&e).unwrap_or(budget);
        if !current.is_empty() && size + len > budget {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(e);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// Event bytes per frame when a backlog is split ([`chunk_events`]).
pub const EVENTS_PER_FRAME_BYTES: usize = MAX_FRAME / 2;

/// Encode one message as a bare payload.
pub fn encode<M: Serialize>(msg: &M) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_allocvec(msg)?)
}

/// Decode one bare payload; every byte must belong to the message.
pub fn decode<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, CodecError> {
    let (msg, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}
