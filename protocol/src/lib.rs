//! The language Ringside's client SDK, relays and origin speak.
//!
//! What it holds:
//! - **ids and time** ([`id`], [`time`]): newtypes, never bare integers;
//! - **the room model** ([`room`]): [`RoomState`], [`Action`], [`Event`], and
//!   [`RoomState::apply`], the one way state moves, shared by the origin, the
//!   relay's cache and the SDK's mirror;
//! - **wire messages** ([`message`]), one enum per direction of each hop, each
//!   knowing its priority [`Class`];
//! - **the codec** ([`codec`]): postcard payloads as length-prefixed stream
//!   frames or packed datagrams, with hard size limits checked before any
//!   allocation.
//! - **fuzz target bodies** ([`fuzzing`]) for every decoder here.
//!
//! The QUIC plumbing, tokens and secrets are the `net` crate's.
//!
//! What it deliberately does not do: decide anything (the origin's rules
//! decide which events an action makes), keep state between calls, or do IO:
//! everything here is plain data and pure functions.

//! # Module map
//! - `id.rs`, `time.rs`, `class.rs`: ids, the origin's time and clock
//!   samples, message classes.
//! - `room/state.rs`: a room's state; `room/action.rs`: what users ask;
//!   `room/event.rs`: what happened; `room/outcome.rs`: acks and reasons;
//!   `room/apply.rs`: `RoomState::apply`, the one way state moves.
//! - `message/client.rs`, `server.rs`, `upstream.rs`, `downstream.rs`: one
//!   enum per direction of each hop; `message/error.rs`: close codes.
//! - `placement.rs`: which origin node should serve a room (rendezvous
//!   hashing), the same on relays and origin nodes.
//! - `codec/mod.rs`: postcard payloads and limits; `codec/stream.rs`:
//!   length-prefixed frames; `codec/datagram.rs`: packed datagrams.
//! - `fuzzing.rs`: fuzz target bodies and the corpus replay.

pub mod class;
pub mod codec;
pub mod fuzzing;
pub mod id;
pub mod message;
pub mod placement;
pub mod room;
pub mod time;

pub use class::Class;
pub use id::{ActionId, BattleId, ChallengeId, GiftId, RoomId, Seq, SessionId, UserId};
pub use room::{Action, Event, EventKind, Outcome, Reason, RoomState};
pub use time::ServerTime;
