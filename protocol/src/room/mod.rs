//! The room model: state, actions, events and `apply`.
//!
//! The origin, the relay's cache and the SDK's mirror all hold a
//! [`RoomState`] and move it forward with the same [`RoomState::apply`], so a
//! snapshot at `seq` plus the events after it is exactly the origin's state.
//! There is never a second way to compute state.
//!
//! What is *decided* (whether an action is allowed, which events it makes)
//! lives in the origin's rules, not here: this module only records outcomes.

mod action;
mod apply;
mod event;
mod outcome;
mod state;

pub use action::{Action, Goal, Grant, SeatMode, MAX_CHAT_BYTES};
pub use apply::ApplyError;
pub use event::{ApplicationEnd, Event, EventKind, InviteEnd, PkInviteEnd, SeatLeaveReason};
pub use outcome::{Outcome, Reason};
pub use state::{
    Battle, BattlePhase, BattleResult, Challenge, Mute, PkInvite, RoomState, Seat, SeatInvite,
    Seats, MAX_SEATS,
};
