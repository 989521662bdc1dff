//! `testbed failover`: clients on one relay, gifting; the relay dies (no
//! goodbye: its socket goes silent, as a crashed host's would). For each
//! client: when it noticed, and when it was resumed on the other relay.

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

/// Options of `testbed failover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Clients on the relay that dies.
    #[arg(long, default_value_t = 200)]
    clients: u64,
    /// How many times to run the whole experiment.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Idle timeout of client connections, ms (what detection waits for).
    #[arg(long, default_value_t = net::Tuning::default().idle_timeout_ms)]
    idle_timeout_ms: u64,
}

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
    let mut times = Times {
        detect: Histogram::<u64>::new(3)?,
        resume: Histogram::<u64>::new(3)?,
        rebuilt: 0,
    };
    println!(
        "testbed failover: {} clients on relay A, relay A dies, they move to relay B ({} runs, idle timeout {} ms)",
        args.clients, args.runs, args.idle_timeout_ms
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
        ..Default::default()
    };
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let c = t
            .client_builder(100 + i, &[])
            .relays([t.relay_addr(0), t.relay_addr(1)])
            .probe(false)
            .tuning(tuning.clone())
            .connect()
            .await
            .with_context(|| format!("client {i}"))?;
        let r = c.join(ROOM).await.context("join")?;
        clients.push((c.events(), c, r));
    }
    Ok(clients)
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
            ("noticed (idle timeout)", &self.detect),
            ("resumed on relay B", &self.resume),
        ] {
            println!(
                "  {name:<30} {:>8.1} {:>8.1} {:>8.1}",
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        }
        println!(
            "  resumes rebuilt from a snapshot: {} of {}",
            self.rebuilt,
            self.resume.len()
        );
    }
}
