//! `relay`: run a regional edge relay, or mint a token for local use.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use net::token::{to_hex, unix_now, Claims, Purpose, TokenKey};
use protocol::{RoomId, UserId};

/// The Ringside relay: terminates clients, forwards to the origin, fans out.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (RINGSIDE_RELAY_* variables override it).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// How log lines are written to stderr (`RUST_LOG` filters them).
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: ops::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Run,
    /// Print a client token (hex) signed with this relay's token secret (the
    /// one every local relay shares, generated on first use; see
    /// `token_secret_file`).
    MintToken {
        /// The user.
        #[arg(long)]
        user: u64,
        /// Rooms the user hosts (repeatable).
        #[arg(long)]
        host_of: Vec<u64>,
        /// Rooms the user may join (repeatable); any room if none is given.
        #[arg(long)]
        room: Vec<u64>,
        /// Platform staff.
        #[arg(long)]
        operator: bool,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ops::log::init(args.log_format, "info");
    let config = relay::Config::load(args.config.as_deref()).context("loading configuration")?;
    match args.command.unwrap_or(Command::Run) {
        Command::Run => ops::runtime::build(config.threads)
            .context("starting the tokio runtime")?
            .block_on(run(config)),
        Command::MintToken {
            user,
            host_of,
            room,
            operator,
            ttl_secs,
        } => {
            let claims = Claims {
                purpose: Purpose::Client,
                user: UserId(user),
                rooms: (!room.is_empty()).then(|| room.into_iter().map(RoomId).collect()),
                host_of: host_of.into_iter().map(RoomId).collect(),
                operator,
                expires: unix_now() + ttl_secs,
            };
            let secret = config.token_secret().context("the token secret")?;
            println!("{}", to_hex(&TokenKey::new(&secret).mint(&claims)));
            Ok(())
        }
    }
}

async fn run(config: relay::Config) -> anyhow::Result<()> {
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
