//! What the hub hands its driver: outputs for client connections, and the
//! encodings of the messages it answers with.

use bytes::{Bytes, BytesMut};
use protocol::codec;
use protocol::message::{ErrorCode, ServerMsg};
use protocol::{Class, RoomId};

use crate::sched;

/// A client connection's number on this relay.
pub type ClientId = u64;

/// Something for one client connection to send.
#[derive(Debug, Clone)]
pub enum Out {
    /// A message for the datagram scheduler.
    Datagram(sched::Item),
    /// A frame for the control stream (reliable, ordered).
    Reliable(Bytes),
    /// A frame for a stream of its own (a snapshot of this room; a newer one
    /// replaces one still waiting to be sent).
    Snapshot(RoomId, Bytes),
    /// Close the connection.
    Close(ErrorCode, &'static str),
}

impl Out {
    /// Bytes this holds, for the per-client queue's byte bound.
    pub fn len(&self) -> usize {
        match self {
            Out::Datagram(item) => item.payload.len(),
            Out::Reliable(b) | Out::Snapshot(_, b) => b.len(),
            Out::Close(..) => 0,
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an output goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// To a client connection.
    Client(ClientId, Out),
}

/// A session-class answer to a client (an ack, a throttle): twice as
/// datagrams, and on the control stream too when the question came that way.
pub(crate) fn answer(msg: &ServerMsg, via_stream: bool) -> impl Iterator<Item = Out> {
    let datagram = Out::Datagram(sched::Item {
        class: Class::Session,
        payload: payload(msg),
        coalesce: None,
        copies: sched::Copies::Twice,
    });
    let reliable = via_stream.then(|| Out::Reliable(frame(msg)));
    std::iter::once(datagram).chain(reliable)
}

/// A message as one datagram payload.
pub(crate) fn payload(msg: &ServerMsg) -> Bytes {
    // Server messages are plain data; encoding cannot fail.
    Bytes::from(codec::encode(msg).unwrap_or_default())
}

/// A message as one control-stream frame.
pub(crate) fn frame(msg: &ServerMsg) -> Bytes {
    let mut b = BytesMut::new();
    if let Err(e) = codec::write_frame(msg, &mut b) {
        tracing::error!(error = %e, "cannot frame a message for a client");
    }
    b.freeze()
}
