//! What can go wrong in cluster mode.

use protocol::codec::CodecError;
use protocol::RoomId;

/// What can go wrong in cluster mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to NATS failed.
    #[error("cluster: cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// Creating or opening the stream or the bucket failed.
    #[error("cluster: cannot set up {what}: {reason}")]
    Setup {
        /// The stream or bucket.
        what: String,
        /// Why.
        reason: String,
    },
    /// The room's log has moved on: another node appended (it holds the
    /// room now). The room must be dropped.
    #[error(
        "cluster: {room}'s log was written by another node (expected last sequence {expected})"
    )]
    Fenced {
        /// The room.
        room: RoomId,
        /// The sequence this node expected to be last.
        expected: u64,
    },
    /// The room's log holds an epoch later than the one this node won the
    /// room at: another node won it since. The room must be dropped.
    #[error("cluster: {room} was won by another node since (epoch {newer} in its log)")]
    Deposed {
        /// The room.
        room: RoomId,
        /// The later epoch found.
        newer: u64,
    },
    /// This node does not hold the room's writer (never acquired, or dropped).
    #[error("cluster: this node does not own {0}")]
    NotOwner(RoomId),
    /// A JetStream request failed (timeout, no responders, server error):
    /// whether the append happened is unknown, so the room is dropped and
    /// rebuilt from its log before it is served again.
    #[error("cluster: {op} failed for {room}: {reason}")]
    Request {
        /// What was being done.
        op: &'static str,
        /// The room.
        room: RoomId,
        /// Why.
        reason: String,
    },
    /// A log message does not decode (written by an incompatible version).
    #[error("cluster: undecodable entry {seq} in {room}'s log: {source}")]
    Decode {
        /// The room.
        room: RoomId,
        /// Its stream sequence.
        seq: u64,
        /// The cause.
        #[source]
        source: CodecError,
    },
    /// A record could not be encoded.
    #[error("cluster: cannot encode an entry: {0}")]
    Encode(#[source] CodecError),
    /// The lease bucket said something unexpected.
    #[error("cluster: lease bucket: {0}")]
    Bucket(String),
}
