//! The honest crowd: two hosts in a PK battle and viewers gifting at a
//! steady rate, all real SDK clients on the relay under attack. Every gift
//! is timed (`Acked.latency`) and filed under the phase it was sent in; a
//! gift that is not applied within the deadline — refused, failed or still
//! waiting — is an honest action lost.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use client_sdk::{Client, Room};
use protocol::room::BattlePhase;
use protocol::{GiftId, RoomId};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bench::stats::Latencies;
use crate::impair::rng::Rng;

use super::hostile::until;

use super::secrets::Secrets;

/// The battle's two rooms (hosts are users 1 and 2).
pub const ROOMS: [RoomId; 2] = [RoomId(1), RoomId(2)];
/// The first honest viewer's user id.
const FIRST_VIEWER: u64 = 100;
/// Error texts kept per phase.
const EXAMPLES: usize = 3;
/// Slowest acks kept per phase, with when they were sent.
const SLOWEST: usize = 5;

/// The honest gifts of one phase.
#[derive(Debug, Clone, Default)]
pub struct Gifts {
    /// Sent.
    pub sent: u64,
    /// Applied within the deadline.
    pub applied: u64,
    /// Refused by the origin (an honest gift never should be).
    pub rejected: u64,
    /// Failed with an SDK error.
    pub failed: u64,
    /// No outcome within the deadline.
    pub unresolved: u64,
    /// Ack latencies of the applied ones.
    pub latencies: Latencies,
    /// A few of the errors, for the report.
    pub examples: Vec<String>,
    /// The slowest applied acks (at most five), slowest first: how long
    /// after the phase began the gift was sent, and its ack latency. Slow
    /// acks bunched at an attack's start point at a burst; spread out, at
    /// steady contention.
    pub slowest: Vec<(Duration, Duration)>,
    /// When the phase began (its first [`Crowd::set_phase`]).
    pub started: Option<Instant>,
}

impl Gifts {
    /// Gifts that did not resolve applied.
    pub fn lost(&self) -> u64 {
        self.rejected + self.failed + self.unresolved
    }

    /// Add `other`'s gifts to these (phases pooled: the baselines beside
    /// an attack). The slowest stay the five slowest of both, each with
    /// when in its own phase it was sent.
    pub fn merge(&mut self, other: &Gifts) {
        self.sent += other.sent;
        self.applied += other.applied;
        self.rejected += other.rejected;
        self.failed += other.failed;
        self.unresolved += other.unresolved;
        self.latencies.merge(&other.latencies);
        for e in &other.examples {
            self.note(e.clone());
        }
        self.slowest.extend(other.slowest.iter().copied());
        self.slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
        self.slowest.truncate(SLOWEST);
        self.started = match (self.started, other.started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn keep_slow(&mut self, sent: Instant, latency: Duration) {
        let since = self
            .started
            .map_or(Duration::ZERO, |s| sent.saturating_duration_since(s));
        self.slowest.push((since, latency));
        self.slowest.sort_by_key(|s| std::cmp::Reverse(s.1));
        self.slowest.truncate(SLOWEST);
    }

    fn note(&mut self, e: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(e);
        }
    }
}

/// How the crowd is made.
#[derive(Debug, Clone)]
pub struct CrowdPlan {
    /// The relay.
    pub relay: SocketAddr,
    /// Its certificate, PEM.
    pub cert_pem: String,
    /// Clients, hosts included (at least 3).
    pub clients: usize,
    /// Gifts per viewer per second.
    pub gift_rate: f64,
    /// A gift without an applied outcome by then is lost.
    pub deadline: Duration,
    /// The battle's length, seconds.
    pub battle_secs: u32,
    /// Seed (start offsets of the gifting loops).
    pub seed: u64,
}

/// The crowd, playing on a runtime of its own: one worker thread that
/// runs nothing but the honest clients (their SDK tasks, endpoints and
/// gifting loops), so the run's orchestration never delays an honest ack
/// it then times.
pub struct Crowd {
    phase: Arc<AtomicUsize>,
    stats: Arc<Mutex<Vec<Gifts>>>,
    playing: Option<Playing>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The crowd's phase and per-phase gifts, shared with its gifting loops.
type Shared = (Arc<AtomicUsize>, Arc<Mutex<Vec<Gifts>>>);

/// What lives on the crowd's runtime.
struct Playing {
    clients: Vec<Client>,
    stop: watch::Sender<bool>,
    loops: JoinSet<()>,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            {
                // The clients may spawn as they go: let them, on their runtime.
                let _inside = rt.enter();
                self.playing.take();
            }
            // Not `drop(rt)`: that blocks, and this may run on a runtime.
            rt.shutdown_background();
        }
    }
}

async fn connect(
    plan: &CrowdPlan,
    secrets: &Secrets,
    user: u64,
    host_of: &[RoomId],
) -> anyhow::Result<Client> {
    Client::builder()
        .relay(plan.relay)
        .token(secrets.token(user, host_of))
        .trust_pem(&plan.cert_pem)?
        .connect()
        .await
        .with_context(|| format!("connecting honest user {user}"))
}

async fn join(client: &Client, room: RoomId) -> anyhow::Result<Room> {
    tokio::time::timeout(Duration::from_secs(10), client.join(room))
        .await
        .with_context(|| format!("joining {room} timed out"))?
        .with_context(|| format!("joining {room}"))
}

impl Crowd {
    /// Start the crowd's runtime; on it connect the hosts, start their
    /// battle, connect and seat the viewers (alternating rooms), and start
    /// gifting. Gifts are filed under phase 0 until [`Crowd::set_phase`]
    /// says otherwise.
    pub async fn start(plan: &CrowdPlan, secrets: &Secrets) -> anyhow::Result<Crowd> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("honest-crowd")
            .enable_all()
            .build()
            .context("starting the honest crowd's runtime")?;
        let (plan, secrets) = (plan.clone(), secrets.clone());
        let started = runtime.spawn(async move { Playing::start(&plan, &secrets).await });
        let mut crowd = Crowd {
            phase: Arc::new(AtomicUsize::new(0)),
            stats: Arc::new(Mutex::new(vec![Gifts::default()])),
            playing: None,
            runtime: Some(runtime),
        };
        let (playing, (phase, stats)) = started.await.context("the honest crowd's start")??;
        (crowd.playing, crowd.phase, crowd.stats) = (Some(playing), phase, stats);
        Ok(crowd)
    }

    /// File gifts sent from now on under phase `i`.
    pub fn set_phase(&self, i: usize) {
        if let Ok(mut s) = self.stats.lock() {
            if s.len() <= i {
                s.resize(i + 1, Gifts::default());
            }
            s[i].started.get_or_insert_with(Instant::now);
        }
        self.phase.store(i, Ordering::SeqCst);
    }

    /// What the phases saw so far (gifts still in flight are not counted
    /// yet).
    pub fn snapshot(&self) -> Vec<Gifts> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Clients whose SDK says they are on a relay right now.
    pub fn connected(&self) -> usize {
        self.playing.as_ref().map_or(0, |p| {
            p.clients.iter().filter(|c| c.relay().is_some()).count()
        })
    }

    /// Stop gifting, wait for every gift in flight to resolve (each is
    /// bounded by the deadline), close the clients; returns every phase.
    pub async fn finish(mut self) -> Vec<Gifts> {
        if let (Some(playing), Some(rt)) = (self.playing.take(), self.runtime.as_ref()) {
            let _ = rt.spawn(playing.finish()).await;
        }
        self.snapshot()
    }
}

impl Playing {
    async fn start(plan: &CrowdPlan, secrets: &Secrets) -> anyhow::Result<(Playing, Shared)> {
        if plan.clients < 3 {
            bail!("the honest crowd needs two hosts and a viewer");
        }
        let ha = connect(plan, secrets, 1, &ROOMS[..1]).await?;
        let hb = connect(plan, secrets, 2, &ROOMS[1..]).await?;
        let ra = join(&ha, ROOMS[0]).await?;
        let rb = join(&hb, ROOMS[1]).await?;
        // Only a host opens its room: each goes live before the battle.
        for room in [&ra, &rb] {
            let opened = (room.seat_mode(protocol::room::SeatMode::ApplyToTake).await)
                .context("opening a room")?;
            if !opened.outcome.is_applied() {
                bail!("{} did not open: {:?}", room.id(), opened.outcome);
            }
        }
        let invite = ra
            .pk_invite(ROOMS[1], plan.battle_secs)
            .await
            .context("PK invite")?;
        if !invite.outcome.is_applied() {
            bail!("the PK invitation was not applied: {:?}", invite.outcome);
        }
        let pending = rb
            .wait_for(Duration::from_secs(10), |s| s.pk_invite.is_some())
            .await
            .context("the invited host never saw the invitation")?;
        let battle = pending.pk_invite.context("invitation")?.battle;
        let accept = rb.pk_accept(battle).await.context("PK accept")?;
        if !accept.outcome.is_applied() {
            bail!("the PK acceptance was not applied: {:?}", accept.outcome);
        }
        ra.wait_for(Duration::from_secs(10), |s| {
            s.battle
                .as_ref()
                .is_some_and(|b| b.phase == BattlePhase::Running)
        })
        .await
        .context("the battle never started")?;

        let mut clients = vec![ha, hb];
        let mut rooms = Vec::new();
        let viewers = plan.clients - 2;
        // Ten at a time: a burst of handshakes is not what is measured here.
        for chunk in (0..viewers as u64).collect::<Vec<_>>().chunks(10) {
            let mut set = JoinSet::new();
            for &i in chunk {
                let (plan, secrets) = (plan.clone(), secrets.clone());
                set.spawn(async move {
                    let c = connect(&plan, &secrets, FIRST_VIEWER + i, &[]).await?;
                    let r = join(&c, ROOMS[(i % 2) as usize]).await?;
                    Ok::<_, anyhow::Error>((c, r))
                });
            }
            while let Some(r) = set.join_next().await {
                let (c, r) = r.context("a viewer's task")??;
                clients.push(c);
                rooms.push(r);
            }
        }

        let phase = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(vec![Gifts::default()]));
        let (stop, stop_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        let mut rng = Rng::new(plan.seed);
        let period = Duration::from_secs_f64(1.0 / plan.gift_rate.max(0.01));
        for room in rooms {
            let offset = period.mul_f64(rng.uniform());
            loops.spawn(gift_loop(
                room,
                period,
                offset,
                plan.deadline,
                phase.clone(),
                stats.clone(),
                stop_rx.clone(),
            ));
        }
        let playing = Playing {
            clients,
            stop,
            loops,
        };
        Ok((playing, (phase, stats)))
    }

    async fn finish(mut self) {
        let _ = self.stop.send(true);
        while self.loops.join_next().await.is_some() {}
        for c in self.clients.drain(..) {
            c.close().await;
        }
    }
}

async fn gift_loop(
    room: Room,
    period: Duration,
    offset: Duration,
    deadline: Duration,
    phase: Arc<AtomicUsize>,
    stats: Arc<Mutex<Vec<Gifts>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut inflight = JoinSet::new();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until(&mut stop) => break,
        }
        while inflight.try_join_next().is_some() {}
        let at = phase.load(Ordering::SeqCst);
        let (room, stats) = (room.clone(), stats.clone());
        let sent = Instant::now();
        inflight.spawn(async move {
            let r = tokio::time::timeout(deadline, room.gift(GiftId(1), 1)).await;
            let Ok(mut s) = stats.lock() else { return };
            let Some(g) = s.get_mut(at) else { return };
            g.sent += 1;
            match r {
                Ok(Ok(a)) if a.outcome.is_applied() => {
                    g.applied += 1;
                    g.latencies.record(a.latency);
                    g.keep_slow(sent, a.latency);
                }
                Ok(Ok(a)) => {
                    g.rejected += 1;
                    g.note(format!("{:?}: {:?}", a.id, a.outcome));
                }
                Ok(Err(e)) => {
                    g.failed += 1;
                    g.note(e.to_string());
                }
                Err(_) => {
                    g.unresolved += 1;
                    g.note(format!("no outcome within {deadline:?}"));
                }
            }
        });
    }
    while inflight.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_keeps_its_five_slowest_acks_with_when_they_were_sent() {
        let start = Instant::now();
        let mut g = Gifts {
            started: Some(start),
            ..Gifts::default()
        };
        for ms in [3u64, 90, 1, 40, 7, 120, 2, 60] {
            // Sent `ms` ms into the phase, acked in `ms` ms.
            g.keep_slow(start + Duration::from_millis(ms), Duration::from_millis(ms));
        }
        let kept: Vec<u64> = g
            .slowest
            .iter()
            .map(|(_, l)| l.as_millis() as u64)
            .collect();
        assert_eq!(kept, [120, 90, 60, 40, 7]);
        assert_eq!(g.slowest[0].0, Duration::from_millis(120));
    }

    #[test]
    fn pooled_phases_add_up_and_keep_the_slowest_of_both() {
        let start = Instant::now();
        let phase = |ms: &[u64]| {
            let mut g = Gifts {
                started: Some(start),
                ..Gifts::default()
            };
            for &m in ms {
                g.sent += 1;
                g.applied += 1;
                g.latencies.record(Duration::from_millis(m));
                g.keep_slow(start, Duration::from_millis(m));
            }
            g
        };
        let mut a = phase(&[1, 2, 3, 50]);
        a.merge(&phase(&[4, 5, 6, 7, 8, 9]));
        assert_eq!((a.sent, a.applied, a.latencies.len()), (10, 10, 10));
        let kept: Vec<u128> = a.slowest.iter().map(|(_, l)| l.as_millis()).collect();
        assert_eq!(kept, [50, 9, 8, 7, 6]);
    }
}
