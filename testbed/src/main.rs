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
    // A proxy alone runs on one thread: it does little work per packet, and
    // every hop between threads costs a ~30 µs wake-up on these machines
    // (MEASURED.md). Whole topologies use every core.
    let runtime = if cli.single_threaded() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .context("starting the tokio runtime")?;
    runtime.block_on(cli::run(cli))
}
