//! The audience part of `testbed bench`, in order: the NATS peer (when
//! asked, before any viewer connects, so both fan-outs meet the same quiet
//! servers), then the viewers' stages ([`super::stages`]), each measured as
//! a [`Phase`] of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use net::rustls::pki_types::CertificateDer;
use protocol::codec::Packer;
use protocol::message::ServerMsg;
use protocol::{ActionId, Event, EventKind, GiftId, RoomId, Seq, ServerTime, SessionId, UserId};

use super::fanout::{ConnectReport, FanoutReport};
use super::loadgen::{ViewerPlan, Viewers};
use super::meter::{Meter, Phase};
use super::nats::{self, NatsOutcome, NatsPlan};
use super::stages::{self, BurstReport, IdleReport, MemoryReport, OriginClock, Sender};
use super::sys;

/// What to run, and where.
#[derive(Debug, Clone)]
pub(crate) struct AudiencePlan {
    pub(crate) relay: SocketAddr,
    pub(crate) sender_relay: SocketAddr,
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) cert_pem: String,
    pub(crate) token_secret: String,
    pub(crate) room: RoomId,
    pub(crate) fanout_clients: usize,
    pub(crate) rates: Vec<f64>,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) burst_clients: usize,
    pub(crate) bursts: u64,
    pub(crate) clients: usize,
    pub(crate) idle: Duration,
    pub(crate) per_endpoint: usize,
    pub(crate) concurrency: usize,
    pub(crate) connect_limit: Duration,
    pub(crate) ping_every: Option<Duration>,
    pub(crate) viewer_threads: usize,
    pub(crate) redundancy: Option<Duration>,
    /// Run the NATS peer (with nats-server from here, or found).
    pub(crate) nats: Option<Option<PathBuf>>,
    /// Where the NATS server's log goes.
    pub(crate) dir: PathBuf,
    /// Processes measured per phase; the relay's and this one's index.
    pub(crate) pids: Vec<u32>,
    pub(crate) relay_index: usize,
    pub(crate) me_index: usize,
}

/// What the audience part measured.
#[derive(Debug, Clone, Default)]
pub struct AudienceReport {
    /// Each growth of the audience: its name and how it went.
    pub connects: Vec<(String, ConnectReport)>,
    /// The fan-out runs, one per rate.
    pub fanout: Vec<FanoutReport>,
    /// Single gifts to the burst audience.
    pub bursts: Option<BurstReport>,
    /// The relay's memory per connected client.
    pub memory: Option<MemoryReport>,
    /// The relay's CPU with the whole audience quiet.
    pub idle: Option<IdleReport>,
    /// The NATS peer, when asked for.
    pub nats: Option<NatsOutcome>,
    /// Size of one gift event's datagram, bytes (the NATS payload size).
    pub gift_bytes: usize,
    /// Client endpoints (UDP sockets) the viewers shared.
    pub endpoints: usize,
    /// Connections per client endpoint.
    pub per_endpoint: usize,
    /// Threads of the viewers' runtime (0: the bench's own).
    pub viewer_threads: usize,
    /// The phases (connects, fan-outs, bursts, idle).
    pub phases: Vec<Phase>,
    /// Anything that went wrong without stopping the run.
    pub notes: Vec<String>,
}

/// The size of one gift event as the relay sends it: one `Events` message
/// with one gift, in one datagram.
pub fn gift_bytes() -> usize {
    let e = Event {
        seq: Seq(1_000_000),
        at: ServerTime(1_764_000_000_000_000),
        cause: Some(ActionId {
            session: SessionId(u64::MAX / 3),
            n: 1_000,
        }),
        kind: EventKind::Gift {
            from: UserId(1_000_000),
            gift: GiftId(1),
            count: 1,
            value: 1,
            room_total: 1_000_000,
            pk: None,
        },
    };
    let mut p = Packer::new(1200);
    let _ = p.push(&ServerMsg::Events {
        room: RoomId(2),
        events: vec![e],
    });
    p.finish().first().map_or(0, |d| d.len())
}

/// Run the NATS peer, then the viewers' stages.
pub(crate) async fn run(
    plan: &AudiencePlan,
    clock: &OriginClock,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<AudienceReport> {
    let mut out = AudienceReport {
        gift_bytes: gift_bytes(),
        per_endpoint: plan.per_endpoint,
        viewer_threads: plan.viewer_threads,
        ..AudienceReport::default()
    };
    if let Some(server) = &plan.nats {
        let nplan = NatsPlan {
            server: server.clone(),
            dir: plan.dir.clone(),
            subscribers: plan.fanout_clients.max(1),
            rate: plan.rates.first().copied().unwrap_or(1000.0),
            duration: plan.duration,
            payload: out.gift_bytes,
            drain: plan.drain,
            threads: plan.viewer_threads,
        };
        out.nats = Some(match nats::run(&nplan, progress).await {
            Ok(o) => o,
            Err(e) => NatsOutcome::Skipped(format!("the NATS run failed: {e:#}")),
        });
    }
    let stages = [plan.fanout_clients, plan.burst_clients, plan.clients];
    if stages.iter().all(|n| *n == 0) {
        return Ok(out);
    }
    let rss0 = sys::rss_kb(plan.pids[plan.relay_index]).unwrap_or(0);
    let mut viewers = Viewers::new(ViewerPlan {
        relay: plan.relay,
        roots: plan.roots.clone(),
        token_secret: plan.token_secret.clone(),
        room: plan.room,
        per_endpoint: plan.per_endpoint,
        concurrency: plan.concurrency,
        first_user: 100_000,
        ping_every: plan.ping_every,
        connect_limit: plan.connect_limit,
        threads: plan.viewer_threads,
    })?;
    let sender = Sender::connect(
        plan.sender_relay,
        &plan.cert_pem,
        &plan.token_secret,
        99_999,
        plan.room,
        plan.redundancy,
    )
    .await?;
    let r = run_stages(plan, clock, &mut viewers, &sender, rss0, &mut out, progress).await;
    out.endpoints = viewers.endpoints();
    progress("closing the viewers");
    sender.close().await;
    viewers.close().await;
    r.map(|()| out)
}

async fn grow(
    plan: &AudiencePlan,
    viewers: &mut Viewers,
    n: usize,
    what: &str,
    out: &mut AudienceReport,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let meter = Meter::start(&plan.pids);
    let c = stages::grow(viewers, n, progress).await?;
    out.phases
        .push(meter.finish(format!("connect {n}"), &plan.pids));
    out.connects.push((what.into(), c));
    anyhow::ensure!(!viewers.is_empty(), "no viewer connected");
    Ok(())
}

async fn run_stages(
    plan: &AudiencePlan,
    clock: &OriginClock,
    viewers: &mut Viewers,
    sender: &Sender,
    rss0: u64,
    out: &mut AudienceReport,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let (relay, me) = (plan.relay_index, plan.me_index);
    if plan.fanout_clients > 0 {
        grow(
            plan,
            viewers,
            plan.fanout_clients,
            "fan-out audience",
            out,
            progress,
        )
        .await?;
        for rate in &plan.rates {
            progress(&format!(
                "fan-out: {rate} gifts/s for {:.1} s to {} viewers",
                plan.duration.as_secs_f64(),
                viewers.len()
            ));
            let meter = Meter::start(&plan.pids);
            let mut f = stages::fan_out(
                viewers,
                sender,
                clock,
                *rate,
                plan.duration,
                plan.drain,
                progress,
            )
            .await;
            let ph = meter.finish(format!("fan-out {rate}/s"), &plan.pids);
            let per = |i: usize| {
                let cpu = ph.cpu.get(i)?.as_secs_f64();
                (f.delivered > 0).then(|| cpu * 1e6 / f.delivered as f64)
            };
            f.relay_us_per_delivery = per(relay);
            f.clients_us_per_delivery = per(me);
            out.phases.push(ph);
            out.fanout.push(f);
        }
    }
    let mid = (viewers.len(), sys::rss_kb(plan.pids[relay]).unwrap_or(0));
    if plan.burst_clients > 0 && plan.bursts > 0 {
        grow(
            plan,
            viewers,
            plan.burst_clients,
            "burst audience",
            out,
            progress,
        )
        .await?;
        progress(&format!(
            "{} single gifts to {} viewers",
            plan.bursts,
            viewers.len()
        ));
        let meter = Meter::start(&plan.pids);
        let b = stages::bursts(
            viewers,
            sender,
            clock,
            plan.bursts,
            Duration::from_millis(50),
        )
        .await;
        out.phases.push(meter.finish("bursts", &plan.pids));
        out.bursts = Some(b);
    }
    if plan.clients > 0 {
        grow(
            plan,
            viewers,
            plan.clients,
            "memory and idle audience",
            out,
            progress,
        )
        .await?;
        // Let the handshakes' last packets and the first pings settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Only the viewers still connected count (a starved one can time out).
        let after = (viewers.live(), sys::rss_kb(plan.pids[relay]).unwrap_or(0));
        if after.0 < viewers.len() {
            out.notes.push(format!(
                "{} of {} viewers had lost their connection before the memory and idle rows",
                viewers.len() - after.0,
                viewers.len()
            ));
        }
        out.memory = Some(MemoryReport::new(rss0, mid, after));
        progress(&format!(
            "{} viewers idle for {:.1} s",
            viewers.len(),
            plan.idle.as_secs_f64()
        ));
        let meter = Meter::start(&plan.pids);
        tokio::time::sleep(plan.idle).await;
        let live = viewers.live();
        let ph = meter.finish(format!("idle {live}"), &plan.pids);
        out.idle = Some(IdleReport {
            clients: live,
            wall: ph.wall,
            relay_cores: ph.cores(relay).unwrap_or(0.0),
            clients_cores: ph.cores(me).unwrap_or(0.0),
            datagrams_per_s: ph.udp.out_datagrams as f64 / ph.wall.as_secs_f64().max(0.001),
        });
        out.phases.push(ph);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gift_event_fits_a_small_datagram() {
        let n = super::gift_bytes();
        assert!((20..200).contains(&n), "{n}");
    }
}
