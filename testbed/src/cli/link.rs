//! `testbed link`: a UDP impairment proxy on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use testbed::impair::{LinkProfile, Profile};
use testbed::link::{spawn_link, LinkConfig, LinkStats};

/// Flags of `testbed link`. Impairment flags apply to both directions and
/// override the profile file; the file can say everything (see
/// `testbed/profiles/`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on for peers (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Address of the UDP service behind the link.
    #[arg(long)]
    upstream: SocketAddr,
    /// TOML profile: top-level keys apply both ways, [up] / [down] override.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Independent loss probability, each way (0.05 = 5%).
    #[arg(long)]
    loss: Option<f64>,
    /// One-way base delay in milliseconds, each way.
    #[arg(long, value_name = "MS")]
    delay_ms: Option<f64>,
    /// Jitter in milliseconds (uniform ±MS unless the profile says normal).
    #[arg(long, value_name = "MS")]
    jitter_ms: Option<f64>,
    /// Duplication probability, each way.
    #[arg(long)]
    duplicate: Option<f64>,
    /// Probability of holding a packet back so later ones overtake it.
    #[arg(long)]
    reorder: Option<f64>,
    /// Bottleneck rate in bits per second, each way (0: unlimited).
    #[arg(long, value_name = "BPS")]
    rate_bps: Option<u64>,
    /// Seed of every random decision: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print counters this often (0: only the final summary).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    stats_every_ms: u64,
    /// Close a peer's session after this long without traffic.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    session_idle_ms: u64,
    /// Most peers with an open session at once.
    #[arg(long, default_value_t = 1024)]
    max_sessions: usize,
}

impl Args {
    /// The profile: the file (or a perfect link), then the flags on top.
    fn link_profile(&self) -> anyhow::Result<LinkProfile> {
        let mut link = match &self.profile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading profile {}", path.display()))?;
                LinkProfile::from_toml(&text)
                    .with_context(|| format!("parsing profile {}", path.display()))?
            }
            None => LinkProfile::default(),
        };
        for profile in [&mut link.up, &mut link.down] {
            self.apply_flags(profile);
        }
        link.validate().context("invalid profile")?;
        Ok(link)
    }

    /// Overrides the fields given on the command line.
    fn apply_flags(&self, p: &mut Profile) {
        if let Some(v) = self.loss {
            p.loss = v;
        }
        if let Some(v) = self.delay_ms {
            p.delay_ms = v;
        }
        if let Some(v) = self.jitter_ms {
            p.jitter_ms = v;
        }
        if let Some(v) = self.duplicate {
            p.duplicate = v;
        }
        if let Some(v) = self.reorder {
            p.reorder = v;
        }
        if let Some(v) = self.rate_bps {
            p.rate_bps = v;
        }
    }
}

/// Runs the proxy until Ctrl-C (or SIGTERM), printing counters as it goes
/// and a summary at the end.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let profile = args.link_profile()?;
    let mut config = LinkConfig::new(args.listen, args.upstream).with_profile(profile);
    config.seed = args.seed;
    config.session_idle = Duration::from_millis(args.session_idle_ms);
    config.max_sessions = args.max_sessions;
    let handle = spawn_link(config).await?;
    println!(
        "link {} -> {} (seed {}); Ctrl-C to stop",
        handle.local_addr(),
        handle.upstream(),
        args.seed
    );

    let every = Duration::from_millis(args.stats_every_ms);
    let mut ticker = tokio::time::interval(if every.is_zero() {
        Duration::from_secs(1)
    } else {
        every
    });
    ticker.tick().await;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => {
                signal?;
                break;
            }
            _ = ticker.tick() => {
                if handle.is_finished() {
                    break;
                }
                if !every.is_zero() {
                    print_stats(handle.elapsed(), &handle.stats());
                }
            }
        }
    }
    let elapsed = handle.elapsed();
    let stats = handle.shutdown().await?;
    println!("final:");
    print_stats(elapsed, &stats);
    Ok(())
}

/// One block of counters.
fn print_stats(elapsed: Duration, stats: &LinkStats) {
    println!("[{:>8.1}s]\n{stats}", elapsed.as_secs_f64());
}

/// Resolves at Ctrl-C or, on Unix, SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("listening for Ctrl-C")
    }
}
