//! `testbed bench --cluster`: cluster mode's costs beside the embedded
//! mode's, measured in one run on this machine, in process (the origin
//! nodes, the relay and the clients share this process; the NATS servers
//! are child processes):
//!
//! - **durable ack p50/p99**: one SDK client gifting one gift at a time
//!   through a relay, the SDK's `Acked::latency` (call → authoritative
//!   outcome), against (a) one embedded origin on its local write-ahead log
//!   (fdatasync), (b) three origin nodes on three clustered NATS servers
//!   with replicas 3 (an ack waits for a majority of the log's copies),
//!   beside (c) the quinn datagram echo floor.
//! - **throughput in durable actions per second**: `rooms` rooms, each
//!   with one SDK sender keeping `window` gifts in flight, for `for_`;
//!   applied acks per second with one node and with three (the same NATS
//!   cluster size and replicas), and the embedded origin beside them. On
//!   one 2-core machine the clients and the nodes share the cores, so the
//!   three-node figure shows what group commit over more writers costs
//!   here, not a fleet's scaling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client_sdk::Outcome;
use net::Identity;
use protocol::{GiftId, RoomId};
use tokio::task::JoinSet;

use super::echo;
use super::stats::{RoundTrips, Sampler, Sampling, Summary};
use crate::cluster::ClusterSpec;
use crate::topology::{Spec, Topology};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    /// The ack runs (warm-up, samples, limit, gap).
    pub acks: Sampling,
    /// Echo samples (the floor) and datagram size.
    pub echo: Sampling,
    /// Echo datagram size, bytes.
    pub echo_size: usize,
    /// NATS servers (clustered) and the logs' replicas.
    pub nats_servers: usize,
    /// Copies of each room log.
    pub replicas: usize,
    /// Rooms of the throughput runs, one sender each.
    pub rooms: usize,
    /// Gifts each sender keeps in flight.
    pub window: usize,
    /// How long each throughput run sends.
    pub for_: Duration,
}

/// One throughput run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// Origin nodes (0: the embedded origin).
    pub nodes: usize,
    /// Gifts acked `Applied`.
    pub applied: u64,
    /// Gifts that failed or were not applied.
    pub other: u64,
    /// The sending span, s.
    pub secs: f64,
    /// Applied per second.
    pub per_s: f64,
}

/// What `--cluster` measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterReport {
    /// The quinn echo floor.
    pub floor: Summary,
    /// Gift ack through the SDK, embedded origin.
    pub embedded_ack: Summary,
    /// Gift ack through the SDK, cluster mode.
    pub cluster_ack: Summary,
    /// Throughput: embedded, one node, three nodes.
    pub throughput: Vec<Throughput>,
}

fn topology_spec(name: &str, cluster: Option<ClusterSpec>, rooms: usize) -> Spec {
    Spec {
        name: name.into(),
        regions: vec!["bench".into()],
        open_rooms: (1..=rooms.max(1) as u64).map(RoomId).collect(),
        cluster,
        ..Spec::default()
    }
}

/// Run every measurement; `progress` hears what is going on.
pub async fn run(plan: &ClusterPlan, progress: &dyn Fn(&str)) -> anyhow::Result<ClusterReport> {
    let mut report = ClusterReport::default();
    progress("quinn echo floor");
    report.floor = floor(plan).await?.latencies.summary();
    let cluster = |nodes| ClusterSpec {
        nodes,
        nats_servers: plan.nats_servers,
        replicas: plan.replicas,
        ..ClusterSpec::default()
    };

    progress("embedded origin: gift acks, then throughput");
    let t = Topology::start(topology_spec("bench-embedded", None, plan.rooms)).await?;
    report.embedded_ack = acks(&t, plan.acks).await?.latencies.summary();
    report.throughput.push(throughput(&t, 0, plan).await?);
    t.shutdown().await;

    for nodes in [3, 1] {
        progress(&format!(
            "{nodes} origin node(s) on {} NATS servers (replicas {})",
            plan.nats_servers, plan.replicas
        ));
        let spec = topology_spec("bench-cluster", Some(cluster(nodes)), plan.rooms);
        let t = Topology::start(spec).await?;
        if nodes == 3 {
            report.cluster_ack = acks(&t, plan.acks).await?.latencies.summary();
        }
        report.throughput.push(throughput(&t, nodes, plan).await?);
        t.shutdown().await;
    }
    report.throughput.sort_by_key(|t| t.nodes);
    Ok(report)
}

async fn floor(plan: &ClusterPlan) -> anyhow::Result<RoundTrips> {
    let identity = Identity::self_signed(&["localhost"]).context("a certificate")?;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = {
        let identity = identity.clone();
        tokio::spawn(async move {
            echo::serve(
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                &identity,
                |a| {
                    let _ = addr_tx.send(a);
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    let addr = addr_rx.await.context("the echo did not start")?;
    let trips = echo::round_trips(addr, &identity.certs, plan.echo_size, plan.echo).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    trips
}

/// One SDK client gifting one at a time in room 1.
async fn acks(t: &Topology, how: Sampling) -> anyhow::Result<RoundTrips> {
    let client = t.client(1, &[], &[0]).await?;
    let room = client.join(RoomId(1)).await.context("joining room 1")?;
    let mut s = Sampler::new(how);
    while let Some(i) = s.next_trip() {
        match room.gift(GiftId(1), 1).await {
            Ok(a) if matches!(a.outcome, Outcome::Applied { .. }) => s.record(i, a.latency),
            _ => s.lost(),
        }
        s.pause().await;
    }
    let out = s.finish();
    client.close().await;
    Ok(out)
}

/// `plan.rooms` senders, one per room, `plan.window` gifts in flight each,
/// for `plan.for_`.
async fn throughput(t: &Topology, nodes: usize, plan: &ClusterPlan) -> anyhow::Result<Throughput> {
    let mut rooms = Vec::with_capacity(plan.rooms);
    let mut clients = Vec::with_capacity(plan.rooms);
    for r in 1..=plan.rooms.max(1) as u64 {
        let client = t.client(1000 + r, &[], &[0]).await?;
        rooms.push(Arc::new(client.join(RoomId(r)).await.context("joining")?));
        clients.push(client);
    }
    let start = Instant::now();
    let end = start + plan.for_;
    let mut senders = JoinSet::new();
    for room in &rooms {
        for _ in 0..plan.window.max(1) {
            let room = room.clone();
            senders.spawn(async move {
                let (mut applied, mut other) = (0u64, 0u64);
                // Bounded by the deadline: each gift resolves or fails.
                while Instant::now() < end {
                    match room.gift(GiftId(1), 1).await {
                        Ok(a) if matches!(a.outcome, Outcome::Applied { .. }) => applied += 1,
                        _ => other += 1,
                    }
                }
                (applied, other)
            });
        }
    }
    let (mut applied, mut other) = (0, 0);
    while let Some(r) = senders.join_next().await {
        let (a, o) = r.unwrap_or((0, 0));
        applied += a;
        other += o;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(rooms);
    for c in clients {
        c.close().await;
    }
    Ok(Throughput {
        nodes,
        applied,
        other,
        secs,
        per_s: applied as f64 / secs.max(1e-9),
    })
}

/// The report's text: each figure beside its peer.
pub fn render(r: &ClusterReport, plan: &ClusterPlan) -> String {
    use std::fmt::Write as _;
    let ms = |us: f64| format!("{:.2} ms", us / 1000.0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Cluster mode ({} NATS servers, replicas {}), same run, in process:",
        plan.nats_servers, plan.replicas
    );
    let _ = writeln!(
        o,
        "  durable gift ack (SDK call -> outcome, one at a time):"
    );
    let row = |o: &mut String, what: &str, s: &Summary| {
        let _ = writeln!(
            o,
            "    {what:<34} p50 {:>9}  p99 {:>9}  ({} samples)",
            ms(s.p50_us),
            ms(s.p99_us),
            s.count
        );
    };
    row(&mut o, "quinn echo floor (round trip)", &r.floor);
    row(&mut o, "embedded origin (local WAL)", &r.embedded_ack);
    row(&mut o, "cluster, 3 nodes (JetStream R3)", &r.cluster_ack);
    let _ = writeln!(
        o,
        "    cluster - embedded: p50 {:+.2} ms, p99 {:+.2} ms (the replicated append's cost)",
        (r.cluster_ack.p50_us - r.embedded_ack.p50_us) / 1000.0,
        (r.cluster_ack.p99_us - r.embedded_ack.p99_us) / 1000.0
    );
    let _ = writeln!(
        o,
        "  durable actions/s ({} rooms, {} in flight each, {:.0} s):",
        plan.rooms,
        plan.window,
        plan.for_.as_secs_f64()
    );
    let base = r.throughput.iter().find(|t| t.nodes == 1).map(|t| t.per_s);
    for t in &r.throughput {
        let who = match t.nodes {
            0 => "embedded origin".to_owned(),
            n => format!("cluster, {n} node(s)"),
        };
        let vs = match (t.nodes, base) {
            (n, Some(b)) if n > 1 && b > 0.0 => format!("  ({:.2}x one node)", t.per_s / b),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "    {who:<34} {:>9.0} /s  ({} applied, {} not){vs}",
            t.per_s, t.applied, t.other
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_puts_each_figure_beside_its_peer() {
        let s = |p50, p99| Summary {
            count: 10,
            p50_us: p50,
            p99_us: p99,
            ..Summary::default()
        };
        let t = |nodes, per_s| Throughput {
            nodes,
            applied: 100,
            other: 0,
            secs: 1.0,
            per_s,
        };
        let r = ClusterReport {
            floor: s(100.0, 200.0),
            embedded_ack: s(1000.0, 3000.0),
            cluster_ack: s(2500.0, 6000.0),
            throughput: vec![t(0, 9000.0), t(1, 4000.0), t(3, 6000.0)],
        };
        let plan = ClusterPlan {
            acks: Sampling {
                warmup: 0,
                samples: 1,
                limit: Duration::from_secs(1),
                gap: Duration::ZERO,
            },
            echo: Sampling {
                warmup: 0,
                samples: 1,
                limit: Duration::from_secs(1),
                gap: Duration::ZERO,
            },
            echo_size: 32,
            nats_servers: 3,
            replicas: 3,
            rooms: 8,
            window: 4,
            for_: Duration::from_secs(5),
        };
        let text = render(&r, &plan);
        assert!(text.contains("p50 +1.50 ms, p99 +3.00 ms"), "{text}");
        assert!(text.contains("(1.50x one node)"), "{text}");
        assert!(text.contains("embedded origin (local WAL)"), "{text}");
    }
}
