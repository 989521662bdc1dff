//! Scenarios: a whole Ringside deployment on this machine, every path behind
//! an impaired link, clients that behave like an audience, a timeline of
//! battles and failures — and a report of what the users felt.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use testbed::scenario::{self, Mode, Options, Scenario};
//!
//! let s = Scenario::load("testbed/scenarios/loss-5pct-40ms.toml".as_ref())?;
//! let report = scenario::run(&s, &Mode::BOTH, &Options { progress: true }).await?;
//! print!("{}", report.summary());
//! report.write("target/testbed/loss-5pct-40ms".as_ref())?;
//! assert!(report.ok(), "{:?}", report.failures());
//! # Ok(()) }
//! ```
//!
//! # A run
//!
//! 1. **Network** (`net`): an origin; per region a relay and a link
//!    between it and the origin; per pair of regions a link from the one's
//!    clients to the other's relay (see [`run::paths`]: impairment is per link,
//!    so one region's clients share their access path's bursts and rate
//!    limit, each with its own session). A link's one-way delay is half its
//!    base RTT plus the profile's `delay_ms`. Each link's seed comes from the
//!    scenario seed and the link's name, so the same scenario and seed give
//!    every link the same sequence of decisions.
//! 2. **Clients** (`crowd`): a host per room, viewers and co-hosts, each a
//!    real SDK client offered its own region's relay first and the others
//!    after it (no RTT probing). In [`Mode::StreamOnly`] they are built with
//!    `datagrams(false)`: the baseline.
//! 3. **Time zero**: every client has joined. Viewers gift, chat and like
//!    (Poisson, seeded per user), co-hosts take and leave seats, until
//!    `duration_s`. The [`run::timeline`] plays battles, gift bursts, impairment
//!    changes and failures at their times.
//! 4. **Settling**: every action must get its outcome (30 s at most),
//!    battles close, clients converge to the origin (20 s at most).
//! 5. **Evidence**: each action's outcome, every event every client
//!    received, connection events, clock readings, each client's final
//!    mirror and the origin's rooms ([`run::record`]). From them, the figures
//!    ([`verdict::analysis`]) and the [`verdict::invariants`].
//!
//! With `[cluster]` (issue 12) the origin is NATS servers and origin nodes
//! ([`crate::cluster`]); the timeline can kill, drain or partition a node
//! and kill a NATS server, and after the run every room log is read back
//! from JetStream to check that no room ever had two writers and to time
//! how long each failure's rooms paused.
//!
//! `run` plays the modes one after the other, each on a fresh deployment.
//!
//! # What is measured
//!
//! - **Ack latency** per class (gift, chat, like, authority = PK and seat
//!   actions): the SDK's `Acked::latency`, from the app's call to the
//!   authoritative outcome.
//! - **Delivery latency**: from an event's origin time (`Event::at`) to its
//!   arrival in each client's mirror, read on the origin's clock (same
//!   machine, same monotonic clock: see [`run::record::RefClock`]). It includes
//!   the origin's group commit, both hops and any repair. Events a client
//!   got inside a snapshot are not samples. The arrival is stamped by a task
//!   watching the client's updates, so on a busy machine it includes that
//!   task's scheduling delay.
//! - **Timer drift**: every 500 ms during a battle, each client of its rooms
//!   `server_time() − origin now`; and for each client the origin time at
//!   which its countdown showed zero, minus `ends_at`.
//! - **Recovery** after each failure: when the last affected client
//!   resumed, and when delivery p99 was back under its pre-failure p99
//!   (see [`verdict::analysis::recovery`]).
//!
//! A scenario's `[gates]` put limits on some of these figures (see
//! [`verdict::gates`]); the report judges the datagram-first run against them and
//! `testbed run` fails when one is breached.
//!
//! # Layout
//!
//! Four rooms, each depending only on the ones before it:
//!
//! - [`spec`] — the file: parsing and checking the TOML (`[gates]`
//!   included) into a [`Scenario`]. Pure.
//! - [`run`](mod@run) — playing it: the deployment (`net`), the crowd (`crowd`),
//!   the [`run::timeline`] and its [`run::paths`], the [`run::driver`], and
//!   the [`run::record`] of what the users saw. The only async room.
//! - [`verdict`] — judging a run: its figures ([`verdict::analysis`]), the
//!   [`verdict::invariants`], the release [`verdict::gates`]. Pure.
//! - [`report`] — showing it: the summary text, `report.json` (serde), the
//!   SVG charts. Pure apart from [`Report::write`].

pub mod report;
pub mod run;
pub mod spec;
pub mod verdict;

pub use report::Report;
pub use run::driver::Options;
pub use run::record::Mode;
pub use spec::{Scenario, ScenarioError};

/// The scenario `testbed run` plays without a file: a short tour (two
/// regions, mild loss, a PK battle, a relay killed in the middle of it).
pub const DEFAULT_SCENARIO: &str = include_str!("../../scenarios/default.toml");

/// Play `s` once per mode (in order, each on a fresh deployment) and
/// report on all of them.
pub async fn run(s: &Scenario, modes: &[Mode], opts: &Options) -> anyhow::Result<Report> {
    let mut runs = Vec::with_capacity(modes.len());
    for mode in modes {
        let record = run::driver::run(s, *mode, opts)
            .await
            .map_err(|e| e.context(format!("{} run of {}", mode.label(), s.name)))?;
        runs.push(verdict::analysis::analyse(&record));
    }
    Ok(Report::new(s, runs))
}
