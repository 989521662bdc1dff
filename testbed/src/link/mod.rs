//! The UDP impairment proxy: put an impaired link in front of any UDP
//! service.
//!
//! ```text
//!  peer A ─┐                  ┌─ session socket A ─┐
//!  peer B ─┼─► listen socket ─┼─ session socket B ─┼─► upstream service
//!          │   [up engine]    └─ ... ◄─────────────┘
//!          └◄── [down engine] ◄──── replies
//! ```
//!
//! - Each distinct peer address gets its own upstream socket (a NAT-style
//!   session), so the upstream sees one client per peer and its replies go
//!   back to the right peer. Sessions close after
//!   [`LinkConfig::session_idle`] without traffic; at most
//!   [`LinkConfig::max_sessions`] are open, the least recently active making
//!   room for a new peer.
//! - Impairment is **per link**, not per session: one [`Impairment`] for
//!   everything going up and one for everything coming down, as on a path
//!   that all peers share — a rate limit is one bottleneck for all of them
//!   and a burst hits all of them. Their seeds are derived from
//!   [`LinkConfig::seed`] (see [`LinkConfig::seed`]).
//! - A delivered copy waits in a heap until its release time; a timer
//!   (`sleep_until` the earliest release) sends it. At most
//!   [`LinkConfig::max_held_packets`] / [`LinkConfig::max_held_bytes`] wait at
//!   once; beyond that copies are dropped and counted as `overflow`.
//! - Release times are met to tokio's timer resolution (about 1 ms, always
//!   late, never early).
//!
//! [`spawn_link`] starts a link in the current runtime and returns a
//! [`LinkHandle`] to watch it, change its profile and stop it.

mod driver;
mod held;
mod session;
mod socket;
mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::impair::{rng, Direction, Impairment, LinkProfile, Profile};
use driver::{Command, Driver, ProfileChange};
use held::Releases;
use session::Sessions;

pub use stats::{DirectionStats, LinkStats, SessionStats};

/// A UDP socket bound to `addr` with `buffer`-byte send and receive buffers
/// (capped by the kernel), as the link uses. For test servers and clients:
/// with the kernel's default buffer (about 208 KiB, some 250 small
/// datagrams) a burst released by a link can overflow the receiver.
/// Must be called inside a tokio runtime.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> anyhow::Result<tokio::net::UdpSocket> {
    socket::bind(addr, None, buffer)
}

/// Sub-stream of [`LinkConfig::seed`] for the up direction's engine.
const SEED_UP: u64 = 0x7570; // "up"
/// Sub-stream of [`LinkConfig::seed`] for the down direction's engine.
const SEED_DOWN: u64 = 0x646f_776e; // "down"

/// How to run a link. [`LinkConfig::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// Where peers send; port 0 picks a free port (see
    /// [`LinkHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The service behind the link.
    pub upstream: SocketAddr,
    /// What to do to packets each way.
    pub profile: LinkProfile,
    /// Base seed. The up engine is seeded with `derive_seed(seed, 0x7570)`
    /// and the down engine with `derive_seed(seed, 0x646f776e)` (see
    /// [`rng::derive_seed`]), so one number replays both directions.
    pub seed: u64,
    /// How long a session lives without a packet either way. Default 60 s.
    pub session_idle: Duration,
    /// Most sessions open at once. Default 1024.
    pub max_sessions: usize,
    /// Most packet copies waiting for release at once. Default 65 536.
    pub max_held_packets: usize,
    /// Most payload bytes waiting for release at once. Default 64 MiB.
    pub max_held_bytes: usize,
    /// Send and receive buffer size of every socket, capped by the kernel.
    /// Default 4 MiB (the kernel's 208 KiB default loses bursts).
    pub socket_buffer: usize,
}

impl LinkConfig {
    /// A perfect link from `listen` to `upstream`, with the defaults.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            listen,
            upstream,
            profile: LinkProfile::default(),
            seed: 1,
            session_idle: Duration::from_secs(60),
            max_sessions: 1024,
            max_held_packets: 65_536,
            max_held_bytes: 64 << 20,
            socket_buffer: 4 << 20,
        }
    }

    /// The same with `profile`.
    pub fn with_profile(self, profile: LinkProfile) -> Self {
        Self { profile, ..self }
    }
}

/// A running link. Dropping it stops the link too (without waiting).
#[derive(Debug)]
pub struct LinkHandle {
    /// The bound listening address.
    local_addr: SocketAddr,
    /// The upstream service.
    upstream: SocketAddr,
    /// Link time zero.
    start: Instant,
    /// Latest counters, published by the task after every event.
    stats: Arc<Mutex<LinkStats>>,
    /// Commands to the task; closing it stops the task.
    commands: mpsc::Sender<Command>,
    /// The task, returning its final counters.
    task: JoinHandle<anyhow::Result<LinkStats>>,
}

/// Starts a link in the current tokio runtime.
///
/// Binds the listening socket before returning, so peers may send to
/// [`LinkHandle::local_addr`] at once. Fails if the profile is invalid or
/// the socket cannot be bound.
pub async fn spawn_link(config: LinkConfig) -> anyhow::Result<LinkHandle> {
    config.profile.validate().context("invalid link profile")?;
    let up = Impairment::new(
        config.profile.up.clone(),
        rng::derive_seed(config.seed, SEED_UP),
    )?;
    let down = Impairment::new(
        config.profile.down.clone(),
        rng::derive_seed(config.seed, SEED_DOWN),
    )?;
    let listen = socket::bind(config.listen, None, config.socket_buffer)
        .with_context(|| format!("opening the link's listening socket on {}", config.listen))?;
    let local_addr = listen
        .local_addr()
        .context("reading the listening address")?;
    let (replies_tx, replies) = mpsc::channel(1024);
    let (commands, commands_rx) = mpsc::channel(16);
    let stats = Arc::new(Mutex::new(LinkStats::default()));
    let start = Instant::now();
    let driver = Driver {
        start,
        listen,
        up,
        down,
        sessions: Sessions::new(
            config.upstream,
            config.max_sessions,
            config.session_idle,
            config.socket_buffer,
            replies_tx,
        ),
        replies,
        releases: Releases::new(config.max_held_packets, config.max_held_bytes),
        stats: LinkStats::default(),
        shared: stats.clone(),
        sweep_every: (config.session_idle / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
    };
    tracing::info!(listen = %local_addr, upstream = %config.upstream, seed = config.seed, "link up");
    let task = tokio::spawn(driver.run(commands_rx));
    Ok(LinkHandle {
        local_addr,
        upstream: config.upstream,
        start,
        stats,
        commands,
        task,
    })
}

impl LinkHandle {
    /// The address peers send to (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service behind the link.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Link time now: what the engines would be given as `now` for a packet
    /// arriving at this instant (blackhole windows are in this time).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the link has stopped (shut down, or failed: [`shutdown`](Self::shutdown) says why).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The counters as of the last event the link handled.
    pub fn stats(&self) -> LinkStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces both directions' profiles; returns once they apply to every
    /// packet the link has not yet read.
    pub async fn set_profile(&self, profile: LinkProfile) -> anyhow::Result<()> {
        self.command(Some(profile.up), Some(profile.down)).await
    }

    /// Replaces one direction's profile, like [`set_profile`](Self::set_profile).
    pub async fn set_direction_profile(
        &self,
        direction: Direction,
        profile: Profile,
    ) -> anyhow::Result<()> {
        match direction {
            Direction::Up => self.command(Some(profile), None).await,
            Direction::Down => self.command(None, Some(profile)).await,
        }
    }

    /// Stops the link: closes its sockets, discards packets still held, and
    /// returns the final counters (or the error that had stopped it).
    pub async fn shutdown(self) -> anyhow::Result<LinkStats> {
        // If the task already ended, the join below reports why.
        let _ = self.commands.send(Command::Shutdown).await;
        self.task.await.context("link task panicked")?
    }

    /// Sends a profile change and waits for it to apply.
    async fn command(&self, up: Option<Profile>, down: Option<Profile>) -> anyhow::Result<()> {
        for (direction, profile) in [(Direction::Up, &up), (Direction::Down, &down)] {
            if let Some(profile) = profile {
                profile
                    .validate()
                    .with_context(|| format!("invalid {direction} profile"))?;
            }
        }
        let (done, applied) = oneshot::channel();
        self.commands
            .send(Command::SetProfile(Box::new(ProfileChange {
                up,
                down,
                done,
            })))
            .await
            .map_err(|_| anyhow!("the link has stopped"))?;
        applied
            .await
            .map_err(|_| anyhow!("the link stopped before applying the profile"))?
            .context("invalid profile")
    }
}
