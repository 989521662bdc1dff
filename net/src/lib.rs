//! The QUIC plumbing every Ringside process shares, apart from the wire
//! language (`protocol`):
//!
//! - `quic.rs`: TLS identities (generated and kept for local runs, loaded
//!   from files for real ones), tuned transport settings per role
//!   ([`Tuning`]), endpoints with explicit socket buffers, framed IO on
//!   streams, close codes, and the fault-injection [`Plug`];
//! - [`handshake`]: the relay-to-origin hello, written once;
//! - [`token`]: signed tokens, what they grant and what they are for;
//! - [`secret`]: the secrets tokens and cluster proofs are signed with
//!   (inline, from files, or generated for local runs);
//! - [`fuzzing`]: the token verifier's fuzz target body.
//!
//! What it deliberately does not do: decide anything about rooms, or know a
//! message beyond framing it.

pub mod fuzzing;
pub mod handshake;
mod quic;
pub mod secret;
pub mod token;

pub use quic::*;
