//! The QUIC plumbing every Ringside process shares, apart from the wire
//! language (`protocol`):
//!
//! - `tls.rs`: identities (generated and kept for local runs, loaded from
//!   files for real ones) and certificates to trust;
//! - `transport.rs`: transport settings per role ([`Tuning`]), sockets with
//!   explicit buffers, endpoints;
//! - `frame.rs`: framed IO on streams and close codes;
//! - `error.rs`: [`NetError`];
//! - `plug.rs` (feature `fault`, for the testbed): a socket whose plug can
//!   be pulled, as a crashed host's or a partitioned network's;
//! - [`handshake`]: the relay-to-origin hello, written once;
//! - [`token`]: signed tokens, what they grant and what they are for;
//! - [`secret`]: the secrets tokens and cluster proofs are signed with
//!   (inline, from files, or generated for local runs);
//! - [`fuzzing`]: the token verifier's fuzz target body.
//!
//! What it deliberately does not do: decide anything about rooms, or know a
//! message beyond framing it.

mod error;
mod frame;
pub mod fuzzing;
pub mod handshake;
#[cfg(feature = "fault")]
mod plug;
pub mod secret;
mod tls;
pub mod token;
mod transport;

pub use error::NetError;
pub use frame::{close, close_code, read_frame, write_frame};
#[cfg(feature = "fault")]
pub use plug::Plug;
pub use tls::{load_certs, parse_certs, Identity, TlsFiles};
pub use transport::{client_config, client_endpoint, server_endpoint, udp_socket, Tuning};
#[cfg(feature = "fault")]
pub use transport::{client_endpoint_plugged, server_endpoint_plugged};

pub use quinn;
pub use rustls;
