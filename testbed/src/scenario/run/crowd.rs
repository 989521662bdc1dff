//! The clients of a run and what they do: connect and join, watch their
//! room and connection, act (viewers gift, chat and like; co-hosts take
//! seats and leave them; hosts battle), and the tasks that read their
//! clocks. Every action goes through [`act`], which records it from send to
//! outcome. Randomness comes from seeds derived from the scenario's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client_sdk::{Client, ClientEvent, Room, Update};
use protocol::room::SeatMode;
use protocol::{Action, GiftId, RoomId, UserId};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::impair::{rng, Rng};

use crate::scenario::run::net::Net;
use crate::scenario::run::record::{
    BattleRecord, ConnEvent, Countdown, Delivery, GiftSent, Mode, StallKind,
};
use crate::scenario::run::recorder::{Pending, Recorder};
use crate::scenario::spec::{GiftChoice, Scenario};

/// What every task of a run shares.
pub struct Ctx {
    /// Where everything is recorded.
    pub rec: Recorder,
    /// Gift values.
    pub catalogue: BTreeMap<GiftId, u64>,
    /// When clients stop acting.
    pub t_end: Instant,
    /// The scenario's seed.
    pub seed: u64,
}

/// What a client is in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The host of its room.
    Host,
    /// A viewer of group `.0`.
    Viewer(usize),
    /// Co-host number `.1` of group `.0`.
    Cohost(usize, usize),
}

/// One connected client.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its index in the run.
    pub idx: u32,
    /// Its user.
    pub user: UserId,
    /// Where it connects from.
    pub region: usize,
    /// The room it follows.
    pub room: RoomId,
    /// What it does.
    pub role: Role,
    /// The client.
    pub client: Client,
    /// Its room.
    pub handle: Room,
}

/// A member's subscriptions, taken right after its join so nothing is missed.
pub struct Feeds {
    updates: broadcast::Receiver<Update>,
    events: broadcast::Receiver<ClientEvent>,
}

/// Most connection attempts per client.
const CONNECT_TRIES: u32 = 5;
/// Clients connecting at once.
const CONNECT_PARALLEL: usize = 16;

/// Connect and join every client of the scenario (hosts first).
pub async fn connect(s: &Scenario, mode: Mode, net: &Net) -> anyhow::Result<Vec<(Member, Feeds)>> {
    struct Plan {
        user: UserId,
        region: usize,
        room: RoomId,
        role: Role,
    }
    let mut plans = Vec::new();
    for (i, r) in s.rooms.iter().enumerate() {
        plans.push(Plan {
            user: UserId(1_000 + i as u64),
            region: r.host_region,
            room: r.id,
            role: Role::Host,
        });
    }
    let mut n = 0u64;
    for (g, v) in s.viewers.iter().enumerate() {
        for _ in 0..v.count {
            n += 1;
            plans.push(Plan {
                user: UserId(100_000 + n),
                region: v.region,
                room: v.room,
                role: Role::Viewer(g),
            });
        }
    }
    for (g, c) in s.cohosts.iter().enumerate() {
        for k in 0..c.count as usize {
            n += 1;
            plans.push(Plan {
                user: UserId(100_000 + n),
                region: c.region,
                room: c.room,
                role: Role::Cohost(g, k),
            });
        }
    }
    let mut out: Vec<Option<(Member, Feeds)>> = plans.iter().map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut next = 0usize;
    // Bounded: each plan is spawned once and each task ends (tries are bounded).
    while next < plans.len() || !set.is_empty() {
        while next < plans.len() && set.len() < CONNECT_PARALLEL {
            let p = &plans[next];
            let host_of: Vec<RoomId> = match p.role {
                Role::Host => vec![p.room],
                _ => Vec::new(),
            };
            let builder = net
                .topology
                .client_builder(p.user.0, &host_of)
                .relays(net.relays_for(p.region))
                .probe(false)
                .datagrams(mode == Mode::DatagramFirst);
            let (idx, user, region, room, role) = (next, p.user, p.region, p.room, p.role);
            set.spawn(async move {
                let mut last = None;
                for attempt in 0..CONNECT_TRIES {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                    let client = match builder.clone().connect().await {
                        Ok(c) => c,
                        Err(e) => {
                            last = Some(anyhow::Error::from(e));
                            continue;
                        }
                    };
                    let events = client.events();
                    match tokio::time::timeout(Duration::from_secs(10), client.join(room)).await {
                        Ok(Ok(handle)) => {
                            let updates = handle.updates();
                            let m = Member {
                                idx: idx as u32,
                                user,
                                region,
                                room,
                                role,
                                client,
                                handle,
                            };
                            return (idx, Ok((m, Feeds { updates, events })));
                        }
                        Ok(Err(e)) => last = Some(anyhow::Error::from(e)),
                        Err(_) => last = Some(anyhow::anyhow!("join timed out")),
                    }
                    client.close().await;
                }
                let e = last.unwrap_or_else(|| anyhow::anyhow!("no attempt made"));
                (idx, Err(e.context(format!("connecting {user} to {room}"))))
            });
            next += 1;
        }
        if let Some(done) = set.join_next().await {
            let (idx, r) = done.context("a connecting task panicked")?;
            out[idx] = Some(r?);
        }
    }
    out.into_iter()
        .map(|m| m.context("a client was not connected"))
        .collect()
}

/// Record every action from send to outcome; the outcome, if one came.
pub async fn act(ctx: &Ctx, client: u32, room: &Room, action: Action) -> Option<client_sdk::Acked> {
    let gift = match &action {
        Action::Gift { gift, count } => Some(GiftSent {
            gift: *gift,
            count: *count,
            value: ctx.catalogue.get(gift).copied().unwrap_or(0) * u64::from(*count),
        }),
        _ => None,
    };
    let token = ctx.rec.tracker.begin(Pending {
        client,
        room: room.id(),
        class: action.class(),
        name: action.name(),
        sent_us: ctx.rec.elapsed_us(),
        gift,
    });
    let r = room.act(action).await;
    ctx.rec.tracker.end(token, &r);
    r.ok()
}

/// Send an action without waiting for it (it is still recorded).
fn fire(ctx: &Arc<Ctx>, m: &Member, action: Action) {
    let (ctx, room, idx) = (ctx.clone(), m.handle.clone(), m.idx);
    tokio::spawn(async move {
        act(&ctx, idx, &room, action).await;
    });
}

/// A room watcher: the deliveries it measured and the updates it missed.
pub type Watcher = tokio::task::JoinHandle<(Vec<Delivery>, u64)>;

/// Start watching every member's room and connection; each watcher ends
/// when `stop` changes and returns the deliveries it measured and how many
/// updates it missed by lagging.
pub fn watch_all(
    ctx: &Arc<Ctx>,
    members: Vec<(Member, Feeds)>,
    stop: &watch::Receiver<bool>,
) -> (Vec<Member>, Vec<Watcher>) {
    let mut out = Vec::with_capacity(members.len());
    let mut handles = Vec::with_capacity(members.len());
    for (m, feeds) in members {
        let Feeds {
            mut updates,
            mut events,
        } = feeds;
        let (c, mut s) = (ctx.clone(), stop.clone());
        let idx = m.idx;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    e = events.recv() => match e {
                        Ok(e) => if let Some(ev) = ConnEvent::from_sdk(&e) { c.rec.conn(idx, ev) },
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = s.changed() => break,
                }
            }
        });
        let (c, mut s) = (ctx.clone(), stop.clone());
        let room = m.room;
        handles.push(tokio::spawn(async move {
            let mut deliveries = Vec::new();
            let mut lagged = 0u64;
            // What arrived before time zero is evidence, not a delivery sample.
            loop {
                match updates.try_recv() {
                    Ok(Update::Event(e)) => c.rec.saw(room, &e),
                    Ok(Update::Snapshot(_)) => {}
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            loop {
                tokio::select! {
                    u = updates.recv() => match u {
                        Ok(Update::Event(e)) => {
                            let now = c.rec.origin_now();
                            let latency = now.diff_micros(e.at).clamp(0, i64::from(u32::MAX));
                            deliveries.push(Delivery {
                                client: idx,
                                t_ms: (c.rec.elapsed_us() / 1000) as u32,
                                latency_us: latency as u32,
                                class: e.class(),
                            });
                            c.rec.saw(room, &e);
                        }
                        Ok(Update::Snapshot(_)) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => lagged += n,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = s.changed() => break,
                }
            }
            (deliveries, lagged)
        }));
        out.push(m);
    }
    (out, handles)
}

/// Start every member's behaviour; each ends by `ctx.t_end` (a co-host
/// waiting for an outcome may take longer; the caller aborts the set).
pub fn behave(ctx: &Arc<Ctx>, s: &Scenario, members: &[Member]) -> JoinSet<()> {
    let mut set = JoinSet::new();
    // Hosts of rooms with co-hosts open their seats to free taking.
    for m in members.iter().filter(|m| m.role == Role::Host) {
        if s.cohosts.iter().any(|c| c.room == m.room) {
            fire(
                ctx,
                m,
                Action::SeatMode {
                    mode: SeatMode::FreeTake,
                },
            );
        }
    }
    for m in members {
        let seed = rng::derive_seed(ctx.seed, 0x5eed_0000 ^ m.user.0);
        match m.role {
            Role::Host => {}
            Role::Viewer(g) => {
                let group = s.viewers[g].clone();
                let (ctx, m) = (ctx.clone(), m.clone());
                set.spawn(async move {
                    viewer(
                        &ctx,
                        &m,
                        Rng::new(seed),
                        [group.gifts_per_s, group.chats_per_s, group.likes_per_s],
                        &group.gift_mix,
                    )
                    .await
                });
            }
            Role::Cohost(g, k) => {
                let group = s.cohosts[g].clone();
                let seats = s.rules.seats;
                let (ctx, m) = (ctx.clone(), m.clone());
                set.spawn(async move {
                    cohost(&ctx, &m, Rng::new(seed), k, seats, group.sit, group.stand).await
                });
            }
        }
    }
    set
}

/// An exponential wait with mean `1 / rate` (never, at rate 0).
fn exp_wait(rng: &mut Rng, rate: f64) -> Option<Duration> {
    (rate > 0.0).then(|| Duration::from_secs_f64(-(1.0 - rng.uniform()).ln() / rate))
}

/// An exponential wait with mean `mean`.
fn exp_mean(rng: &mut Rng, mean: Duration) -> Duration {
    mean.mul_f64(-(1.0 - rng.uniform()).ln()).min(mean * 10)
}

/// A viewer: gifts, chats and likes, each a Poisson process, fired without
/// waiting for outcomes (as an app would).
async fn viewer(ctx: &Arc<Ctx>, m: &Member, mut rng: Rng, rates: [f64; 3], mix: &[GiftChoice]) {
    let start = Instant::now();
    let mut next: [Option<Instant>; 3] = [None; 3];
    for (k, rate) in rates.iter().enumerate() {
        next[k] = exp_wait(&mut rng, *rate).map(|d| start + d);
    }
    let total: u32 = mix.iter().map(|g| g.weight).sum();
    let mut n = 0u64;
    // Bounded by time; the count cap is a guard.
    for _ in 0..1_000_000 {
        let Some((k, at)) = next
            .iter()
            .enumerate()
            .filter_map(|(k, t)| t.map(|t| (k, t)))
            .min_by_key(|(_, t)| *t)
        else {
            return;
        };
        if at >= ctx.t_end {
            return;
        }
        tokio::time::sleep_until(at.into()).await;
        next[k] = exp_wait(&mut rng, rates[k]).map(|d| at + d);
        n += 1;
        let action = match k {
            0 => {
                let mut pick = (rng.next_u64() % u64::from(total.max(1))) as u32;
                let choice = mix
                    .iter()
                    .find(|g| {
                        if pick < g.weight {
                            true
                        } else {
                            pick -= g.weight;
                            false
                        }
                    })
                    .unwrap_or(&mix[0]);
                Action::Gift {
                    gift: choice.gift,
                    count: choice.count,
                }
            }
            1 => Action::Chat {
                text: format!("{} says hi #{n}", m.user),
            },
            _ => Action::Like {
                count: 1 + (rng.next_u64() % 5) as u32,
            },
        };
        fire(ctx, m, action);
    }
}

/// A co-host: takes a free seat, sits a while, leaves, waits, again.
async fn cohost(
    ctx: &Arc<Ctx>,
    m: &Member,
    mut rng: Rng,
    k: usize,
    seats: u8,
    sit: Duration,
    stand: Duration,
) {
    let until = |d: Duration| (Instant::now() + d).min(ctx.t_end);
    tokio::time::sleep_until(until(exp_mean(&mut rng, stand)).into()).await;
    for _ in 0..10_000 {
        if Instant::now() >= ctx.t_end {
            return;
        }
        let state = m.handle.state();
        let seat = state
            .seats
            .first_free()
            .unwrap_or(k % usize::from(seats.max(1))) as u8;
        let taken = act(ctx, m.idx, &m.handle, Action::SeatTake { seat })
            .await
            .is_some_and(|a| a.outcome.is_applied());
        if taken {
            tokio::time::sleep_until(until(exp_mean(&mut rng, sit)).into()).await;
            if Instant::now() >= ctx.t_end {
                return;
            }
            act(ctx, m.idx, &m.handle, Action::SeatLeave).await;
        }
        tokio::time::sleep_until(until(exp_mean(&mut rng, stand)).into()).await;
    }
}

/// A PK battle: the host of `rooms[0]` invites, the other host accepts as
/// soon as it sees the invitation; then every client of both rooms counts
/// down to the bell.
pub async fn pk(ctx: Arc<Ctx>, members: Arc<[Member]>, rooms: [RoomId; 2], duration_secs: u32) {
    let host = |room: RoomId| {
        members
            .iter()
            .find(|m| m.role == Role::Host && m.room == room)
            .cloned()
    };
    let (Some(a), Some(b)) = (host(rooms[0]), host(rooms[1])) else {
        ctx.rec.note("pk: a room has no host");
        return;
    };
    let invited = act(
        &ctx,
        a.idx,
        &a.handle,
        Action::PkInvite {
            to: rooms[1],
            duration_secs,
        },
    )
    .await;
    match invited {
        Some(x) if x.outcome.is_applied() => {}
        other => {
            ctx.rec.note(format!(
                "PK {} vs {}: the invitation was not applied ({:?})",
                rooms[0].0,
                rooms[1].0,
                other.map(|x| x.outcome)
            ));
            return;
        }
    }
    let seen = b
        .handle
        .wait_for(Duration::from_secs(20), |s| {
            s.pk_invite.as_ref().is_some_and(|i| i.from == rooms[0])
        })
        .await;
    let Some(battle) = seen.and_then(|s| s.pk_invite.map(|i| i.battle)) else {
        ctx.rec
            .note("PK: the invited host never saw the invitation");
        return;
    };
    let accepted = act(&ctx, b.idx, &b.handle, Action::PkAccept { battle }).await;
    if !accepted.is_some_and(|x| x.outcome.is_applied()) {
        ctx.rec
            .note(format!("PK {battle}: the accept was not applied"));
        return;
    }
    let running = b
        .handle
        .wait_for(Duration::from_secs(20), |s| {
            s.battle.as_ref().is_some_and(|x| x.id == battle)
        })
        .await;
    let Some(x) = running.and_then(|s| s.battle) else {
        ctx.rec.note(format!("PK {battle}: never seen running"));
        return;
    };
    let record = BattleRecord {
        id: x.id,
        rooms: x.rooms,
        ends_at: x.ends_at,
        started_us: ctx.rec.run_us(x.started_at),
        ends_us: ctx.rec.run_us(x.ends_at),
    };
    ctx.rec.battle(record.clone());
    let watchers: Vec<(u32, Client)> = members
        .iter()
        .filter(|m| x.rooms.contains(&m.room))
        .map(|m| (m.idx, m.client.clone()))
        .collect();
    countdown(&ctx, &record, watchers).await;
}

/// Where each client's countdown to the bell reaches zero: from shortly
/// before the bell, each client's clock estimate is read every 5 ms; at
/// the first reading at or past `ends_at`, the origin time at which it
/// crossed is `origin now − (estimate − ends_at)` (both clocks advance at
/// the same rate between readings), so the error is `origin now − estimate`.
async fn countdown(ctx: &Ctx, b: &BattleRecord, mut clients: Vec<(u32, Client)>) {
    let bell = ctx.rec.clock().instant(b.ends_at);
    let from = bell.checked_sub(Duration::from_millis(300)).unwrap_or(bell);
    tokio::time::sleep_until(from.into()).await;
    let deadline = Instant::now().max(bell) + Duration::from_secs(3);
    // Bounded by the deadline: at most ~700 rounds.
    while !clients.is_empty() && Instant::now() < deadline {
        clients.retain(|(idx, c)| match c.server_time() {
            Some(est) if est >= b.ends_at => {
                let now = ctx.rec.origin_now();
                ctx.rec.countdown(Countdown {
                    battle: b.id,
                    client: *idx,
                    error_us: Some(now.diff_micros(est)),
                });
                false
            }
            _ => true,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (idx, _) in clients {
        ctx.rec.countdown(Countdown {
            battle: b.id,
            client: idx,
            error_us: None,
        });
    }
}

/// `gifts` gift actions spread evenly over `within`, round-robin over the
/// room's viewers.
pub async fn burst(
    ctx: Arc<Ctx>,
    members: Arc<[Member]>,
    room: RoomId,
    gifts: u32,
    within: Duration,
    gift: GiftId,
    count: u32,
) {
    let senders: Vec<&Member> = members
        .iter()
        .filter(|m| m.room == room && matches!(m.role, Role::Viewer(_)))
        .collect();
    if senders.is_empty() {
        return;
    }
    let gap = within / gifts.max(1);
    let start = Instant::now();
    for k in 0..gifts {
        tokio::time::sleep_until((start + gap * k).into()).await;
        let m = senders[k as usize % senders.len()];
        fire(&ctx, m, Action::Gift { gift, count });
    }
}

/// Stall detectors: a plain thread and a tokio task each sleep 5 ms in a
/// loop and record every wake-up more than 20 ms late, until `stop` is set
/// (the thread) or changes (the task).
pub fn watch_stalls(
    ctx: &Arc<Ctx>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    mut stopped: watch::Receiver<bool>,
) -> (std::thread::JoinHandle<()>, tokio::task::JoinHandle<()>) {
    const NAP: Duration = Duration::from_millis(5);
    let c = ctx.clone();
    let thread = std::thread::spawn(move || {
        // Bounded by `stop`; the count is a guard (a day of naps).
        for _ in 0..17_280_000u64 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let t = Instant::now();
            std::thread::sleep(NAP);
            c.rec.woke(StallKind::Thread, NAP, t.elapsed());
        }
    });
    let c = ctx.clone();
    let task = tokio::spawn(async move {
        for _ in 0..17_280_000u64 {
            let t = Instant::now();
            tokio::select! {
                _ = tokio::time::sleep(NAP) => c.rec.woke(StallKind::Runtime, NAP, t.elapsed()),
                _ = stopped.changed() => return,
            }
        }
    });
    (thread, task)
}

/// Every 500 ms, read the clock estimate of every client of a room whose
/// battle is running, against the origin's clock. Ends when `stop` changes.
pub async fn sample_clocks(ctx: Arc<Ctx>, members: Arc<[Member]>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Bounded by `stop`; the count is a guard (a day of ticks).
    for _ in 0..172_800 {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = ctx.rec.origin_now();
        let running: Vec<[RoomId; 2]> = ctx
            .rec
            .battles()
            .into_iter()
            .filter(|b| now < b.ends_at)
            .map(|b| b.rooms)
            .collect();
        if running.is_empty() {
            continue;
        }
        for m in members
            .iter()
            .filter(|m| running.iter().any(|r| r.contains(&m.room)))
        {
            if let Some(est) = m.client.server_time() {
                let origin = ctx.rec.origin_now();
                ctx.rec.reading(m.idx, est.diff_micros(origin));
            }
        }
    }
}
