//! The relay: a regional edge between clients and the origin.
//!
//! It terminates client QUIC connections and checks their tokens
//! (`conn`), keeps one upstream connection to the origin for all rooms
//! ([`upstream`]), and in between runs the [`hub`]: which client follows which
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
//! Pure parts (`admission`, `cache`, `sched`, `hub`) take `now` and do no
//! IO; `server`, `conn` and `upstream` are the thin drivers around them.

pub mod admission;
pub mod cache;
pub mod config;
pub(crate) mod conn;
pub mod hub;
pub(crate) mod hub_driver;
pub mod metrics;
pub mod origin_clock;
pub(crate) mod queue;
pub mod sched;
pub mod server;
pub(crate) mod shared;
pub mod upstream;

pub use admission::{Bucket, Limits};
pub use config::Config;
pub use server::{Error, Relay};
