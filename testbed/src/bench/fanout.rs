//! Fan-out: many SDK clients follow one room on one relay; a sender gifts
//! at a steady rate; every client records when it saw each gift (matched by
//! the event's `cause` to the sent action), and every sighting is timed
//! against the instant the sender called `gift` — all in this process, so
//! one clock.
//!
//! The audience is real [`client_sdk::Client`]s, each with its own QUIC
//! endpoint, session, mirror and driver task, connected in batches so that
//! the relay is not hit by a thousand handshakes at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use client_sdk::{Client, Outcome, Room, Update};
use net::token::{unix_now, Claims, Purpose, TokenKey};
use protocol::{GiftId, RoomId, SessionId, UserId};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use super::stats::{Latencies, Summary};

/// How to run the fan-out.
#[derive(Debug, Clone)]
pub struct FanoutPlan {
    /// The relay the audience connects to.
    pub relay: SocketAddr,
    /// The relay the sender connects to (the same one, or another).
    pub sender_relay: SocketAddr,
    /// The certificate to trust, PEM.
    pub cert_pem: String,
    /// The secret tokens are signed with.
    pub token_secret: String,
    /// The room.
    pub room: RoomId,
    /// Audience size.
    pub clients: usize,
    /// Clients connecting at once.
    pub batch: usize,
    /// The audience's user ids start here; the sender is the one after.
    pub first_user: u64,
    /// The whole connect phase stops here (what is connected by then runs).
    pub connect_limit: Duration,
    /// Gifts per second.
    pub rate: f64,
    /// How long the sender sends.
    pub duration: Duration,
    /// After the last send, how long to wait for deliveries at most.
    pub drain: Duration,
    /// The SDK's redundancy setting (critical actions sent twice).
    pub redundancy: Option<Duration>,
}

/// Sign a viewer token for `user`.
pub fn viewer_token(secret: &str, user: u64) -> Vec<u8> {
    TokenKey::new(secret.as_bytes()).mint(&Claims {
        purpose: Purpose::Client,
        user: UserId(user),
        rooms: None,
        host_of: Vec::new(),
        operator: false,
        expires: unix_now() + 24 * 3600,
    })
}

async fn connect_one(
    plan: &FanoutPlan,
    relay: SocketAddr,
    user: u64,
) -> Result<Client, client_sdk::Error> {
    Client::builder()
        .relay(relay)
        .token(viewer_token(&plan.token_secret, user))
        .trust_pem(&plan.cert_pem)?
        .redundancy(plan.redundancy)
        .connect()
        .await
}

struct Member {
    client: Client,
    room: Room,
}

/// How the audience connected.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectReport {
    /// Clients asked for.
    pub wanted: usize,
    /// Clients connected and in the room.
    pub connected: usize,
    /// Clients that failed twice (connect or join).
    pub failed: usize,
    /// Connect attempts that failed and were retried.
    pub retried: usize,
    /// Clients per batch.
    pub batch: usize,
    /// The whole phase.
    #[serde(rename = "took_s", serialize_with = "super::stats::secs")]
    pub took: Duration,
    /// Each client's `connect()` (relay probe, handshake, hello, welcome).
    pub connect: Summary,
    /// Each client's `join()` (until the room's state arrived).
    pub join: Summary,
    /// The first errors seen, for the report.
    pub errors: Vec<String>,
}

/// A connected audience in one room.
pub struct Audience {
    members: Vec<Member>,
}

impl Audience {
    /// Connect `plan.clients` clients, `plan.batch` at a time, each joining
    /// the room. `progress` hears about every few hundred.
    pub async fn connect(
        plan: &FanoutPlan,
        progress: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<(Audience, ConnectReport)> {
        let started = Instant::now();
        let deadline = started + plan.connect_limit;
        let plan_arc = Arc::new(plan.clone());
        let mut members = Vec::with_capacity(plan.clients);
        let mut report = ConnectReport {
            wanted: plan.clients,
            batch: plan.batch.max(1),
            ..ConnectReport::default()
        };
        let (mut connect_lat, mut join_lat) = (Latencies::new(), Latencies::new());
        let mut next_progress = 250;
        let mut user = plan.first_user;
        while members.len() + report.failed < plan.clients {
            if Instant::now() > deadline {
                report.errors.push(format!(
                    "connect phase stopped at its limit of {:?}",
                    plan.connect_limit
                ));
                break;
            }
            let n = report
                .batch
                .min(plan.clients - members.len() - report.failed);
            let mut set = JoinSet::new();
            for _ in 0..n {
                let plan = plan_arc.clone();
                let u = user;
                user += 1;
                set.spawn(async move {
                    let mut retried = 0;
                    let t = Instant::now();
                    let client = match connect_one(&plan, plan.relay, u).await {
                        Ok(c) => c,
                        Err(_) => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            connect_one(&plan, plan.relay, u)
                                .await
                                .map_err(|e| (retried, format!("connect: {e}")))?
                        }
                    };
                    let connected = t.elapsed();
                    let t = Instant::now();
                    let room =
                        tokio::time::timeout(Duration::from_secs(10), client.join(plan.room))
                            .await
                            .map_err(|_| (retried, "join: timed out".to_string()))?
                            .map_err(|e| (retried, format!("join: {e}")))?;
                    let joined = t.elapsed();
                    Ok::<_, (usize, String)>((Member { client, room }, connected, joined, retried))
                });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok((m, c, j, retried))) => {
                        connect_lat.record(c);
                        join_lat.record(j);
                        report.retried += retried;
                        members.push(m);
                    }
                    Ok(Err((retried, e))) => {
                        report.retried += retried;
                        report.failed += 1;
                        if report.errors.len() < 5 {
                            report.errors.push(e);
                        }
                    }
                    Err(e) => {
                        report.failed += 1;
                        if report.errors.len() < 5 {
                            report.errors.push(format!("task: {e}"));
                        }
                    }
                }
            }
            if members.len() >= next_progress {
                progress(&format!(
                    "  {} clients connected in {:.1} s",
                    members.len(),
                    started.elapsed().as_secs_f64()
                ));
                next_progress += 250;
            }
        }
        report.took = started.elapsed();
        report.connected = members.len();
        report.connect = connect_lat.summary();
        report.join = join_lat.summary();
        Ok((Audience { members }, report))
    }

    /// Clients in the room.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nobody connected.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Run the sender and time every delivery. The sender is one more SDK
    /// client (user `first_user + clients`) on `plan.sender_relay`.
    pub async fn fan_out(
        &mut self,
        plan: &FanoutPlan,
        progress: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<FanoutReport> {
        let sender_user = plan.first_user + plan.clients as u64;
        let sender = connect_one(plan, plan.sender_relay, sender_user)
            .await
            .context("connecting the sender")?;
        let session = sender.session();
        let room = Arc::new(
            tokio::time::timeout(Duration::from_secs(10), sender.join(plan.room))
                .await
                .context("the sender's join timed out")?
                .context("the sender's join")?,
        );

        // One watcher task per client, recording sightings of the sender's gifts.
        let (stop_tx, stop_rx) = watch::channel(false);
        let seen_total = Arc::new(AtomicU64::new(0));
        let mut watchers = JoinSet::new();
        for m in &self.members {
            let rx = m.room.updates();
            watchers.spawn(watch_updates(
                rx,
                session,
                stop_rx.clone(),
                seen_total.clone(),
            ));
        }

        let rate = plan.rate.max(0.1);
        let total = ((rate * plan.duration.as_secs_f64()).round() as u64).max(1);
        let send_start = Instant::now();
        let (mut gifts, issued) = send_gifts(&room, rate, total, send_start + plan.duration).await;
        let send_took = send_start.elapsed();
        progress(&format!(
            "  sent {issued} gifts in {:.2} s; waiting for acks and deliveries",
            send_took.as_secs_f64()
        ));

        let ack_deadline = Instant::now() + plan.drain.max(Duration::from_secs(2));
        let acked = Acks::collect(&mut gifts, issued, ack_deadline).await;

        // Wait until every client saw every applied gift, or the drain limit.
        let expected = acked.sent.len() as u64 * self.members.len() as u64;
        let drain_start = Instant::now();
        let drain_deadline = drain_start + plan.drain;
        while seen_total.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drained = seen_total.load(Ordering::Relaxed) >= expected;
        let drained_in = drain_start.elapsed();
        let _ = stop_tx.send(true);
        let records = collect_sightings(&mut watchers).await?;
        sender.close().await;

        let audience = self.members.len() as u64;
        let t = Tally::of(&records, &acked.sent, plan.duration, audience);
        Ok(FanoutReport {
            audience: self.members.len(),
            rate,
            planned: total,
            issued,
            applied: acked.sent.len() as u64,
            rejected: acked.rejected,
            errors: acked.errors,
            error_text: acked.error_text,
            send_took,
            expected,
            delivered: t.delivered,
            missing: expected.saturating_sub(t.delivered),
            unmatched: t.unmatched,
            lagged: t.lagged,
            snapshots: t.snapshots,
            drained,
            drained_in,
            complete_events: t.complete_events,
            delivery: t.delivery.summary(),
            origin_delivery: Summary::default(),
            relay_us_per_delivery: None,
            clients_us_per_delivery: None,
            by_second: t
                .by_second
                .iter()
                .filter(|l| !l.is_empty())
                .map(Latencies::summary)
                .collect(),
            all_clients: t.all_clients.summary(),
            ack: acked.acks.summary(),
            span: t.span,
            deliveries_per_sec: if t.span.is_zero() {
                0.0
            } else {
                t.delivered as f64 / t.span.as_secs_f64()
            },
        })
    }

    /// Say goodbye for every client (each sends `Bye` and closes).
    pub async fn close(self) {
        for m in self.members {
            m.client.close().await;
        }
        // Let the goodbyes leave before the endpoints are dropped.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What one client saw.
#[derive(Debug, Default)]
struct Sightings {
    /// (action counter of the sender's session, when seen).
    seen: Vec<(u64, Instant)>,
    lagged: u64,
    snapshots: u64,
}

async fn watch_updates(
    mut rx: broadcast::Receiver<Update>,
    sender: SessionId,
    mut stop: watch::Receiver<bool>,
    total: Arc<AtomicU64>,
) -> Sightings {
    let mut s = Sightings::default();
    loop {
        tokio::select! {
            biased;
            u = rx.recv() => match u {
                // Only the gift itself: the first gift into an unopened room
                // also causes its `Opened` event.
                Ok(Update::Event(e)) if matches!(e.kind, protocol::EventKind::Gift { .. }) => {
                    if let Some(cause) = e.cause.filter(|c| c.session == sender) {
                        s.seen.push((cause.n, Instant::now()));
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Update::Event(_)) => {}
                Ok(Update::Snapshot(_)) => s.snapshots += 1,
                Err(broadcast::error::RecvError::Lagged(n)) => s.lagged += n,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = stop.changed() => break,
        }
    }
    s
}

/// What the fan-out measured.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    /// Clients in the room (besides the sender).
    pub audience: usize,
    /// Gifts per second asked for.
    pub rate: f64,
    /// Gifts planned (rate × duration).
    pub planned: u64,
    /// Gifts sent.
    pub issued: u64,
    /// Gifts applied by the origin.
    pub applied: u64,
    /// Gifts rejected.
    pub rejected: u64,
    /// Gifts that failed (SDK error, or no ack in time).
    pub errors: u64,
    /// The first few failures, for humans.
    pub error_text: Vec<String>,
    /// From the first send to the last.
    pub send_took: Duration,
    /// applied × audience.
    pub expected: u64,
    /// Sightings of applied gifts.
    pub delivered: u64,
    /// expected − delivered.
    pub missing: u64,
    /// Sightings of gifts whose ack never came.
    pub unmatched: u64,
    /// Updates a client's receiver missed because it fell behind.
    pub lagged: u64,
    /// Snapshots clients got instead of events (after a gap).
    pub snapshots: u64,
    /// Whether every expected delivery happened before the drain limit.
    pub drained: bool,
    /// How long after the last ack the deliveries took to complete.
    pub drained_in: Duration,
    /// Gifts seen by every client.
    pub complete_events: u64,
    /// Send → a client saw it, over every (client, gift).
    pub delivery: Summary,
    /// The origin's stamp on the event → a client saw it (empty when the
    /// audience does not record stamps).
    pub origin_delivery: Summary,
    /// The relay's CPU over the run per delivery, µs.
    pub relay_us_per_delivery: Option<f64>,
    /// The clients' (this process's) CPU over the run per delivery, µs.
    pub clients_us_per_delivery: Option<f64>,
    /// The same, for the gifts sent in each second of the run (a queue that
    /// grows shows as rising figures).
    pub by_second: Vec<Summary>,
    /// Send → the last client saw it, per gift.
    pub all_clients: Summary,
    /// The sender's ack latency while the fan-out runs.
    pub ack: Summary,
    /// From the first send to the last sighting.
    pub span: Duration,
    /// delivered / span.
    pub deliveries_per_sec: f64,
}

/// Gift `total` times at `rate` per second, each gift in a task of its
/// own; stop early 5 s after `end`. Returns the tasks and how many there
/// are.
pub(crate) async fn send_gifts(
    room: &Arc<Room>,
    rate: f64,
    total: u64,
    end: Instant,
) -> (JoinSet<GiftResult>, u64) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut gifts = JoinSet::new();
    let hard_stop = end + Duration::from_secs(5);
    let mut issued = 0u64;
    for _ in 0..total {
        tick.tick().await;
        if Instant::now() > hard_stop {
            break;
        }
        let room = room.clone();
        gifts.spawn(async move {
            let t0 = Instant::now();
            let r = room.gift(GiftId(1), 1).await;
            (t0, r)
        });
        issued += 1;
    }
    (gifts, issued)
}

/// Every watcher's sightings, once they were told to stop (5 s at most).
async fn collect_sightings(watchers: &mut JoinSet<Sightings>) -> anyhow::Result<Vec<Sightings>> {
    let mut records = Vec::with_capacity(watchers.len());
    let collect_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(collect_deadline.into(), watchers.join_next()).await {
            Ok(Some(Ok(r))) => records.push(r),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                watchers.abort_all();
                bail!("watcher tasks did not stop within 5 s");
            }
        }
    }
    Ok(records)
}

/// A gift task's result: when it was called, and what came back.
pub(crate) type GiftResult = (Instant, Result<client_sdk::Acked, client_sdk::Error>);

/// The sender's acks.
pub(crate) struct Acks {
    /// Applied gifts: action number → when `gift` was called.
    pub(crate) sent: HashMap<u64, Instant>,
    /// Their ack latency.
    pub(crate) acks: Latencies,
    pub(crate) rejected: u64,
    pub(crate) errors: u64,
    /// The first few failures.
    pub(crate) error_text: Vec<String>,
}

impl Acks {
    /// Wait for every gift task until `deadline`; the ones still out then
    /// count as errors.
    pub(crate) async fn collect(
        gifts: &mut JoinSet<GiftResult>,
        issued: u64,
        deadline: Instant,
    ) -> Acks {
        let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(issued as usize);
        let mut acks = Latencies::new();
        let (mut rejected, mut errors) = (0u64, 0u64);
        let mut error_text = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline.into(), gifts.join_next()).await;
            match next {
                Ok(Some(Ok((t0, Ok(acked))))) => match acked.outcome {
                    Outcome::Applied { .. } => {
                        acks.record(acked.latency);
                        sent.insert(acked.id.n, t0);
                    }
                    Outcome::Rejected { reason } => {
                        rejected += 1;
                        if error_text.len() < 3 {
                            error_text.push(format!("rejected: {reason:?}"));
                        }
                    }
                    Outcome::Unknown => {
                        rejected += 1;
                        if error_text.len() < 3 {
                            error_text.push("unknown (stale)".into());
                        }
                    }
                },
                Ok(Some(Ok((_, Err(e))))) => {
                    errors += 1;
                    if error_text.len() < 3 {
                        error_text.push(e.to_string());
                    }
                }
                Ok(Some(Err(e))) => {
                    errors += 1;
                    if error_text.len() < 3 {
                        error_text.push(format!("task: {e}"));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    errors += gifts.len() as u64;
                    error_text.push(format!("{} gifts unacked at the deadline", gifts.len()));
                    gifts.abort_all();
                    break;
                }
            }
        }

        Acks {
            sent,
            acks,
            rejected,
            errors,
            error_text,
        }
    }
}

/// The sightings, matched to the sends.
struct Tally {
    delivery: Latencies,
    by_second: Vec<Latencies>,
    delivered: u64,
    unmatched: u64,
    lagged: u64,
    snapshots: u64,
    complete_events: u64,
    all_clients: Latencies,
    span: Duration,
}

impl Tally {
    fn of(
        records: &[Sightings],
        sent: &HashMap<u64, Instant>,
        duration: Duration,
        audience: u64,
    ) -> Tally {
        let mut delivery = Latencies::new();
        let first = sent.values().min().copied();
        let seconds = duration.as_secs_f64().ceil().max(1.0) as usize + 1;
        let mut by_second = vec![Latencies::new(); seconds];
        let mut last_per_event: HashMap<u64, (Duration, u64)> = HashMap::new();
        let (mut delivered, mut unmatched, mut lagged, mut snapshots) = (0u64, 0u64, 0u64, 0u64);
        let mut first_send = None::<Instant>;
        let mut last_seen = None::<Instant>;
        for t0 in sent.values() {
            first_send = Some(first_send.map_or(*t0, |f: Instant| f.min(*t0)));
        }
        for r in records {
            lagged += r.lagged;
            snapshots += r.snapshots;
            for (n, at) in &r.seen {
                let Some(t0) = sent.get(n) else {
                    unmatched += 1;
                    continue;
                };
                delivered += 1;
                let lat = at.saturating_duration_since(*t0);
                delivery.record(lat);
                if let Some(f) = first {
                    let k = t0.saturating_duration_since(f).as_secs() as usize;
                    by_second[k.min(seconds - 1)].record(lat);
                }
                let e = last_per_event.entry(*n).or_insert((Duration::ZERO, 0));
                e.0 = e.0.max(lat);
                e.1 += 1;
                last_seen = Some(last_seen.map_or(*at, |l: Instant| l.max(*at)));
            }
        }
        let mut all_clients = Latencies::new();
        let mut complete_events = 0u64;
        for (lat, count) in last_per_event.values() {
            if *count >= audience {
                complete_events += 1;
                all_clients.record(*lat);
            }
        }
        let span = match (first_send, last_seen) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        };
        Tally {
            delivery,
            by_second,
            delivered,
            unmatched,
            lagged,
            snapshots,
            complete_events,
            all_clients,
            span,
        }
    }
}
