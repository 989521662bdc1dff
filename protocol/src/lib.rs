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
//!
//! - with the `net` feature, **the QUIC plumbing** every process shares
//!   ([`net`]: TLS, endpoints, tuned transport, framed stream IO) and
//!   **signed tokens** ([`token`]) and the **secrets** they are signed with
//!   ([`secret`]: inline, from files, or generated for local runs).
//!
//! What it deliberately does not do: decide anything (the origin's rules
//! decide which events an action makes), keep state between calls. Apart from
//! [`net`], everything here is plain data and pure functions.

pub mod class;
pub mod codec;
pub mod fuzzing;
pub mod id;
pub mod message;
#[cfg(feature = "net")]
pub mod net;
pub mod room;
#[cfg(feature = "net")]
pub mod secret;
pub mod time;
#[cfg(feature = "net")]
pub mod token;

pub use class::Class;
pub use id::{ActionId, BattleId, ChallengeId, GiftId, RoomId, Seq, SessionId, UserId};
pub use room::{Action, Event, EventKind, Outcome, Reason, RoomState};
pub use time::ServerTime;
