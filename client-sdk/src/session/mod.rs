//! The client's session, as a network-free state machine (quinn-proto's
//! shape): it decides everything — which relay, when to move, what to send
//! again, when to ping, rejoin, resync, renew the token and report — and
//! does no IO. It never reads a clock: every input takes `now`, a
//! [`std::time::Instant`] (see [`crate::time`]).
//!
//! The driver (`driver.rs`, a task per client) owns the sockets, the streams, the token
//! provider's future and one timer, and loops:
//!
//! 1. feed what happened: [`Session::handle_command`] (the app),
//!    [`Session::handle_msg`] / [`Session::handle_closed`] (a connection),
//!    [`Session::handle_connected`] (a connection attempt's result),
//!    [`Session::handle_standby_connected`] (a standby attempt's),
//!    [`Session::handle_token`] (the provider's answer), then
//!    [`Session::handle_timeout`] (what fell due);
//! 2. drain [`Session::poll_transmit`] (messages to send, as a datagram or
//!    on the control stream, and orders: connect, close, fetch a token) and
//!    then [`Session::poll_event`] (answers to the app's waiters, room
//!    updates, client events), in that order;
//! 3. sleep until [`Session::poll_timeout`] or the next input.
//!
//! Connections are named by a generation number (`gen`): the session orders
//! [`Transmit::Connect`] with a fresh one and the driver reports its result
//! under it; messages from a connection the session has let go are ignored.
//!
//! The pure parts it is made of: [`Mirror`](crate::mirror::Mirror) (a
//! room's state, gaps, resyncs), [`Retry`](crate::retry::Retry) (when and
//! how actions go again, pacing, deadlines),
//! [`OriginEstimate`](crate::time::OriginEstimate) (origin time),
//! [`Reporter`](crate::report::Reporter) (the periodic report) and
//! [`crate::token`] (when to renew).
//!
//! Files: `io.rs` (the inputs' and outputs' types), `state.rs` (what the
//! session holds, its start and its `poll_*` outputs), `app.rs` (commands
//! and the relay's messages), `timers.rs` (what falls due), `moves.rs`
//! (relay moves, resume, tokens), `standby.rs` (the warm standby connection
//! that hears of the live relay's death and is resumed on without a
//! handshake), `warm.rs` (the standby's own state), `tokens.rs` (the
//! token and its renewal).

mod app;
mod io;
mod moves;
mod standby;
mod state;
#[cfg(test)]
mod tests;
mod timers;
mod tokens;
mod warm;

pub use io::{Command, Event, Link, Setup, Transmit};
pub use state::{Session, MAX_IN_FLIGHT};
