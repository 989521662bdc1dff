//! The relay's core (pure: takes `now`, does no IO): which clients follow
//! which rooms, each room's cache, the actions waiting for the origin, and
//! what to send where. The driver in `hub_driver.rs` feeds it inputs and
//! carries its outputs to client connections and the upstream link.
//!
//! Rules it keeps:
//! - it never invents an ack: an action's outcome comes from the origin (the
//!   one refusal of its own, `NoGrant`, is final: the token does not grant
//!   the room; an action over the rate limit is simply not forwarded, and
//!   the SDK sends it again after its timeout);
//! - while the origin is unreachable, actions wait here and are sent again
//!   when the link returns (the origin's id memory makes that safe), and
//!   again if an ack is overdue;
//! - an upstream subscription is held while at least one local client
//!   follows the room;
//! - nothing that changes room membership is ever dropped: the hub keeps
//!   what the origin *should* know (subscriptions, who is present where) and
//!   what it has been *told* on the current link, and [`Hub::poll_upstream`]
//!   yields the difference, one message at a time, as fast as the link
//!   takes them (backpressure, not a queue that overflows). A new link
//!   starts from nothing told, so reconnecting reconciles instead of
//!   replaying stale messages;
//! - every resource a client can make it hold is bounded: rooms followed per
//!   client, actions waiting per client and on the whole relay (past either,
//!   the action is answered `Throttled`); a client's waiting actions are
//!   dropped when it goes (the SDK sends them again when it resumes);
//! - a repeated join of a room the client already follows is answered once.
//!
//! How to drive it (quinn-proto's shape): inputs are `handle_*` methods,
//! each taking `now`; after each, take [`Hub::poll_output`] until `None`
//! (for client connections) and, while [`Hub::has_upstream`] and the link
//! has room, [`Hub::poll_upstream`] (for the origin); sleep until
//! [`Hub::poll_timeout`] and then call [`Hub::handle_timeout`]. Time is
//! [`std::time::Instant`]; the tests drive it on a virtual clock.
//!
//! Files: [`out`] what it hands the driver; `state` what it keeps;
//! `members` clients and the rooms they follow; `serve` joins, resyncs and
//! fan-out from the cache; `actions` actions waiting for the origin;
//! `reconcile` what the origin must be told, link down and up; `timers`
//! heads and resends as they fall due.

mod actions;
mod members;
pub mod out;
mod reconcile;
mod serve;
mod state;
#[cfg(test)]
mod tests;
mod timers;

pub(crate) use out::{answer, payload};
pub use out::{ClientId, Out, Output};
pub use state::{Hub, Settings};
