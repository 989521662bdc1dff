//! The machinery of `testbed attack`: one relay under abuse while honest
//! clients play, with the relay's memory and CPU read from `/proc`.
//!
//! The topology is the benchmark's: an origin and one relay, each a child
//! process spawned from the testbed binary ([`crate::bench::child`]), so the
//! relay's RSS and CPU are its own. In this process, on a runtime of their
//! own, 50 honest SDK clients (two hosts in a PK battle, viewers gifting at
//! a steady rate) play on the relay throughout; a baseline phase measures
//! their gift acks without attackers, then each attack runs for a few
//! seconds beside them with its own hostile connections (raw quinn, the
//! project's ALPN and codec, valid viewer tokens unless the attack is about
//! tokens), in a child process of their own ([`remote`]), so no attacker
//! task ever queues in front of an honest client's.
//!
//! - [`plan`] — what to run: the attacks by name, counts, bounds, seed.
//! - [`secrets`] — per-run random secrets and the tokens signed with them.
//! - [`servers`] — the origin and relay processes.
//! - [`honest`] — the honest crowd and its gift acks, by phase.
//! - [`hostile`] — what every attacker shares: dialing, hello, how a
//!   connection ended, the tally.
//! - [`attacks`] — the abuses themselves, one function each.
//! - [`remote`] — the attackers' own process (`serve-attack`) and how the
//!   run talks to it.
//! - [`meter`] — a sampler thread for the relay's and origin's RSS.
//! - [`aioquic`] — the non-quinn client (a Python script using aioquic).
//! - [`run()`] — the orchestration, phase by phase.
//! - [`report`] — what was measured and the invariants judged.
//! - `render` — the report as text ([`Report::render`]).
//!
//! What it does not do: attack the origin directly (only relays face the
//! internet), or spoof source addresses (attackers spread over
//! `127.0.0.0/8` instead, one address each, so per-address caps neither stop
//! them trivially nor catch the honest clients on `127.0.0.1`).

pub mod aioquic;
pub mod attacks;
pub mod honest;
pub mod hostile;
pub mod meter;
pub mod plan;
pub mod remote;
mod render;
pub mod report;
pub mod run;
pub mod secrets;
pub mod servers;

pub use plan::{Attack, Plan};
pub use report::Report;
pub use run::run;
