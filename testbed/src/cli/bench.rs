//! `testbed bench` (being written).

/// Options of `testbed bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run the benchmark.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
