//! Ringside testbed: what a network engineer runs to see how Ringside behaves
//! on bad networks.
//!
//! What it does:
//!
//! - [`impair`] — a pure, seeded impairment engine: loss (independent and
//!   Gilbert–Elliott bursts), delay with jitter, reordering, duplication,
//!   rate limits with a drop-tail queue, and blackholes. It takes `now` as an
//!   argument, reads no clock and does no IO, so a seed replays exactly.
//! - [`link`] — a UDP proxy that puts the engine in front of any UDP service
//!   (QUIC included), in process ([`link::spawn_link`]) or as
//!   `testbed link` on the command line.
//! - [`attack`] — `testbed attack`: one relay under each abuse while
//!   honest clients play, its memory and CPU, how attackers were stopped.
//! - [`scrape`] — reading a part's `/metrics` as an operator's tools do.
//! - [`topology`] — a whole Ringside deployment in one process (origin,
//!   relays, clients with tokens), for the demo, the benchmark, scenarios and
//!   the integration tests.
//! - [`scenario`] — `testbed run`: a scenario file played on a whole
//!   deployment behind impaired links, in four rooms: [`scenario::spec`]
//!   (the file, parsed and checked), [`scenario::run`](mod@scenario::run)
//!   (the deployment, the crowd, the timeline, the recording),
//!   [`scenario::verdict`] (figures, invariants, release gates) and
//!   [`scenario::report`] (summary, `report.json` with serde, SVG charts).
//! - [`bench`](mod@bench) — `testbed bench`: latency floors and each hop measured with
//!   real process hops, one sampling loop ([`bench::stats::Sampler`]) for
//!   every latency run, `--json` derived with serde.
//!
//! What it does not do: impair TCP or anything below UDP (the kernel here has
//! no netem; this is user space), look inside packets (it never parses QUIC),
//! or emulate CPU and clock effects.
//!
//! The command-line front end lives in `src/main.rs` and `src/cli/`, outside
//! this library.

pub mod attack;
pub mod bench;
pub mod impair;
pub mod link;
pub mod scenario;
pub mod scrape;
pub mod topology;
