//! The subcommands. Add one by adding a variant to [`Command`] and a file
//! next to `link.rs`.

mod attack;
mod bench;
mod bench_cluster;
mod bench_report;
mod demo;
mod failover;
mod link;
mod run;
mod serve;

use clap::{Parser, Subcommand};

/// Ringside testbed: impaired links, topologies, scripted failures, reports.
#[derive(Debug, Parser)]
#[command(name = "testbed", version, about)]
pub struct Cli {
    /// How log lines are written to stderr (`RUST_LOG` filters them).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: ops::LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a UDP impairment proxy in front of a UDP service.
    Link(link::Args),
    /// A whole local topology (origin, two relays, clients) playing a PK
    /// battle with gifts and a co-host seat, narrated as it happens.
    Demo(demo::Args),
    /// Measure ack round trips, fan-out latency and throughput, beside a
    /// plain quinn echo on the same machine.
    Bench(bench::Args),
    /// Kill a relay under its clients and measure how long each takes to
    /// be resumed on another relay.
    Failover(failover::Args),
    /// Run a scenario: a topology behind impaired links, a timeline of
    /// battles, gifts and failures, invariants and release gates checked, a
    /// report written. Exits non-zero if an invariant fails or a gate is
    /// breached.
    Run(run::Args),
    /// Attack one relay with each abuse (stream exhaustion, floods, slow
    /// readers, junk, handshake floods, ...) while honest clients play a
    /// battle; print its memory, CPU and how each attacker was stopped;
    /// fail if an honest gift is lost, the relay dies or passes its bound.
    Attack(attack::Args),
    /// Run an origin for `bench` (configured by RINGSIDE_ORIGIN_*; prints
    /// `listening ADDR`; stops when stdin closes).
    #[command(hide = true)]
    ServeOrigin(serve::OriginArgs),
    /// Run a relay for `bench` (configured by RINGSIDE_RELAY_*; prints
    /// `listening ADDR`; stops when stdin closes).
    #[command(hide = true)]
    ServeRelay(serve::RelayArgs),
    /// Run a quinn datagram echo for `bench` (prints `listening ADDR`; stops
    /// when stdin closes).
    #[command(hide = true)]
    ServeEcho(serve::EchoArgs),
    /// Run the attackers of one attack for `attack` (prints `ready`, starts
    /// at `go` on stdin, prints its tally at the end).
    #[command(hide = true)]
    ServeAttack(attack::ServeArgs),
}

impl Cli {
    /// Log filter when `RUST_LOG` is not set: commands that narrate or
    /// report keep the log to warnings so their own output stays readable.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Link(_) => "info",
            // A scenario injects failures on purpose: their warnings would
            // interleave with the report.
            Command::Run(_) => "error",
            _ => "warn",
        }
    }

    /// The threads of the runtime the subcommand runs on (`ops::runtime`).
    pub fn threads(&self) -> anyhow::Result<usize> {
        Ok(match &self.command {
            // The echo is the floor: one thread, no hops between threads.
            Command::Link(_) | Command::ServeEcho(_) | Command::Bench(_) => 1,
            Command::ServeRelay(args) => serve::relay_threads(args)?,
            Command::ServeOrigin(args) => serve::origin_threads(args)?,
            _ => 0,
        })
    }
}

/// Runs the chosen subcommand to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Link(args) => link::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::ServeOrigin(args) => serve::origin(args).await,
        Command::ServeRelay(args) => serve::relay(args).await,
        Command::ServeEcho(args) => serve::echo(args).await,
        Command::Failover(args) => failover::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Attack(args) => attack::run(args).await,
        Command::ServeAttack(args) => attack::serve(args).await,
    }
}
