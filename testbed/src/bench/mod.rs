//! The machinery of `testbed bench`: latency floors and Ringside's own
//! paths measured on one machine, with every hop a real process hop.
//!
//! - [`child`] — server processes spawned from the testbed binary itself
//!   (hidden `serve-origin`, `serve-relay`, `serve-echo` subcommands), each
//!   announcing its bound address on stdout and killed when its guard drops.
//! - [`echo`] — a plain quinn datagram echo: the floor to compare against.
//! - [`probe`] — raw protocol clients that time one hop at a time: a client
//!   pinging the relay, a "relay" pinging the origin and sending it gifts.
//! - `servers` — the echo, origin and relay processes of one run.
//! - [`fanout`] — the viewers' tokens, the SDK sender's steady gifts and
//!   its acks, and the fan-out reports the stages fill.
//! - [`loadgen`] — the cheap audience: viewers that are not an SDK each,
//!   hundreds of QUIC connections per client endpoint.
//! - [`stages`] — the viewers' rows: fan-out, single gifts to many, memory
//!   per client, idle clients; [`audience`] runs them (and the NATS peer)
//!   in order, each a [`meter::Phase`].
//! - [`nats`] — `--peer nats`: the same fan-out through nats-server (how
//!   to install it is in that module's doc).
//! - [`cluster`](mod@cluster) — `--cluster`: durable acks and throughput in cluster mode
//!   (NATS JetStream, replicas 3) beside the embedded origin and the quinn
//!   floor, in process.
//! - [`targets`] — each figure beside its goal (the targets).
//! - [`meter`] — a phase's CPU per process, softirq and UDP counters.
//! - [`stats`] — histograms, and the one sampling loop ([`stats::Sampler`])
//!   every latency run goes through.
//! - [`json`] — `--json`: the report derived with serde.
//! - [`sys`] — what `/proc` says about processes, mounts and the disk.
//!
//! The orchestration (which process, which phase, what to print) lives in
//! [`run()`]; the command line in `src/cli/bench.rs`.

pub mod audience;
pub mod child;
pub mod cluster;
pub mod echo;
pub mod fanout;
pub mod json;
pub mod loadgen;
pub mod meter;
pub mod nats;
pub mod probe;
pub mod run;
mod servers;
pub mod stages;
pub mod stats;
pub mod sys;
pub mod targets;

use std::net::SocketAddr;

use anyhow::Context as _;
use net::rustls::pki_types::CertificateDer;
use net::{self, Tuning};

/// A fresh loopback endpoint and its QUIC connection to `addr`, trusting
/// `roots`, speaking `alpn` (`what` names the peer in errors). The endpoint
/// is returned so the caller can wait for it to go idle when done.
pub(crate) async fn dial(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
    alpn: &[u8],
    tuning: &Tuning,
    what: &str,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let endpoint = net::client_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), tuning)?;
    let cfg = net::client_config(roots, alpn, tuning)?;
    let conn = endpoint
        .connect_with(cfg, addr, "localhost")?
        .await
        .with_context(|| format!("connecting to the {what}"))?;
    Ok((endpoint, conn))
}

pub use run::{run, Plan, Report};
