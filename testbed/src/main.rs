//! `testbed`: the Ringside testbed's command line.
//!
//! `main` only sets up logging and a runtime; each subcommand lives in its
//! own file under `src/cli/` and calls into the `testbed` library.

mod cli;

use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    ops::log::init(cli.log_format, cli.default_log_filter());
    // A proxy, the echo and the bench run on one thread: every hop between
    // threads costs a ~30 µs wake-up on these machines (MEASURED.md). An
    // origin or relay child runs on what its configuration says, as its own
    // binary does. Whole topologies in one process use every core.
    let runtime = ops::runtime::build(cli.threads()?).context("starting the tokio runtime")?;
    runtime.block_on(cli::run(cli))
}
