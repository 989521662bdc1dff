//! The relay: a regional edge between clients and the origin.
//!
//! It terminates client QUIC connections and checks their tokens
//! (`conn`), keeps one upstream connection to the origin for all rooms
//! ([`upstream`]) — or, in cluster mode, one to each origin node, each
//! room's traffic routed to the node serving it ([`route`]) — and in between runs the [`hub`]: which client follows which
//! room, a cache per room (latest state plus a ring of recent events,
//! [`cache`]) that serves joins and gap repairs without a trip to the origin,
//! and the actions waiting for their authoritative outcome. Each client's
//! outgoing traffic goes through a [`sched`]uler that orders it by class,
//! packs it into datagrams, sheds ambient traffic first under congestion and
//! sends critical messages twice.
//!
//! What it deliberately does not do: decide anything about a room, or ack an
//! action itself. Outcomes come from the origin; while the origin is out of
//! reach, actions wait and clients are told the room is degraded.
//!
//! What the operator sees is in [`metrics`] (Prometheus, served on
//! `metrics_listen` with `/healthz` and `/readyz`).
//!
//! Local time is [`std::time::Instant`] throughout (the hub, the scheduler,
//! admission); the relay's estimate of the origin's time is
//! [`origin_estimate::OriginEstimate`].
//!
//! # Module map
//! Pure (take `now`, do no IO):
//! - `admission.rs`: who may connect, act and ask, and how often.
//! - `cache.rs`: one room's latest state and ring of recent events.
//! - `sched.rs`: one client's datagram scheduler (classes, shedding, copies).
//! - `linger.rs`: when a client's writer is woken: at once for a quiet room
//!   or an answer, once per window for a busy room (events batched).
//! - `hub/mod.rs`: the hub's contract and invariants; the files below.
//! - `hub/out.rs`: what the hub hands its driver, and message encodings.
//! - `hub/state.rs`: the hub's settings and state per room, client, action.
//! - `hub/members.rs`: clients saying hello (and resuming), joining, leaving.
//! - `hub/serve.rs`: joins, resyncs and fan-out served from the cache; heads.
//! - `hub/actions.rs`: actions waiting for the origin, acks, resends.
//! - `hub/reconcile.rs`: what the origin must be told; the link down and up.
//! - `hub/timers.rs`: `poll_timeout` / `handle_timeout` (heads, resends).
//! - `hub/tests/`: the hub on a virtual clock (`mod.rs` harness and bounds,
//!   `timers.rs`, `stories.rs`: resume, gap repair, goaway, link back,
//!   a room re-homed).
//! - `route/mod.rs`: cluster mode's routing: room → origin node, moves,
//!   retries with backoff, redirected actions resent or held (bounded);
//!   `route/tests.rs` its stories on a virtual clock.
//!
//! Drivers and glue (IO):
//! - `server.rs`: starts the relay's endpoints and tasks; drain, stop, kill.
//! - `hub_driver.rs`: the one task owning the hub: inputs, timers, outputs.
//! - `shared.rs`: what every connection task shares.
//! - `queue.rs`: one client's byte-bounded queue from the hub to its writer.
//! - `conn/mod.rs`: one client connection: handshake, hello, token, welcome.
//! - `conn/read.rs`: what the client sends, checked and handed to the hub.
//! - `conn/write.rs`: the hub's outputs to the client (datagrams, streams).
//! - `conn/close.rs`: close codes for errors, strikes for abuse.
//! - `upstream.rs`: the link to the origin, or to one origin node
//!   (reconnects, pings).
//! - `cluster/mod.rs`: cluster mode: one link per origin node and the task
//!   owning the router between them and the hub; `cluster/tests.rs` runs
//!   them against fake origin nodes on loopback.
//! - `origin_estimate.rs`: the relay's estimate of origin time.
//! - `config.rs`: configuration (TOML and environment).
//! - `metrics.rs`: what the operator sees.
//! - `main.rs`: the `relay` binary: loads config and runs, or mints a token.

pub mod admission;
pub mod cache;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod conn;
pub mod hub;
pub(crate) mod hub_driver;
pub mod linger;
pub mod metrics;
pub mod origin_estimate;
pub(crate) mod queue;
pub mod route;
pub mod sched;
pub mod server;
pub(crate) mod shared;
pub mod upstream;

pub use admission::{Bucket, Limits};
pub use config::Config;
pub use server::{Error, Relay};
