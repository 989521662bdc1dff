//! `testbed run SCENARIO.toml` (being written).

/// Options of `testbed run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run a scenario.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
