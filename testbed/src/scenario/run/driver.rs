//! Plays one run of a scenario: start the network, connect the clients,
//! start their behaviours and watchers, play the timeline on the clock,
//! then let everything settle, gather the evidence and tear down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client_sdk::Room;
use protocol::{RoomId, RoomState};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::scenario::run::cluster::ClusterPlay;
use crate::scenario::run::crowd::{self, Ctx, Member};
use crate::scenario::run::net::Net;
use crate::scenario::run::progress::Progress;
use crate::scenario::run::record::{ClientSummary, Marker, MirrorState, Mode, RefClock, RunRecord};
use crate::scenario::run::recorder::Recorder;
use crate::scenario::run::timeline::{Entry, Timeline};
use crate::scenario::spec::{Edge, Scenario, StepAction, Traffic};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Show a progress line on stderr (when it is a terminal).
    pub progress: bool,
}

/// Longest wait for actions still in flight at the end.
const RESOLVE_WITHIN: Duration = Duration::from_secs(30);
/// Longest wait for clients to converge.
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

/// Play one run of `s` with clients in `mode`.
pub async fn run(s: &Scenario, mode: Mode, opts: &Options) -> anyhow::Result<RunRecord> {
    let wall = Instant::now();
    let mut progress = Progress::new(opts.progress, mode.label());
    progress.status("starting the origin, relays and links");
    let mut net = Net::start(s).await.context("starting the network")?;
    progress.status(&format!("connecting {} clients", s.client_count()));
    let joined = crowd::connect(s, mode, &net).await?;
    let setup = wall.elapsed();

    // Time zero.
    let start = Instant::now();
    let clock = RefClock::anchored(net.topology.now());
    let ctx = Arc::new(Ctx {
        rec: Recorder::new(start, clock),
        catalogue: s.rules.catalogue(),
        t_end: start + s.duration,
        seed: s.seed,
    });
    let (stop, stopped) = watch::channel(false);
    let (members, watchers) = crowd::watch_all(&ctx, joined, &stopped);
    let members: Arc<[Member]> = members.into();
    let mut behaviours = crowd::behave(&ctx, s, &members);
    let stall_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stall_thread, stall_task) = crowd::watch_stalls(&ctx, stall_flag.clone(), stopped.clone());
    let sampler = tokio::spawn(crowd::sample_clocks(
        ctx.clone(),
        members.clone(),
        stopped.clone(),
    ));

    // The timeline, on the scenario's clock.
    let mut timeline = Timeline::new(s);
    let mut player = Player {
        ctx: ctx.clone(),
        members: members.clone(),
        cross_us: (s.cross_region_rtt_ms * 500.0) as u64,
        origin_down: None,
        background: Vec::new(),
        clock_steps: Vec::new(),
        cluster: ClusterPlay::default(),
    };
    player
        .play_all(&mut timeline, &mut net, start, s.duration, &mut progress)
        .await?;

    // Let everything settle.
    progress.status("waiting for every action to resolve");
    let deadline = Instant::now() + RESOLVE_WITHIN;
    while ctx.rec.tracker.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    behaviours.abort_all();
    while behaviours.join_next().await.is_some() {}
    player.finish(&mut net).await?;
    progress.status("waiting for battles to close");
    settle_battles(&net, s, &ctx).await;
    progress.status("checking that every client converges");
    let rooms: Vec<RoomId> = s.rooms.iter().map(|r| r.id).collect();
    let handles: Vec<&Room> = members.iter().map(|m| &m.handle).collect();
    let (converge_error, origin_rooms, mirrors) = snapshot(&net, &rooms, &members, &handles).await;
    if net.topology.cluster.is_some() {
        progress.status("reading the room logs back from JetStream");
    }
    let cluster = player.cluster.evidence(&net).await;

    // Gather and tear down.
    let _ = stop.send(true);
    let mut deliveries = Vec::new();
    let mut lagged = 0;
    for w in watchers {
        if let Ok((d, l)) = w.await {
            deliveries.extend(d);
            lagged += l;
        }
    }
    let _ = sampler.await;
    let _ = stall_task.await;
    stall_flag.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || stall_thread.join()).await;
    let (client_stats, per_client) = client_summaries(s, &members);
    let recorded = ctx.rec.take();
    for m in members.iter() {
        m.client.clone().close().await;
    }
    drop(members);
    progress.status("stopping");
    let (links, errors) = net.shutdown().await;
    progress.done();
    let mut recorded = recorded;
    recorded.notes.extend(errors);
    Ok(RunRecord {
        mode,
        duration: s.duration,
        wall: wall.elapsed(),
        setup,
        clients: s.client_count(),
        recorded,
        deliveries,
        lagged,
        origin_rooms,
        mirrors,
        converge_error,
        client_stats,
        per_client,
        links,
        origin_estimate_steps: player.clock_steps,
        cluster,
    })
}

/// Each client as it ended, and the SDK's counters summed.
fn client_summaries(s: &Scenario, members: &[Member]) -> (client_sdk::Stats, Vec<ClientSummary>) {
    let mut client_stats = client_sdk::Stats::default();
    let mut per_client = Vec::with_capacity(members.len());
    for m in members {
        let st = m.client.stats();
        per_client.push(ClientSummary {
            client: m.idx,
            user: m.user,
            room: m.room,
            region: s.regions[m.region].name.clone(),
            role: match m.role {
                crowd::Role::Host => "host",
                crowd::Role::Viewer(_) => "viewer",
                crowd::Role::Cohost(..) => "cohost",
            },
            relay: m.client.relay().map(|r| r.name),
            stats: st,
        });
        client_stats.fallbacks += st.fallbacks;
        client_stats.resyncs += st.resyncs;
        client_stats.snapshots += st.snapshots;
        client_stats.moves += st.moves;
    }
    (client_stats, per_client)
}

/// What the timeline acts on.
struct Player {
    ctx: Arc<Ctx>,
    members: Arc<[Member]>,
    /// Extra one-way base delay of a path to another region's relay, µs.
    cross_us: u64,
    /// The crashing origin's `abort`, until it is started again.
    origin_down: Option<JoinHandle<()>>,
    /// Battles, bursts, kills and drains under way.
    background: Vec<JoinHandle<()>>,
    /// How far each restarted origin's clock was from the old one's.
    clock_steps: Vec<i64>,
    /// Cluster steps played.
    cluster: ClusterPlay,
}

impl Player {
    /// Play the timeline on the scenario's clock (from `start`) until
    /// `duration` has passed and every entry has played.
    async fn play_all(
        &mut self,
        timeline: &mut Timeline,
        net: &mut Net,
        start: Instant,
        duration: Duration,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let tick = Duration::from_millis(250);
        // Bounded by the duration; the count is a guard.
        for _ in 0..1_000_000 {
            let now = start.elapsed();
            for e in timeline.poll_due(now) {
                self.play(net, e).await?;
            }
            let tracker = &self.ctx.rec.tracker;
            progress.tick(now, duration, tracker.acked(), tracker.recent_p99());
            if now >= duration && timeline.is_done() {
                break;
            }
            let next = timeline
                .poll_timeout()
                .unwrap_or(duration)
                .min(duration)
                .min(now + tick);
            tokio::time::sleep_until((start + next).into()).await;
        }
        Ok(())
    }

    /// Wait for the timeline's tasks (drains, kills, battles), and bring
    /// the origin back if the run ended while it was down.
    async fn finish(&mut self, net: &mut Net) -> anyhow::Result<()> {
        for h in self.background.drain(..) {
            if tokio::time::timeout(Duration::from_secs(15), h)
                .await
                .is_err()
            {
                self.ctx
                    .rec
                    .note("a timeline task (drain, kill or battle) did not finish");
            }
        }
        self.cluster.heal_all(net);
        if let Some(h) = self.origin_down.take() {
            let _ = h.await;
            self.ctx.rec.note(
                "the origin was still down at the end; restarting it to check the invariants",
            );
            net.topology.restart_origin().await?;
        }
        Ok(())
    }

    async fn play(&mut self, net: &mut Net, e: Entry) -> anyhow::Result<()> {
        self.ctx.rec.marker(Marker {
            t_us: self.ctx.rec.elapsed_us(),
            step: e.step,
            kind: e.kind,
            label: e.label.clone(),
            extra_path_us: match (&e.action, e.edge) {
                (StepAction::KillRelay { .. } | StepAction::DrainRelay { .. }, _)
                | (StepAction::Blackhole { .. }, Edge::Begin) => self.cross_us,
                _ => 0,
            },
        });
        if let Some(change) = e.path_change() {
            return net.apply(&change).await;
        }
        match (e.action, e.edge) {
            (
                StepAction::Traffic(Traffic::Pk {
                    rooms,
                    duration_secs,
                }),
                _,
            ) => {
                let task = crowd::pk(self.ctx.clone(), self.members.clone(), rooms, duration_secs);
                self.background.push(tokio::spawn(task));
            }
            (
                StepAction::Traffic(Traffic::GiftBurst {
                    room,
                    gifts,
                    within,
                    gift,
                    count,
                }),
                _,
            ) => {
                let task = crowd::burst(
                    self.ctx.clone(),
                    self.members.clone(),
                    room,
                    gifts,
                    within,
                    gift,
                    count,
                );
                self.background.push(tokio::spawn(task));
            }
            (StepAction::KillRelay { region }, _) => {
                let relay = net.topology.relays[region]
                    .take()
                    .context("killing a relay that is gone")?;
                self.background.push(tokio::spawn(relay.abort()));
            }
            (StepAction::DrainRelay { region }, _) => {
                let relay = net.topology.relays[region]
                    .take()
                    .context("draining a relay that is gone")?;
                let ctx = self.ctx.clone();
                self.background.push(tokio::spawn(async move {
                    let left = relay.drain(Vec::new()).await;
                    if left > 0 {
                        ctx.rec.note(format!(
                            "the drained relay still had {} clients when it stopped",
                            if left == usize::MAX {
                                "some".to_owned()
                            } else {
                                left.to_string()
                            }
                        ));
                    }
                }));
            }
            (StepAction::RestartOrigin { .. }, Edge::Begin) => {
                let origin = net
                    .topology
                    .origin
                    .take()
                    .context("crashing an origin that is down")?;
                self.origin_down = Some(tokio::spawn(origin.abort()));
            }
            (StepAction::RestartOrigin { .. }, Edge::End) => {
                if let Some(h) = self.origin_down.take() {
                    h.await.context("the crashing origin's task")?;
                }
                net.topology.restart_origin().await?;
                let step = self
                    .ctx
                    .rec
                    .reanchor(RefClock::anchored(net.topology.now()));
                self.clock_steps.push(step);
            }
            (
                action @ (StepAction::KillOriginNode { .. }
                | StepAction::DrainOriginNode { .. }
                | StepAction::PartitionOriginNode { .. }
                | StepAction::KillNatsServer { .. }),
                edge,
            ) => {
                let (step, label) = (e.step, e.label.clone());
                (self.cluster)
                    .play(net, step, &action, edge, &label, &mut self.background)
                    .await?;
            }
            // Links: played above.
            (
                StepAction::Impair { .. }
                | StepAction::Partition { .. }
                | StepAction::Blackhole { .. },
                _,
            ) => {}
        }
        Ok(())
    }
}

/// Wait until no room has a battle or an invitation any more (each battle
/// closes after its bell, grace and punishment).
async fn settle_battles(net: &Net, s: &Scenario, ctx: &Ctx) {
    let battles = ctx.rec.battles();
    let latest = battles.iter().map(|b| b.ends_us).max().unwrap_or(0);
    let tail = s.rules.pk_grace + s.rules.pk_punishment + Duration::from_secs(15);
    let deadline = (ctx.rec.start() + Duration::from_micros(latest)).max(Instant::now()) + tail;
    // Bounded by the deadline.
    while Instant::now() < deadline {
        let mut busy = false;
        for r in &s.rooms {
            if let Some(st) = net.topology.origin_state(r.id).await {
                busy |= st.battle.is_some() || st.pk_invite.is_some();
            }
        }
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.rec
        .note("a battle or invitation was still open at the end");
}

/// Wait for convergence, then read the origin's rooms and every mirror;
/// again if something moved in between (a timer fired), at most 3 times.
async fn snapshot(
    net: &Net,
    rooms: &[RoomId],
    members: &[Member],
    handles: &[&Room],
) -> (
    Option<String>,
    BTreeMap<RoomId, RoomState>,
    Vec<MirrorState>,
) {
    let mut result = (None, BTreeMap::new(), Vec::new());
    for _ in 0..3 {
        let error = net
            .topology
            .converge(handles, CONVERGE_WITHIN)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        let mut origin = BTreeMap::new();
        for r in rooms {
            if let Some(st) = net.topology.origin_state(*r).await {
                origin.insert(*r, st);
            }
        }
        let mirrors: Vec<MirrorState> = members
            .iter()
            .map(|m| MirrorState {
                client: m.idx,
                state: m.handle.state(),
            })
            .collect();
        let agree = mirrors
            .iter()
            .all(|m| origin.get(&m.state.room) == Some(&m.state));
        result = (error, origin, mirrors);
        if agree {
            break;
        }
    }
    result
}
