//! The audience's stages, each a row of the targets: the loadgen's
//! viewers ([`super::loadgen`]) join one room in three growing steps.
//!
//! 1. `fanout_clients` viewers (100): one SDK sender gifts at each rate
//!    (1,000/s) — every delivery timed twice: from the sender's
//!    `room.gift()` call, and from the origin's stamp on the event;
//! 2. `burst_clients` viewers (1,000): single gifts, one at a time — send
//!    → the last viewer saw it;
//! 3. `clients` viewers (10,000): the relay's RSS per connected client,
//!    then the room quiet for `idle` — the relay's CPU for idle clients.
//!
//! Origin time on one machine: the origin's clock is the system clock read
//! at its start and advanced by `CLOCK_MONOTONIC`; the bench reads the
//! system clock once right after the origin is up ([`OriginClock`]) and
//! advances it the same way, so the two agree to within how far the system
//! clock was slewed between those two reads (microseconds).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use client_sdk::{Client, Room};
use protocol::{GiftId, SessionId};

use super::fanout::{self, Acks, ConnectReport, FanoutReport};
use super::loadgen::{Sighting, Viewers};
use super::stats::{Latencies, Summary};

/// Origin time as this process reads it (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct OriginClock {
    at: Instant,
    unix_us: u64,
}

impl OriginClock {
    /// Read the system clock now.
    pub fn now() -> OriginClock {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        OriginClock {
            at: Instant::now(),
            unix_us: u64::try_from(since.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Origin time (µs since the epoch) at `i`.
    pub fn at(&self, i: Instant) -> u64 {
        let d = i.saturating_duration_since(self.at).as_micros();
        self.unix_us + u64::try_from(d).unwrap_or(u64::MAX)
    }
}

/// The relay's memory with the audience connected.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryReport {
    /// Viewers connected at the end.
    pub clients: usize,
    /// The relay's RSS before any viewer connected, KiB.
    pub rss_before_kb: u64,
    /// Viewers at the middle reading.
    pub mid_clients: usize,
    /// The relay's RSS with `mid_clients` viewers, KiB.
    pub rss_mid_kb: u64,
    /// The relay's RSS with `clients` viewers, KiB.
    pub rss_after_kb: u64,
    /// (after − before) / clients, KiB.
    pub per_client_kib: f64,
    /// (after − mid) / (clients − mid): what one more viewer costs, KiB.
    pub marginal_kib: Option<f64>,
}

impl MemoryReport {
    /// The per-client figures from the three readings.
    pub fn new(before: u64, mid: (usize, u64), after: (usize, u64)) -> MemoryReport {
        let per_client_kib = after.1.saturating_sub(before) as f64 / after.0.max(1) as f64;
        let marginal_kib = (after.0 > mid.0 && mid.0 > 0)
            .then(|| after.1.saturating_sub(mid.1) as f64 / (after.0 - mid.0) as f64);
        MemoryReport {
            clients: after.0,
            rss_before_kb: before,
            mid_clients: mid.0,
            rss_mid_kb: mid.1,
            rss_after_kb: after.1,
            per_client_kib,
            marginal_kib,
        }
    }
}

/// Single gifts to a large audience.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BurstReport {
    /// Viewers.
    pub audience: usize,
    /// Gifts sent (and applied).
    pub gifts: u64,
    /// Gifts every viewer saw.
    pub complete: u64,
    /// Send → the last viewer saw it, per complete gift.
    pub last_client: Summary,
    /// The origin's stamp → the last viewer saw it.
    pub last_client_origin: Summary,
    /// Send → a viewer saw it, every (viewer, gift).
    pub delivery: Summary,
}

/// The sender: one more SDK client in the room.
pub(crate) struct Sender {
    client: Client,
    room: Arc<Room>,
    session: SessionId,
}

impl Sender {
    /// Connect as `user` to `relay` and join `room`.
    pub(crate) async fn connect(
        relay: std::net::SocketAddr,
        cert_pem: &str,
        token_secret: &str,
        user: u64,
        room: protocol::RoomId,
        redundancy: Option<Duration>,
    ) -> anyhow::Result<Sender> {
        let client = Client::builder()
            .relay(relay)
            .token(fanout::viewer_token(token_secret, user))
            .trust_pem(cert_pem)?
            .redundancy(redundancy)
            .connect()
            .await
            .context("connecting the sender")?;
        let room = tokio::time::timeout(Duration::from_secs(10), client.join(room))
            .await
            .context("the sender's join timed out")?
            .context("the sender's join")?;
        Ok(Sender {
            session: client.session(),
            client,
            room: Arc::new(room),
        })
    }

    /// Say goodbye.
    pub(crate) async fn close(self) {
        self.client.close().await;
    }
}

/// Wait until the viewers saw `want` gifts in all, or `limit` passed. A
/// measurement wait: the figures come from the recorded instants, this only
/// decides when to stop looking.
async fn wait_seen(viewers: &Viewers, want: u64, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while viewers.seen_total() < want {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// One fan-out at `rate` gifts/s for `duration` to the viewers.
pub(crate) async fn fan_out(
    viewers: &Viewers,
    sender: &Sender,
    clock: &OriginClock,
    rate: f64,
    duration: Duration,
    drain: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> FanoutReport {
    let _ = viewers.take();
    let base = viewers.seen_total();
    let rate = rate.max(0.1);
    let total = ((rate * duration.as_secs_f64()).round() as u64).max(1);
    let send_start = Instant::now();
    let (mut gifts, issued) =
        fanout::send_gifts(&sender.room, rate, total, send_start + duration).await;
    let send_took = send_start.elapsed();
    progress(&format!(
        "  sent {issued} gifts in {:.2} s; waiting for acks and deliveries",
        send_took.as_secs_f64()
    ));
    let acked = Acks::collect(
        &mut gifts,
        issued,
        Instant::now() + drain.max(Duration::from_secs(2)),
    )
    .await;
    let audience = viewers.len() as u64;
    let expected = acked.sent.len() as u64 * audience;
    let drain_start = Instant::now();
    let drained = wait_seen(viewers, base + expected, drain).await;
    let drained_in = drain_start.elapsed();
    let t = Tally::of(
        &viewers.take(),
        sender.session,
        &acked.sent,
        clock,
        duration,
        audience,
    );
    FanoutReport {
        audience: viewers.len(),
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
        lagged: 0,
        snapshots: 0,
        drained,
        drained_in,
        complete_events: t.complete,
        delivery: t.delivery.summary(),
        origin_delivery: t.origin.summary(),
        by_second: t
            .by_second
            .iter()
            .filter(|l| !l.is_empty())
            .map(Latencies::summary)
            .collect(),
        all_clients: t.last.summary(),
        ack: acked.acks.summary(),
        span: t.span,
        deliveries_per_sec: if t.span.is_zero() {
            0.0
        } else {
            t.delivered as f64 / t.span.as_secs_f64()
        },
        relay_us_per_delivery: None,
        clients_us_per_delivery: None,
    }
}

/// `count` single gifts, one at a time, each waited for (2 s at most) at
/// every viewer before the next, `gap` apart.
pub(crate) async fn bursts(
    viewers: &Viewers,
    sender: &Sender,
    clock: &OriginClock,
    count: u64,
    gap: Duration,
) -> BurstReport {
    let _ = viewers.take();
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    for _ in 0..count {
        let before = viewers.seen_total();
        let t0 = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), sender.room.gift(GiftId(1), 1)).await;
        if let Ok(Ok(a)) = r {
            if a.outcome.is_applied() {
                sent.insert(a.id.n, t0);
                wait_seen(
                    viewers,
                    before + viewers.len() as u64,
                    Duration::from_secs(2),
                )
                .await;
            }
        }
        tokio::time::sleep(gap).await;
    }
    let audience = viewers.len() as u64;
    let t = Tally::of(
        &viewers.take(),
        sender.session,
        &sent,
        clock,
        Duration::from_secs(1),
        audience,
    );
    BurstReport {
        audience: viewers.len(),
        gifts: sent.len() as u64,
        complete: t.complete,
        last_client: t.last.summary(),
        last_client_origin: t.last_origin.summary(),
        delivery: t.delivery.summary(),
    }
}

/// The sightings matched to the sends.
struct Tally {
    delivery: Latencies,
    origin: Latencies,
    by_second: Vec<Latencies>,
    last: Latencies,
    last_origin: Latencies,
    delivered: u64,
    unmatched: u64,
    complete: u64,
    span: Duration,
}

impl Tally {
    fn of(
        viewers: &[Vec<Sighting>],
        sender: SessionId,
        sent: &HashMap<u64, Instant>,
        clock: &OriginClock,
        duration: Duration,
        audience: u64,
    ) -> Tally {
        let first = sent.values().min().copied();
        let seconds = duration.as_secs_f64().ceil().max(1.0) as usize + 1;
        let mut t = Tally {
            delivery: Latencies::new(),
            origin: Latencies::new(),
            by_second: vec![Latencies::new(); seconds],
            last: Latencies::new(),
            last_origin: Latencies::new(),
            delivered: 0,
            unmatched: 0,
            complete: 0,
            span: Duration::ZERO,
        };
        // Per gift: (latest sighting, its origin stamp, sightings).
        let mut per_gift: HashMap<u64, (Instant, u64, u64)> = HashMap::new();
        let mut last_seen = None::<Instant>;
        for s in viewers.iter().flatten() {
            let Some(t0) = sent.get(&s.cause.n).filter(|_| s.cause.session == sender) else {
                t.unmatched += 1;
                continue;
            };
            t.delivered += 1;
            let lat = s.seen.saturating_duration_since(*t0);
            t.delivery.record(lat);
            t.origin.record(Duration::from_micros(
                clock.at(s.seen).saturating_sub(s.at.0),
            ));
            if let Some(f) = first {
                let k = t0.saturating_duration_since(f).as_secs() as usize;
                t.by_second[k.min(seconds - 1)].record(lat);
            }
            let e = per_gift.entry(s.cause.n).or_insert((s.seen, s.at.0, 0));
            e.0 = e.0.max(s.seen);
            e.2 += 1;
            last_seen = Some(last_seen.map_or(s.seen, |l: Instant| l.max(s.seen)));
        }
        for (n, (latest, at, count)) in &per_gift {
            if *count >= audience {
                t.complete += 1;
                if let Some(t0) = sent.get(n) {
                    t.last.record(latest.saturating_duration_since(*t0));
                }
                t.last_origin
                    .record(Duration::from_micros(clock.at(*latest).saturating_sub(*at)));
            }
        }
        if let (Some(f), Some(l)) = (first, last_seen) {
            t.span = l.saturating_duration_since(f);
        }
        t
    }
}

/// Connect more viewers; a stage whose growth connected nobody new is an
/// error worth its relay log.
pub(crate) async fn grow(
    viewers: &mut Viewers,
    n: usize,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<ConnectReport> {
    progress(&format!(
        "connecting viewers: {} → {n} ({} per client endpoint)",
        viewers.len(),
        n.min(viewers.per_endpoint())
    ));
    viewers.grow_to(n, progress).await
}

/// The idle row: the relay's cores with `clients` quiet viewers.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IdleReport {
    /// Viewers connected.
    pub clients: usize,
    /// How long it was measured.
    #[serde(rename = "wall_s", serialize_with = "super::stats::secs")]
    pub wall: Duration,
    /// The relay's cores on average.
    pub relay_cores: f64,
    /// The viewers' (this process's) cores on average.
    pub clients_cores: f64,
    /// UDP datagrams sent per second, machine-wide (both directions).
    pub datagrams_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ActionId, ServerTime};

    #[test]
    fn memory_per_client_is_the_growth_over_the_clients() {
        let m = MemoryReport::new(10_000, (1_000, 50_000), (10_000, 410_000));
        assert!((m.per_client_kib - 40.0).abs() < 1e-9, "{m:?}");
        assert_eq!(m.marginal_kib, Some(40.0));
        assert_eq!(MemoryReport::new(10, (0, 0), (5, 20)).marginal_kib, None);
    }

    #[test]
    fn the_tally_times_every_sighting_and_the_last_one_per_gift() {
        let clock = OriginClock::now();
        let t0 = clock.at + Duration::from_millis(10);
        let sender = SessionId(9);
        let sent: HashMap<u64, Instant> = [(1, t0)].into();
        let stamp = ServerTime(clock.at(t0) + 1_000);
        let saw = |ms: u64, session: u64| Sighting {
            cause: ActionId {
                session: SessionId(session),
                n: 1,
            },
            at: stamp,
            seen: t0 + Duration::from_millis(ms),
        };
        let viewers = vec![vec![saw(2, 9)], vec![saw(5, 9), saw(1, 4)]];
        let t = Tally::of(&viewers, sender, &sent, &clock, Duration::from_secs(1), 2);
        assert_eq!((t.delivered, t.unmatched, t.complete), (2, 1, 1));
        let last = t.last.summary();
        assert!((last.max_us - 5_000.0).abs() < 10.0, "{last:?}");
        // Seen 5 ms after the send, stamped 1 ms after it: 4 ms.
        let origin = t.last_origin.summary();
        assert!((origin.max_us - 4_000.0).abs() < 10.0, "{origin:?}");
        // Not everyone saw it: no "last client" figure.
        let t = Tally::of(&viewers, sender, &sent, &clock, Duration::from_secs(1), 3);
        assert_eq!(t.complete, 0);
    }
}
