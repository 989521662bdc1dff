//! Hidden subcommands that run one server process for `testbed bench`:
//! `serve-origin`, `serve-relay` and `serve-echo`. Each binds, prints
//! `listening ADDR` on stdout, and runs until its stdin closes (the parent
//! is gone or asks it to stop), Ctrl-C or SIGTERM. The origin and relay load
//! their configuration exactly as their own binaries do (an optional TOML
//! file, then `RINGSIDE_ORIGIN_*` / `RINGSIDE_RELAY_*` variables), which is
//! how the parent configures them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use net::Identity;
use testbed::bench::child::{announce, stop_signal};

/// Options of `testbed serve-origin`.
#[derive(Debug, clap::Args)]
pub struct OriginArgs {
    /// TOML configuration file (RINGSIDE_ORIGIN_* variables override it).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Options of `testbed serve-relay`.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// TOML configuration file (RINGSIDE_RELAY_* variables override it).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// Options of `testbed serve-echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PEM certificate chain.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key.
    #[arg(long)]
    key: PathBuf,
}

/// The threads the origin's configuration asks for (`origin::Config::threads`).
pub fn origin_threads(args: &OriginArgs) -> anyhow::Result<usize> {
    let config = origin::Config::load(args.config.as_deref()).context("loading configuration")?;
    Ok(config.threads)
}

/// Run an origin until told to stop.
pub async fn origin(args: OriginArgs) -> anyhow::Result<()> {
    let config = origin::Config::load(args.config.as_deref()).context("loading configuration")?;
    let origin = origin::Origin::start(config)
        .await
        .context("starting the origin")?;
    announce(origin.addr());
    origin
        .serve_until(stop_signal())
        .await
        .context("shutting down")
}

/// Run a relay until told to stop.
/// The threads the relay's configuration asks for (`relay::Config::threads`).
pub fn relay_threads(args: &RelayArgs) -> anyhow::Result<usize> {
    let config = relay::Config::load(args.config.as_deref()).context("loading configuration")?;
    Ok(config.threads)
}

pub async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let config = relay::Config::load(args.config.as_deref()).context("loading configuration")?;
    let relay = relay::Relay::start(config)
        .await
        .context("starting the relay")?;
    announce(relay.addr());
    stop_signal().await;
    relay.shutdown().await;
    Ok(())
}

/// Run a quinn datagram echo until told to stop.
pub async fn echo(args: EchoArgs) -> anyhow::Result<()> {
    let identity = Identity::from_pem_files(&args.cert, &args.key).context("loading TLS files")?;
    testbed::bench::echo::serve(args.listen, &identity, announce, stop_signal()).await
}
