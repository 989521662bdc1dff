//! The origin: the one authority for every room.
//!
//! - [`rules`]: the room rules as a sans-IO state machine — PK battles,
//!   co-host seats, gifts and timed engagement events. It takes `now` with
//!   every input, reads no clock and does no IO; the same inputs at the same
//!   times give the same events, byte for byte.
//!
//! What it deliberately does not do: decide anything outside the rules (a
//! relay checks tokens; the origin trusts the relay's verified actor), or
//! keep a second copy of room state (every change is an event applied with
//! [`protocol::RoomState::apply`]).

pub mod rules;
