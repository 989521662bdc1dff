//! `testbed failover`: clients on one relay, gifting; the relay dies (no
//! goodbye: its sockets go silent, as a crashed host's would). For each
//! client: when it noticed, and when it was resumed on the other relay.
//!
//! Each client keeps a warm standby connection to relay B (the SDK's
//! default): the origin notices relay A's link going silent, tells relay B,
//! and relay B tells the standbys, which resume at once. `--no-standby`
//! (with `--keep-alive-ms 200 --idle-timeout-ms 1000`, the old client
//! transport) measures the way it was: each client's idle timeout, then a
//! handshake with relay B. `--idle-secs S` measures what idle clients cost
//! the relays instead (`failover/idle.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use client_sdk::{Client, ClientEvent, Room};
use hdrhistogram::Histogram;
use protocol::{GiftId, RoomId};
use testbed::topology::{fast_rules, Spec, Topology};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

mod idle;

/// Options of `testbed failover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Clients on the relay that dies.
    #[arg(long, default_value_t = 200)]
    clients: u64,
    /// How many times to run the whole experiment.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Idle timeout of client connections, ms (what detection waits for
    /// without a standby).
    #[arg(long, default_value_t = net::Tuning::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
    /// Keep-alive interval of client connections, ms.
    #[arg(long, default_value_t = net::Tuning::default().keep_alive_ms)]
    keep_alive_ms: u64,
    /// No warm standby connection: clients notice by their idle timeout and
    /// then connect to relay B (the baseline).
    #[arg(long)]
    no_standby: bool,
    /// Instead of the failover: the clients idle this long, seconds, and
    /// the relays' CPU per idle client is measured (relays and origin in
    /// processes of their own).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    idle_secs: f64,
}

/// The goal for "relay death → resumed", p99 (issue 11).
const RESUMED_P99_GOAL_MS: f64 = 1000.0;

const ROOM: RoomId = RoomId(1);

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A client on the relay that dies: its events, itself, its room.
type Member = (broadcast::Receiver<ClientEvent>, Client, Room);

/// Every run's moments, from the relay's death.
struct Times {
    /// When each client noticed.
    detect: Histogram<u64>,
    /// When each client was resumed on relay B.
    resume: Histogram<u64>,
    /// Resumes rebuilt from a snapshot (not continued).
    rebuilt: u64,
}

/// Run the experiment.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.idle_secs > 0.0 {
        return idle::run(&args, Duration::from_secs_f64(args.idle_secs)).await;
    }
    let mut times = Times {
        detect: Histogram::<u64>::new(3)?,
        resume: Histogram::<u64>::new(3)?,
        rebuilt: 0,
    };
    println!(
        "testbed failover: {} clients on relay A, relay A dies, they move to relay B ({} runs; client keep-alive {} ms, idle timeout {} ms; {})",
        args.clients,
        args.runs,
        args.keep_alive_ms,
        args.idle_timeout_ms,
        match args.no_standby {
            true => "no standby",
            false => "warm standby on relay B",
        }
    );
    for run in 1..=args.runs {
        one_run(&args, run, &mut times).await?;
    }
    times.print();
    Ok(())
}

/// One run: a fresh topology, the clients gifting, relay A killed, every
/// client's moments recorded in `times`, then agreement with the origin.
async fn one_run(args: &Args, run: u32, times: &mut Times) -> anyhow::Result<()> {
    let spec = Spec {
        name: format!("failover-{run}"),
        rules: fast_rules(),
        ..Spec::default()
    };
    let mut t = Topology::start(spec).await?;
    let mut clients = connect(args, &t).await?;
    if !args.no_standby {
        standbys_ready(&clients).await?;
    }
    // Light traffic in flight: every client gifts every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = gift_steadily(&clients, &stop);
    // Each client's events are watched by a task of its own, so every
    // moment is stamped when it happens.
    let deadline = Instant::now() + Duration::from_secs(15);
    let watchers: Vec<_> = clients
        .iter_mut()
        .map(|(events, _, _)| tokio::spawn(watch(events.resubscribe(), deadline)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    t.relays[0].take().context("relay A")?.abort().await;
    for w in watchers {
        let (noticed, at, continuity) = w.await?.context("a client was not resumed in time")?;
        times.detect.record((noticed - killed).as_micros() as u64)?;
        times.resume.record((at - killed).as_micros() as u64)?;
        if continuity == client_sdk::Continuity::Rebuilt {
            times.rebuilt += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for s in senders {
        failed += s.await.unwrap_or(1);
    }
    let rooms: Vec<_> = clients.iter().map(|(_, _, r)| r).collect();
    t.converge(&rooms, Duration::from_secs(10)).await?;
    let state = t.origin_state(ROOM).await.context("room")?;
    println!(
        "run {run}: {} clients resumed; {} gifts counted at the origin; {failed} actions failed; all clients agree with the origin",
        clients.len(),
        state.gift_count
    );
    for (_, c, _) in clients {
        c.close().await;
    }
    t.shutdown().await;
    Ok(())
}

/// The clients, on relay A first and relay B second, each in the room.
async fn connect(args: &Args, t: &Topology) -> anyhow::Result<Vec<Member>> {
    let tuning = net::Tuning {
        idle_timeout_ms: args.idle_timeout_ms,
        keep_alive_ms: args.keep_alive_ms,
        ..Default::default()
    };
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let c = t
            .client_builder(100 + i, &[])
            .relays([t.relay_addr(0), t.relay_addr(1)])
            .probe(false)
            .standby(!args.no_standby)
            .tuning(tuning.clone())
            .connect()
            .await
            .with_context(|| format!("client {i}"))?;
        let r = c.join(ROOM).await.context("join")?;
        clients.push((c.events(), c, r));
    }
    Ok(clients)
}

/// Wait until every client's standby is open (they open shortly after the
/// live connection), at most 10 s.
async fn standbys_ready(clients: &[Member]) -> anyhow::Result<()> {
    for (i, (_, c, _)) in clients.iter().enumerate() {
        let mut w = c.standby_watch();
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(Option::is_some))
            .await
            .with_context(|| format!("client {i} opened no standby in 10 s"))?
            .with_context(|| format!("client {i} stopped"))?;
    }
    Ok(())
}

/// One task per client gifting every 200 ms until `stop`; each returns how
/// many of its gifts were not applied.
fn gift_steadily(clients: &[Member], stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u32>> {
    let mut senders = Vec::new();
    for (_, _, r) in clients {
        let (r, stop) = (r.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let mut failed = 0u32;
            for _ in 0..1000 {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if !r
                    .gift(GiftId(1), 1)
                    .await
                    .map(|a| a.outcome.is_applied())
                    .unwrap_or(false)
                {
                    failed += 1;
                }
            }
            failed
        }));
    }
    senders
}

/// When a client noticed its relay had gone and when it was resumed, and
/// how (`None`: not resumed by `deadline`).
async fn watch(
    mut events: broadcast::Receiver<ClientEvent>,
    deadline: Instant,
) -> Option<(Instant, Instant, client_sdk::Continuity)> {
    let mut noticed = None;
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), events.recv())
            .await
            .ok()?;
        match ev {
            Ok(ClientEvent::Moving { .. }) => noticed = Some(Instant::now()),
            Ok(ClientEvent::Reconnected {
                continuity, took, ..
            }) => {
                let at = Instant::now();
                return Some((noticed.unwrap_or(at - took), at, continuity));
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

impl Times {
    /// The table of every run's moments.
    fn print(&self) {
        println!();
        println!("time from the relay's death (ms)   p50      p99      max");
        for (name, h) in [
            ("noticed", &self.detect),
            ("resumed on relay B", &self.resume),
        ] {
            println!(
                "  {name:<30} {:>8.1} {:>8.1} {:>8.1}",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        }
        let p99 = ms(self.resume.value_at_quantile(0.99));
        println!(
            "  relay death → resumed, p99: {p99:.1} ms (goal < {RESUMED_P99_GOAL_MS:.0} ms): {}",
            match p99 < RESUMED_P99_GOAL_MS {
                true => "met",
                false => "NOT met",
            }
        );
        println!(
            "  resumes rebuilt from a snapshot: {} of {}",
            self.rebuilt,
            self.resume.len()
        );
    }
}
