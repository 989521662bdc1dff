//! `origin`: run the room authority.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The Ringside origin: the one authority for every room.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (RINGSIDE_ORIGIN_* variables override it).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let config = origin::Config::load(args.config.as_deref()).context("loading configuration")?;
    let origin = origin::Origin::start(config)
        .await
        .context("starting the origin")?;
    origin
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("shutting down")
}
