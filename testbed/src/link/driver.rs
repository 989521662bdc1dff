//! The link's task: owns the sockets, the two engines and the held packets,
//! and selects over datagrams, the next release time, the idle sweep and
//! commands. All decisions are the engines'; this file only moves bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::held::{Held, Releases, Via};
use super::session::{is_transient, Reply, Sessions};
use super::socket::MAX_DATAGRAM;
use super::stats::LinkStats;
use crate::impair::{Direction, Impairment, Profile, ProfileError, Verdict};

/// Most datagrams read from the listening socket per wake-up, so that a
/// flood from peers cannot starve releases and replies.
const RECV_BATCH: usize = 32;

/// Requests from a [`LinkHandle`](super::LinkHandle).
#[derive(Debug)]
pub(crate) enum Command {
    /// Replace profiles (boxed: profiles are large, shutdown is not).
    SetProfile(Box<ProfileChange>),
    /// Stop: close sessions, discard held packets, return the final counters.
    Shutdown,
}

/// New profiles for one or both directions.
#[derive(Debug)]
pub(crate) struct ProfileChange {
    /// New profile for peers → upstream (`None`: leave it).
    pub(crate) up: Option<Profile>,
    /// New profile for upstream → peers (`None`: leave it).
    pub(crate) down: Option<Profile>,
    /// Answered once the profiles are in force.
    pub(crate) done: oneshot::Sender<Result<(), ProfileError>>,
}

/// Everything the task owns.
pub(crate) struct Driver {
    /// Link time zero: engines see `now - start`.
    pub(crate) start: Instant,
    /// Where peers send.
    pub(crate) listen: UdpSocket,
    /// Peers → upstream.
    pub(crate) up: Impairment,
    /// Upstream → peers.
    pub(crate) down: Impairment,
    /// One upstream socket per peer.
    pub(crate) sessions: Sessions,
    /// Replies read by the session tasks.
    pub(crate) replies: mpsc::Receiver<Reply>,
    /// Copies waiting for their release time.
    pub(crate) releases: Releases,
    /// The proxy's own counters (engine counters are copied in on publish).
    pub(crate) stats: LinkStats,
    /// Where [`publish`](Self::publish) puts snapshots for the handle.
    pub(crate) shared: Arc<Mutex<LinkStats>>,
    /// How often to look for idle sessions.
    pub(crate) sweep_every: Duration,
}

impl Driver {
    /// Runs until shutdown (or the handle is dropped); returns the final
    /// counters, or the error that stopped the listening socket.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
    ) -> anyhow::Result<LinkStats> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sweep = tokio::time::interval(self.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let next_release = self.releases.next_at().map(|at| self.start + at);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::SetProfile(change)) => {
                        let ProfileChange { up, down, done } = *change;
                        // The receiver may have given up waiting; the change stands.
                        let _ = done.send(self.set_profiles(up, down));
                    }
                    Some(Command::Shutdown) | None => break Ok(()),
                },
                () = sleep_until(next_release) => {}
                received = self.listen.recv_from(&mut buf) => {
                    if let Err(e) = self.on_listen(received, &mut buf) {
                        break Err(e);
                    }
                }
                Some(reply) = self.replies.recv() => self.on_reply(reply),
                _ = sweep.tick() => self.sessions.expire(Instant::now()),
            }
            self.release_due();
            self.publish();
        };
        self.sessions.close_all();
        for held in self.releases.drain() {
            let d = self.stats.direction_mut(held.direction);
            d.held -= 1;
            d.discarded += 1;
        }
        self.publish();
        result.map(|()| self.snapshot())
    }

    /// Handles the result of a receive on the listening socket, then reads
    /// whatever else is already queued (up to a batch).
    fn on_listen(
        &mut self,
        received: std::io::Result<(usize, SocketAddr)>,
        buf: &mut [u8],
    ) -> anyhow::Result<()> {
        let mut received = received;
        for batched in 1.. {
            match received {
                Ok((n, peer)) => self.on_peer_packet(peer, buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if is_transient(&e) => tracing::trace!(error = %e, "listening socket"),
                Err(e) => return Err(e).context("receiving on the listening socket"),
            }
            if batched == RECV_BATCH {
                break;
            }
            received = self.listen.try_recv_from(buf);
        }
        Ok(())
    }

    /// A datagram from a peer, for the upstream.
    fn on_peer_packet(&mut self, peer: SocketAddr, payload: Vec<u8>) {
        let now = Instant::now();
        let socket = match self.sessions.socket_for(peer, now) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot open an upstream socket; packet dropped");
                return;
            }
        };
        let verdict = self.up.handle_packet(now - self.start, payload.len());
        self.hold(Direction::Up, verdict, Via::Session(socket), payload);
    }

    /// A datagram from the upstream, for a peer.
    fn on_reply(&mut self, reply: Reply) {
        let now = Instant::now();
        self.sessions.touch(reply.peer, now);
        let verdict = self
            .down
            .handle_packet(now - self.start, reply.payload.len());
        self.hold(
            Direction::Down,
            verdict,
            Via::Listen(reply.peer),
            reply.payload,
        );
    }

    /// Queues the copies a verdict delivers.
    fn hold(&mut self, direction: Direction, verdict: Verdict, via: Via, payload: Vec<u8>) {
        let Some(delivery) = verdict.delivery() else {
            return;
        };
        let copy = delivery
            .copy_at
            .map(|at| (at, via.clone(), payload.clone()));
        let copies = std::iter::once((delivery.at, via, payload)).chain(copy);
        for (at, via, payload) in copies {
            let stats = self.stats.direction_mut(direction);
            match self.releases.push(at, direction, via, payload) {
                Ok(()) => stats.held += 1,
                Err(_) => stats.overflow += 1,
            }
        }
    }

    /// Sends every copy whose release time has come.
    fn release_due(&mut self) {
        let now = Instant::now() - self.start;
        while let Some(held) = self.releases.pop_due(now) {
            self.send(held);
        }
    }

    /// Sends one copy; never waits (a full socket buffer is a send error).
    ///
    /// Calls the non-blocking socket directly rather than tokio's
    /// `try_send`, which fails until the reactor has seen the socket become
    /// writable — always the case for a session's first packet.
    fn send(&mut self, held: Held) {
        let result = match &held.via {
            Via::Listen(peer) => {
                SockRef::from(&self.listen).send_to(&held.payload, &(*peer).into())
            }
            Via::Session(socket) => SockRef::from(socket.as_ref()).send(&held.payload),
        };
        let stats = self.stats.direction_mut(held.direction);
        stats.held -= 1;
        match result {
            Ok(_) => stats.sent += 1,
            Err(e) => {
                stats.send_errors += 1;
                tracing::trace!(direction = %held.direction, error = %e, "send failed");
            }
        }
    }

    /// Applies new profiles; both are checked before either changes.
    fn set_profiles(
        &mut self,
        up: Option<Profile>,
        down: Option<Profile>,
    ) -> Result<(), ProfileError> {
        for profile in up.iter().chain(down.iter()) {
            profile.validate()?;
        }
        if let Some(up) = up {
            self.up.set_profile(up)?;
        }
        if let Some(down) = down {
            self.down.set_profile(down)?;
        }
        tracing::info!(up = ?self.up.profile(), down = ?self.down.profile(), "link profile changed");
        Ok(())
    }

    /// The current counters.
    fn snapshot(&self) -> LinkStats {
        let mut stats = self.stats;
        stats.up.engine = *self.up.counters();
        stats.down.engine = *self.down.counters();
        stats.sessions = self.sessions.stats();
        stats
    }

    /// Makes the current counters visible to the handle.
    fn publish(&self) {
        let snapshot = self.snapshot();
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

/// Sleeps until `deadline`, or forever if there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
