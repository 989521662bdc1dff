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
//! - [`cluster`] — cluster mode (issue 12): a NATS JetStream cluster of
//!   child nats-servers, origin nodes on it, their failures (node killed,
//!   drained, partitioned from NATS; NATS server killed) and the check that
//!   no room ever had two writers.
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
//!
//! # Module map
//! - `impair/`: `mod.rs` the engine; `loss.rs` Gilbert–Elliott state;
//!   `rate.rs` the bottleneck queue; `rng.rs` the seeded PRNG; `profile.rs`
//!   the serde form of an impairment; `counters.rs` what it did.
//! - `link/`: `mod.rs` the proxy; `driver.rs` its task; `session.rs`
//!   NAT-style sessions; `held.rs` packets waiting; `socket.rs` sockets;
//!   `stats.rs` counters.
//! - `topology.rs`: an origin (or origin nodes in cluster mode), relays
//!   and clients in one process.
//! - `cluster/`: cluster mode's parts (`mod.rs` has their map): `nats.rs`
//!   the NATS cluster launcher; `proxy.rs` the cuttable TCP proxy between a
//!   node and NATS; `nodes.rs` the origin nodes and their failures;
//!   `logs.rs` the room logs read back; `writers.rs` the two-writer check
//!   and per-room pauses.
//! - `scrape.rs`: one GET of `/metrics`, a series' value, a quantile.
//! - `scenario/spec/`: `file.rs` the TOML as written; `check.rs` one
//!   conversion per section; `cluster.rs` `[cluster]`, the cluster steps
//!   and `pk` pairs; `types.rs` the checked scenario; `gate.rs` the
//!   `[gates]`; `error.rs` why a file was refused.
//! - `scenario/run/`: `driver.rs` one run; `net.rs` its network; `paths.rs`
//!   its links over time; `crowd.rs` its clients; `timeline.rs` its steps;
//!   `cluster.rs` the cluster steps played and the room logs judged;
//!   `record.rs` the evidence; `recorder.rs` who writes it; `progress.rs`
//!   the progress line.
//! - `scenario/verdict/`: `analysis.rs` figures; `invariants.rs` what must
//!   hold; `gates.rs` release gates judged; `stats.rs` percentiles.
//! - `scenario/report/`: `contents.rs` what a report holds; `summary.rs` the
//!   terminal table; `json.rs` `report.json`; `charts.rs` and `svg.rs` the
//!   pictures.
//! - `bench/`: `run.rs` the phases; `servers.rs` and `child.rs` the server
//!   processes; `echo.rs` the quinn floor; `probe.rs` one-hop clients;
//!   `loadgen.rs` the viewers, `stages.rs` the growing audience, `fanout.rs`
//!   the sender and the reports; `cluster.rs` `--cluster` (cluster mode
//!   beside the embedded origin); `stats.rs` the one sampling loop; `sys.rs`
//!   memory, CPU, the disk's fdatasync; `json.rs` `--json`.
//! - `attack/`: `plan.rs` what runs; `run.rs` the phases; `servers.rs` the
//!   processes; `honest.rs` the honest crowd; `hostile.rs` what attackers
//!   share; `attacks/` the abuses (`kit.rs`, `streams.rs`, `messages.rs`,
//!   `refused.rs`, `transport.rs`); `remote.rs` the attackers' process;
//!   `aioquic.rs` the non-quinn client; `meter.rs` memory and CPU sampling;
//!   `report.rs` the figures and verdict; `render.rs` the text;
//!   `secrets.rs` per-run secrets.
//! - `main.rs` and `cli/`: one file per subcommand (`demo`, `bench` with
//!   `bench_report.rs` its printed report and `bench_cluster.rs` for
//!   `--cluster`,
//!   `failover`, `run`, `attack`, `link`, `serve`).

pub mod attack;
pub mod bench;
pub mod cluster;
pub mod impair;
pub mod link;
pub mod scenario;
pub mod scrape;
pub mod topology;
