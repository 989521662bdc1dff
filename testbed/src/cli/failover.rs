//! `testbed failover`: clients on one relay, gifting; the relay dies (no
//! goodbye: its socket goes silent, as a crashed host's would). For each
//! client: when it noticed, and when it was resumed on the other relay.

use std::time::{Duration, Instant};

use anyhow::Context;
use client_sdk::ClientEvent;
use hdrhistogram::Histogram;
use protocol::{GiftId, RoomId};
use testbed::topology::{fast_rules, Spec, Topology};

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

/// Run the experiment.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut detect = Histogram::<u64>::new(3)?;
    let mut resume = Histogram::<u64>::new(3)?;
    let mut rebuilt = 0u64;
    println!(
        "testbed failover: {} clients on relay A, relay A dies, they move to relay B ({} runs, idle timeout {} ms)",
        args.clients, args.runs, args.idle_timeout_ms
    );
    for run in 1..=args.runs {
        let spec = Spec {
            name: format!("failover-{run}"),
            rules: fast_rules(),
            ..Spec::default()
        };
        let mut t = Topology::start(spec).await?;
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
        // Light traffic in flight: every client gifts every 200 ms.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut senders = Vec::new();
        for (_, _, r) in &clients {
            let (r, stop) = (r.clone(), stop.clone());
            senders.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                let mut failed = 0u32;
                for _ in 0..1000 {
                    tick.tick().await;
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
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
        // Each client's events are watched by a task of its own, so every
        // moment is stamped when it happens.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut watchers = Vec::new();
        for (events, _, _) in clients.iter_mut() {
            let mut events = events.resubscribe();
            watchers.push(tokio::spawn(async move {
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
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        t.relays[0].take().context("relay A")?.abort().await;
        for w in watchers {
            let (noticed, at, continuity) = w.await?.context("a client was not resumed in time")?;
            detect.record((noticed - killed).as_micros() as u64)?;
            resume.record((at - killed).as_micros() as u64)?;
            if continuity == client_sdk::Continuity::Rebuilt {
                rebuilt += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
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
    }
    println!();
    println!("time from the relay's death (ms)   p50      p99      max");
    for (name, h) in [
        ("noticed (idle timeout)", &detect),
        ("resumed on relay B", &resume),
    ] {
        println!(
            "  {name:<30} {:>8.1} {:>8.1} {:>8.1}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    println!(
        "  resumes rebuilt from a snapshot: {rebuilt} of {}",
        resume.len()
    );
    Ok(())
}
