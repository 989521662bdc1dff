//! The machinery of `testbed bench`: latency floors and Ringside's own
//! paths measured on one machine, with every hop a real process hop.
//!
//! - [`child`] — server processes spawned from the testbed binary itself
//!   (hidden `serve-origin`, `serve-relay`, `serve-echo` subcommands), each
//!   announcing its bound address on stdout and killed when its guard drops.
//! - [`echo`] — a plain quinn datagram echo: the floor to compare against.
//! - [`probe`] — raw protocol clients that time one hop at a time: a client
//!   pinging the relay, a "relay" pinging the origin and sending it gifts.
//! - [`fanout`] — many SDK clients in one room, a sender, and every
//!   delivery timed against its send.
//! - [`stats`], [`json`], [`sys`] — histograms, a small JSON writer, and
//!   what `/proc` says about processes, mounts and the disk.
//!
//! The orchestration (which process, which phase, what to print) lives in
//! [`run()`]; the command line in `src/cli/bench.rs`.

pub mod child;
pub mod echo;
pub mod fanout;
pub mod json;
pub mod probe;
pub mod run;
pub mod stats;
pub mod sys;

pub use run::{run, Plan, Report};
