//! Every wire message, one enum per direction of each hop.
//!
//! ```text
//! client ──ClientMsg──► relay ──UpMsg────► origin
//! client ◄─ServerMsg─── relay ◄─DownMsg─── origin
//! ```
//!
//! Each message knows its [`Class`](crate::Class), which orders send queues
//! and decides what a lost datagram costs.

mod client;
mod downstream;
mod error;
mod server;
mod upstream;

pub use client::{ack_bucket, AckCounts, ActionMsg, ClientMsg, Hello, Report, ACK_BUCKETS_US};
pub use downstream::DownMsg;
pub use error::ErrorCode;
pub use server::{ServerMsg, Welcome};
pub use upstream::{Actor, UpMsg};

/// The protocol version spoken by this build; a peer with another version is
/// refused with [`ErrorCode::Version`].
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN a client uses towards a relay.
pub const ALPN_CLIENT: &[u8] = b"ringside-client/1";
/// ALPN a relay uses towards the origin.
pub const ALPN_RELAY: &[u8] = b"ringside-relay/1";
