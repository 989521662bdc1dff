//! `testbed demo` (being written).

/// Options of `testbed demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run the demo.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
