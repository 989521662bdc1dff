//! The Ringside client SDK: what an app links to take part in live rooms.
//!
//! ```no_run
//! # async fn demo(token: Vec<u8>, cert_pem: &str) -> Result<(), client_sdk::Error> {
//! use client_sdk::Client;
//! use protocol::{GiftId, RoomId};
//!
//! let client = Client::builder()
//!     .relay("127.0.0.1:4700".parse().unwrap())
//!     .token(token)
//!     .trust_pem(cert_pem)?
//!     .connect()
//!     .await?;
//! let room = client.join(RoomId(1)).await?;
//! let acked = room.gift(GiftId(3), 1).await?;
//! println!("{:?} in {:?}; battle: {:?}", acked.outcome, acked.latency, room.state().battle);
//! # Ok(()) }
//! ```
//!
//! It picks the relay with the lowest measured RTT, joins rooms, mirrors
//! their state with the same `apply` the origin uses, sends actions
//! (datagrams first, the reliable stream as fallback) and resolves each with
//! its authoritative outcome, keeps a clock synchronised to the origin, and
//! moves to another relay by itself when its relay dies or drains — resuming
//! without losing or repeating anything.
//!
//! What it deliberately does not do: decide anything (the origin does), or
//! hide an outcome: a rejected action resolves with its reason, one the
//! origin can no longer tell about resolves as [`Outcome::Unknown`] (never
//! as a failure), and every action resolves — by its deadline at the
//! latest, with an error naming its id ([`Error::action`]). Over the user's
//! rate, it waits as the relay says and tries again; with a
//! [`TokenProvider`] the session outlives its tokens.
//!
//! The decisions are pure code that takes `now` and does no IO: the
//! [`session`] (which relay, moves and resume, what to send when, pings,
//! rejoins, token renewals, reports), built of [`mirror`] (state, gaps,
//! resyncs), [`retry`] (when and how to send again, pacing, deadlines),
//! [`token`] (when to renew), [`report`] (what the client tells its relay
//! about its own experience, for the operators' metrics) and [`time`]
//! (local time is `std::time::Instant`; [`time::OriginEstimate`], the
//! estimate of origin time). One task per client drives it: it moves bytes
//! and timers and nothing else, and is the only part that reads the clock.
//!
//! Module map (one file each; `session/` is a folder):
//! - `lib.rs`: this map and the public exports.
//! - `client.rs`: the app-facing API: `Client`, `ClientBuilder`, `Room`; the first connection (probe, rank, dial).
//! - `config.rs`: `Config`, the client settings.
//! - `event.rs`: what the app hears: `ClientEvent`, `Acked`, `RelayInfo`, `Continuity`, `Stats`.
//! - `error.rs`: `Error`, the one error type.
//! - `outcome.rs`: `Outcome`, an action's outcome as an app should read it.
//! - `shared.rs`: what the driver task and the handles share (counters, channels, origin-time view).
//! - `driver.rs`: the task: selects over requests, connections, a connect, a token fetch and the session's timer.
//! - `conn.rs`: QUIC connections to relays: dial, hello/welcome, reader tasks.
//! - `session/`: the network-free session state machine (see its docs for its files).
//! - `mirror.rs`: a room's mirrored state, gaps and resyncs.
//! - `retry.rs`: when and how an action goes (again): copies, fallback, window, pacing, deadlines.
//! - `report.rs`: the periodic report of ack times and clock error.
//! - `token.rs`: the token provider and when to renew.
//! - `time.rs`: local time (`std::time::Instant`, as in the relay) and `OriginEstimate` (the SDK's estimate of origin time).

mod client;
mod config;
mod conn;
mod driver;
mod error;
mod event;
pub mod mirror;
mod outcome;
pub mod report;
pub mod retry;
pub mod session;
mod shared;
pub mod time;
pub mod token;

pub use client::{Client, ClientBuilder, Room};
pub use config::Config;
pub use error::Error;
pub use event::{Acked, ClientEvent, Continuity, RelayInfo, Stats};
pub use mirror::Update;
pub use outcome::Outcome;
pub use protocol;
pub use token::TokenProvider;
