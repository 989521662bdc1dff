//! The subcommands. Add one by adding a variant to [`Command`] and a file
//! next to `link.rs`.

mod link;

use clap::{Parser, Subcommand};

/// Ringside testbed: impaired links, topologies, scripted failures, reports.
#[derive(Debug, Parser)]
#[command(name = "testbed", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a UDP impairment proxy in front of a UDP service.
    Link(link::Args),
}

/// Runs the chosen subcommand to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Link(args) => link::run(args).await,
    }
}
