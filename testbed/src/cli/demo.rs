//! `testbed demo`: a whole local topology — an origin, two relays in two
//! regions, two hosts and their viewers — playing a PK battle with gifts from
//! both sides and seating a co-host, narrated as it happens. At the end every
//! client's mirrored state is compared with the origin's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use client_sdk::{Client, Room, Update};
use hdrhistogram::Histogram;
use protocol::room::BattlePhase;
use protocol::{EventKind, GiftId, RoomId, UserId};
use testbed::topology::{fast_rules, Spec, Topology};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Options of `testbed demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Viewers per room (they split across both relays).
    #[arg(long, default_value_t = 10)]
    viewers: u64,
    /// Battle length in seconds.
    #[arg(long, default_value_t = 8)]
    battle_secs: u32,
    /// Gifts each viewer sends per second during the battle.
    #[arg(long, default_value_t = 2.0)]
    gifts_per_sec: f64,
}

const A: RoomId = RoomId(1);
const B: RoomId = RoomId(2);

struct Narrator {
    start: Instant,
}

impl Narrator {
    fn say(&self, line: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {}", line.as_ref());
    }
}

fn describe(room: RoomId, e: &EventKind) -> Option<String> {
    Some(match e {
        EventKind::PkInvited(i) if i.to == room => format!(
            "{room}: invitation from {} to a {} s PK battle",
            i.from, i.duration_secs
        ),
        EventKind::PkStarted(b) if b.rooms[0] == room => format!(
            "{room}: PK {} started against {}; the bell in {:.1} s (origin time {})",
            b.id,
            b.rooms[1],
            (b.ends_at - b.started_at).as_secs_f64(),
            b.ends_at
        ),
        EventKind::PkBell { battle } => {
            format!("{room}: BELL for {battle} — settlement grace begins")
        }
        EventKind::PkSettled { result, .. } if result.rooms[0] == room => {
            let winner = match result.winner {
                Some(w) => format!("{w} wins"),
                None => "a draw".into(),
            };
            format!(
                "{room}: PK {} SETTLED {} : {} — {winner}",
                result.battle, result.scores[0], result.scores[1]
            )
        }
        EventKind::PkClosed { battle } if room == A => format!("{room}: {battle} closed"),
        EventKind::SeatInvited { user, seat, .. } => {
            format!(
                "{room}: host invites {user} to seat {}",
                seat.map_or("any".into(), |s| s.to_string())
            )
        }
        EventKind::SeatTaken { seat, user } => {
            format!("{room}: {user} takes seat {seat} beside the host")
        }
        EventKind::SeatMuted { seat, mute } => format!("{room}: seat {seat} mute: {mute:?}"),
        EventKind::ChallengeStarted(c) => format!(
            "{room}: challenge {:?} within {} s",
            c.goal,
            (c.ends_at - c.started_at).as_secs()
        ),
        EventKind::ChallengeEnded {
            success, progress, ..
        } => {
            format!(
                "{room}: challenge {} at {progress}",
                if *success { "REACHED" } else { "missed" }
            )
        }
        _ => return None,
    })
}

/// The demo's clients: two hosts in their rooms, and the viewers.
struct Cast {
    host_a: Client,
    host_b: Client,
    /// Host A's room.
    ra: Room,
    /// Host B's room.
    rb: Room,
    viewers: Vec<(UserId, Client, Room)>,
}

/// Run the demo.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let n = Narrator {
        start: Instant::now(),
    };
    let t = start(&n).await?;
    let cast = Cast::join(&n, &t, args.viewers).await?;
    narrate_hosts(&n, [&cast.ra, &cast.rb]);
    let latencies = battle(&n, &args, &cast).await?;
    seat(&cast).await?;
    verdict(&n, &t, &cast, &latencies).await?;
    operator_view(&n, &t).await?;
    cast.close().await;
    t.shutdown().await;
    Ok(())
}

/// Start the topology (every part serving `/metrics`) and say where
/// everything listens.
async fn start(n: &Narrator) -> anyhow::Result<Topology> {
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse()?;
    let spec = Spec {
        name: "demo".into(),
        regions: vec!["eu-west".into(), "ap-south".into()],
        rules: origin::rules::Config {
            pk_grace: Duration::from_secs(1),
            pk_punishment: Duration::from_secs(2),
            ..fast_rules()
        },
        // Every part serves /metrics, as an operator would run it; the
        // retention window is short so the demo sees it close.
        origin: origin::Config {
            metrics_listen: Some(any_port),
            retention_window: Duration::from_secs(3),
            ..origin::Config::default()
        },
        relay: relay::Config {
            metrics_listen: Some(any_port),
            ..Spec::default().relay
        },
        ..Spec::default()
    };
    let t = Topology::start(spec).await?;
    n.say(format!(
        "origin on {} (write-ahead log in a temporary directory)",
        t.origin().addr()
    ));
    for (i, c) in t.relay_configs.iter().enumerate() {
        n.say(format!(
            "relay {} ({}) on {}",
            c.name,
            c.region,
            t.relay_addr(i)
        ));
    }
    let mut endpoints = vec![("origin".to_string(), t.origin().metrics_addr())];
    for (i, c) in t.relay_configs.iter().enumerate() {
        let addr = t.relays[i].as_ref().and_then(|r| r.metrics_addr());
        endpoints.push((c.name.clone(), addr));
    }
    for (name, addr) in &endpoints {
        if let Some(addr) = addr {
            n.say(format!("{name} metrics: curl http://{addr}/metrics"));
        }
    }
    Ok(t)
}

impl Cast {
    /// Hosts, each on the relay of its region; `viewers` per room,
    /// alternating relays.
    async fn join(n: &Narrator, t: &Topology, viewers: u64) -> anyhow::Result<Cast> {
        let host_a = t.client(1000, &[A], &[0]).await?;
        let host_b = t.client(2000, &[B], &[1]).await?;
        let ra = host_a.join(A).await.context("host A joins")?;
        let rb = host_b.join(B).await.context("host B joins")?;
        let mut joined = Vec::new();
        for i in 0..viewers * 2 {
            let room = if i % 2 == 0 { A } else { B };
            let relay = (i / 2 % 2) as usize;
            let c = t.client(100 + i, &[], &[relay]).await?;
            let r = c
                .join(room)
                .await
                .with_context(|| format!("viewer {i} joins"))?;
            joined.push((UserId(100 + i), c, r));
        }
        n.say(format!(
            "{} viewers joined rooms {A} and {B} across both relays",
            joined.len()
        ));
        Ok(Cast {
            host_a,
            host_b,
            ra,
            rb,
            viewers: joined,
        })
    }

    /// Close every client.
    async fn close(self) {
        for (_, c, _) in self.viewers {
            c.close().await;
        }
        self.host_a.close().await;
        self.host_b.close().await;
    }
}

/// Narrate what the hosts see, as it happens.
fn narrate_hosts(n: &Narrator, rooms: [&Room; 2]) {
    for room in rooms {
        let mut updates = room.updates();
        let id = room.id();
        let narrator = Narrator { start: n.start };
        tokio::spawn(async move {
            while let Ok(u) = updates.recv().await {
                if let Update::Event(e) = u {
                    if let Some(line) = describe(id, &e.kind) {
                        narrator.say(line);
                    }
                }
            }
        });
    }
}

/// The battle: A invites B, B accepts, every viewer gifts until the bell
/// with a scoreline every second, then the settlement. Returns the
/// viewers' gift ack latencies.
async fn battle(
    n: &Narrator,
    args: &Args,
    cast: &Cast,
) -> anyhow::Result<Arc<Mutex<Histogram<u64>>>> {
    let (ra, rb) = (&cast.ra, &cast.rb);
    n.say(format!(
        "host of {A} invites {B} to a {} s PK battle",
        args.battle_secs
    ));
    let acked = ra.pk_invite(B, args.battle_secs).await?;
    if !acked.outcome.is_applied() {
        bail!("invite refused: {:?}", acked.outcome);
    }
    let s = rb
        .wait_for(Duration::from_secs(5), |s| s.pk_invite.is_some())
        .await
        .context("B never saw the invitation")?;
    let battle = s.pk_invite.map(|i| i.battle).context("no invitation")?;
    rb.pk_accept(battle).await?;
    ra.wait_for(Duration::from_secs(5), |s| {
        s.battle
            .as_ref()
            .is_some_and(|b| b.phase == BattlePhase::Running)
    })
    .await
    .context("the battle never started")?;

    // Gifts from every viewer until the bell.
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let sent = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(u64::from(args.battle_secs));
    let tasks = send_gifts(args, cast, until, &latencies, &sent);
    // A scoreline every second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while Instant::now() < until {
        tick.tick().await;
        if let Some(b) = ra.state().battle {
            n.say(format!(
                "score {}:{}  ({} gifts acked so far)",
                b.scores[0],
                b.scores[1],
                sent.load(Ordering::Relaxed)
            ));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    ra.wait_for(Duration::from_secs(10), |s| {
        s.battle.as_ref().is_some_and(|b| b.result.is_some())
    })
    .await
    .context("no settlement")?;
    Ok(latencies)
}

/// One task per viewer gifting `args.gifts_per_sec` until `until`; each
/// applied gift counts in `sent` and its ack latency in `latencies`.
fn send_gifts(
    args: &Args,
    cast: &Cast,
    until: Instant,
    latencies: &Arc<Mutex<Histogram<u64>>>,
    sent: &Arc<AtomicU64>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let period = Duration::from_secs_f64(1.0 / args.gifts_per_sec.max(0.1));
    for (k, (_, _, room)) in cast.viewers.iter().enumerate() {
        let room: Room = room.clone();
        let (lat, sent) = (latencies.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut i = k;
            while Instant::now() < until {
                tick.tick().await;
                i += 1;
                let gift = GiftId(1 + (i % 3) as u32);
                if let Ok(a) = room.gift(gift, 1).await {
                    if a.outcome.is_applied() {
                        sent.fetch_add(1, Ordering::Relaxed);
                        let _ = lat.lock().await.record(a.latency.as_micros() as u64);
                    }
                }
            }
        }));
    }
    tasks
}

/// A co-host takes a seat: host A invites the first viewer to seat 0, the
/// guest accepts, the host mutes the seat.
async fn seat(cast: &Cast) -> anyhow::Result<()> {
    let (guest_id, _, guest) = &cast.viewers[0];
    cast.ra.seat_invite(*guest_id, Some(0)).await?;
    guest
        .wait_for(Duration::from_secs(5), |s| {
            s.seats.invite_for(*guest_id).is_some()
        })
        .await
        .context("the guest never saw the seat invitation")?;
    guest.seat_accept().await?;
    cast.ra.seat_mute(0, true).await?;
    Ok(())
}

/// Everyone agrees with the origin? Then the gift ack latencies and where
/// each room's log stands.
async fn verdict(
    n: &Narrator,
    t: &Topology,
    cast: &Cast,
    latencies: &Mutex<Histogram<u64>>,
) -> anyhow::Result<()> {
    let mut rooms: Vec<&Room> = cast.viewers.iter().map(|(_, _, r)| r).collect();
    rooms.push(&cast.ra);
    rooms.push(&cast.rb);
    t.converge(&rooms, Duration::from_secs(10)).await?;
    let mut seqs = BTreeMap::new();
    for r in &rooms {
        seqs.insert(r.id(), r.state().seq);
    }
    let h = latencies.lock().await;
    n.say(format!(
        "{} gifts acked; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (client → relay → origin (fsync) → relay → client)",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    ));
    n.say(format!(
        "all {} clients agree with the origin (room {A} at {}, room {B} at {})",
        rooms.len(),
        seqs[&A],
        seqs[&B],
    ));
    Ok(())
}

/// What an operator's Prometheus would show after the battle: the KPIs read
/// from the parts' own `/metrics` (the same figures the alert rules use).
async fn operator_view(n: &Narrator, t: &Topology) -> anyhow::Result<()> {
    use testbed::scrape::{http_get, quantile, sample};
    let Some(origin) = t.origin().metrics_addr() else {
        return Ok(());
    };
    // The retention check closes a few seconds after the settlement.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = http_get(origin, "/metrics").await?;
        let viewers = sample(&text, "ringside_post_event_viewers_total", &[]).unwrap_or(0.0);
        if viewers > 0.0 || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let v = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
    let pk = [("kind", "pk")];
    let started = v(
        "ringside_interaction_starts_total",
        &[("kind", "pk"), ("outcome", "started")],
    );
    let all = v("ringside_interaction_starts_total", &pk);
    n.say(format!(
        "operator view (origin /metrics): PK starts {started}/{all}, settled {}, gifts in the PK window {} (value {}), \
         gifters {} of {} viewers, still there {} of {} after the retention window",
        v("ringside_interaction_completions_total", &[("kind", "pk"), ("outcome", "settled")]),
        v("ringside_gifts_total", &[("window", "pk")]),
        v("ringside_gift_value_total", &[("window", "pk")]),
        v("ringside_interaction_gifters_total", &pk),
        v("ringside_interaction_viewers_total", &pk),
        v("ringside_post_event_retained_total", &[]),
        v("ringside_post_event_viewers_total", &[]),
    ));
    let ms = |q: Option<f64>| q.map_or("n/a".to_string(), |s| format!("{:.1} ms", s * 1e3));
    for (i, c) in t.relay_configs.iter().enumerate() {
        let Some(addr) = t.relays[i].as_ref().and_then(|r| r.metrics_addr()) else {
            continue;
        };
        let (_, text) = http_get(addr, "/metrics").await?;
        let gift = [("class", "gift")];
        n.say(format!(
            "operator view ({} /metrics): gift ack at the relay p50 {} p99 {}, {} sessions ended during the battle ({} abnormally)",
            c.region,
            ms(quantile(&text, "ringside_action_ack_seconds", &gift, 0.5)),
            ms(quantile(&text, "ringside_action_ack_seconds", &gift, 0.99)),
            sample(&text, "ringside_interaction_sessions_total", &pk).unwrap_or(0.0),
            sample(&text, "ringside_interaction_session_losses_total", &pk).unwrap_or(0.0),
        ));
    }
    Ok(())
}
