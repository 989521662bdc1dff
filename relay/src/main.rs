//! `relay`: run a regional edge relay.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The Ringside relay: terminates clients, forwards to the origin, fans out.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (RINGSIDE_RELAY_* variables override it).
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
    let config = relay::Config::load(args.config.as_deref()).context("loading configuration")?;
    let relay = relay::Relay::start(config)
        .await
        .context("starting the relay")?;
    // SIGTERM or Ctrl-C: drain (clients move to the configured peers), then exit.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("draining");
    let left = relay.drain(Vec::new()).await;
    tracing::info!(left, "relay stopped");
    Ok(())
}
