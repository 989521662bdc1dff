//! The origin: the one authority for every room.
//!
//! - [`rules`]: the room rules as a sans-IO state machine — PK battles,
//!   co-host seats, gifts and timed engagement events. It takes `now` with
//!   every input, reads no clock and does no IO; the same inputs at the same
//!   times give the same events, byte for byte.
//! - [`wal`]: the write-ahead log: an ack means durable; group commit makes
//!   durability cheap; replay rebuilds every room after a crash.
//! - [`server`]: the QUIC server for relays: one task runs the rules, a
//!   commit thread makes their records durable, a publisher fans committed
//!   events out and routes acks.
//! - [`metrics`] and [`kpi`]: what operators scrape (`metrics_listen`):
//!   the interaction KPIs only the authority sees (starts, completions,
//!   gifts by window, conversion, retention) and the log's and rooms'
//!   operations figures.
//!
//! Limits it holds on its own, whatever relays let through: only a host (or
//! operator) opens a room, and at most `rules.max_rooms` are live; idle rooms
//! leave memory for a per-room archive and come back on demand; the id
//! memory is bounded in bytes, per user and in all, and a forgotten session
//! answers `Stale`, never `New`; a per-user action rate backstop answers
//! `Throttled` without deciding. See [`rules`] for each argument.
//!
//! What it deliberately does not do: talk to clients (relays do, and check
//! their tokens; the origin trusts the actor a relay verified), or keep a
//! second way to compute state (every change is an event applied with
//! [`protocol::RoomState::apply`]).

pub mod clock;
pub mod config;
pub mod kpi;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod wal;

pub use config::Config;
pub use server::{Error, Origin};
