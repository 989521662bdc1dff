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
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line, with the fields of every enclosing span) for a log
    /// pipeline. `RUST_LOG` filters them (default `info`).
    #[arg(long, value_enum, default_value_t = ops::LogFormat::Text)]
    log_format: ops::LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ops::log::init(args.log_format, "info");
    let config = origin::Config::load(args.config.as_deref()).context("loading configuration")?;
    ops::runtime::build(config.threads)
        .context("starting the tokio runtime")?
        .block_on(run(config))
}

async fn run(config: origin::Config) -> anyhow::Result<()> {
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
