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

pub mod class;
pub mod codec;
pub mod fuzzing;
pub mod id;
pub mod message;
pub mod room;
pub mod time;

pub use class::Class;
pub use id::{ActionId, BattleId, ChallengeId, GiftId, RoomId, Seq, SessionId, UserId};
pub use room::{Action, Event, EventKind, Outcome, Reason, RoomState};
pub use time::ServerTime;
