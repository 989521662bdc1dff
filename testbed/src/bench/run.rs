//! The benchmark, phase by phase: start the server processes, time the
//! floor and each hop, then the SDK's ack path, then the fan-out, sampling
//! the processes' memory and CPU as it goes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client_sdk::{Client, Outcome};
use net::Identity;
use protocol::{GiftId, RoomId, SessionId};

use super::audience::{self, AudiencePlan, AudienceReport};
use super::child::Server;
use super::echo::{self, RoundTrips};
use super::fanout;
pub use super::meter::Phase;
use super::probe::{self, OriginProbe};
use super::servers::{self, Secrets, Servers};
use super::stages::OriginClock;
use super::stats::{Latencies, Sampler, Sampling, Summary};
use super::sys::{self, TempDir};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The testbed binary (it serves the origin, relay and echo processes).
    pub exe: PathBuf,
    /// Where the temporary directory (origin log, certificates, child logs)
    /// goes; the system temp dir if `None`. Must be on the disk to measure.
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (child logs) instead of removing it.
    pub keep_dir: bool,
    /// Round trips not counted, before each latency run.
    pub warmup: u64,
    /// Pause between round trips in the latency runs (zero: back to back).
    pub gap: Duration,
    /// Datagram echo samples.
    pub echo_samples: u64,
    /// Echo datagram size, bytes.
    pub echo_size: usize,
    /// Samples of each single-hop probe (relay ping, origin ping, origin gift).
    pub probe_samples: u64,
    /// `fdatasync` samples.
    pub fsync_samples: u64,
    /// Gift acks through the SDK.
    pub ack_samples: u64,
    /// Each latency run stops here, whatever its count.
    pub phase_limit: Duration,
    /// Viewers of the fan-out rows (0: no fan-out).
    pub fanout_clients: usize,
    /// Fan-out gifts per second: one fan-out run per rate, same viewers.
    pub rates: Vec<f64>,
    /// How long the fan-out sender sends.
    pub duration: Duration,
    /// After the last ack, how long to wait for deliveries at most.
    pub drain: Duration,
    /// Viewers of the single-gift row (0: none).
    pub burst_clients: usize,
    /// Single gifts sent to them, one at a time.
    pub bursts: u64,
    /// Viewers of the memory and idle rows (0: none).
    pub clients: usize,
    /// With every viewer connected and nothing sent, measure this long.
    pub idle: Duration,
    /// Viewer connections per client endpoint (UDP socket).
    pub per_endpoint: usize,
    /// Viewer handshakes in flight at once.
    pub concurrency: usize,
    /// Each growth of the audience stops here.
    pub connect_limit: Duration,
    /// A viewer's clock ping interval (`None`: no pings).
    pub viewer_ping: Option<Duration>,
    /// Threads of the viewers' own runtime (1: current-thread; 0: share
    /// the bench's).
    pub viewer_threads: usize,
    /// The sender connects to a second relay process (else to the
    /// audience's relay).
    pub sender_on_other_relay: bool,
    /// Run the same fan-out through nats-server too (`Some(None)`: find it
    /// on PATH and in the sbin directories).
    pub nats: Option<Option<PathBuf>>,
    /// Critical messages twice (relay `redundancy_us`, SDK `redundancy`),
    /// as in production.
    pub redundancy: bool,
    /// The relay's `redundancy_us` when `redundancy` is on.
    pub redundancy_us: u64,
    /// The relay's `fanout_linger_us` (`None`: the relay's default).
    pub linger_us: Option<u64>,
    /// The relay's `threads` (`None`: the relay's default).
    pub relay_threads: Option<usize>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            exe: PathBuf::from("testbed"),
            dir: None,
            keep_dir: false,
            warmup: 300,
            gap: Duration::ZERO,
            echo_samples: 5_000,
            echo_size: 32,
            probe_samples: 3_000,
            fsync_samples: 500,
            ack_samples: 3_000,
            phase_limit: Duration::from_secs(10),
            fanout_clients: 100,
            rates: vec![1_000.0],
            duration: Duration::from_secs(5),
            drain: Duration::from_secs(5),
            burst_clients: 1_000,
            bursts: 20,
            clients: 10_000,
            idle: Duration::from_secs(40),
            per_endpoint: 250,
            concurrency: 64,
            connect_limit: Duration::from_secs(120),
            viewer_ping: Some(Duration::from_secs(1)),
            viewer_threads: 1,
            sender_on_other_relay: false,
            nats: None,
            redundancy: true,
            redundancy_us: 4_000,
            linger_us: None,
            relay_threads: None,
        }
    }
}

/// One latency row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short name (a JSON key).
    pub key: &'static str,
    /// What it measures.
    pub what: String,
    /// The figures.
    pub summary: Summary,
    /// Samples that got no answer.
    pub lost: u64,
}

impl Row {
    fn new(key: &'static str, what: impl Into<String>, summary: Summary, lost: u64) -> Row {
        Row {
            key,
            what: what.into(),
            summary,
            lost,
        }
    }

    fn trips(key: &'static str, what: impl Into<String>, t: &RoundTrips) -> Row {
        Row::new(key, what, t.latencies.summary(), t.lost)
    }
}

/// A process's memory through the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProcReport {
    /// Name.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Threads at the end.
    pub threads: Option<u64>,
    /// RSS before any traffic, KiB.
    pub rss_idle_kb: u64,
    /// RSS with the audience connected, KiB.
    pub rss_connected_kb: u64,
    /// RSS after the fan-out, KiB.
    pub rss_after_kb: u64,
    /// Peak RSS (`VmHWM`), KiB.
    pub rss_peak_kb: u64,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cores available.
    pub cores: usize,
    /// CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Whether this is an optimised build.
    pub release: bool,
    /// The origin's data directory.
    pub data_dir: String,
    /// Its filesystem and device.
    pub data_fs: Option<(String, String)>,
    /// Round trips, fastest path first.
    pub rows: Vec<Row>,
    /// Gifts the origin probe saw rejected (should be 0).
    pub probe_rejected: u64,
    /// SDK gifts rejected or failed (should be 0).
    pub sdk_failed: u64,
    /// The viewers' stages and the NATS peer.
    pub audience: AudienceReport,
    /// Where the fan-out's sender was.
    pub sender_relay: String,
    /// Connect, idle and fan-out: CPU and UDP.
    pub phases: Vec<Phase>,
    /// Origin, relay(s), echo and this process.
    pub procs: Vec<ProcReport>,
    /// Anything that went wrong but did not stop the run.
    pub notes: Vec<String>,
    /// Load averages at the start and at the end.
    pub loadavg: (String, String),
    /// CPU time used on the machine by processes other than the bench's
    /// four, during the run (a busy machine makes every figure worse).
    pub others_cpu: Duration,
    /// Interrupt and softirq time during the run (on loopback, mostly the
    /// delivery of our own packets).
    pub softirq: Duration,
    /// CPU time the hypervisor gave other guests during the run.
    pub steal: Duration,
    /// The whole run.
    pub took: Duration,
    /// The pause between round trips in the latency runs.
    pub gap: Duration,
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split(':').nth(1)?.trim().to_string())
}

/// The SDK's ack round trip: one client, one gift at a time.
async fn sdk_acks(
    plan: &Plan,
    how: Sampling,
    relay: std::net::SocketAddr,
    cert_pem: &str,
    token_secret: &str,
) -> anyhow::Result<(Latencies, Latencies, u64)> {
    let redundancy = plan
        .redundancy
        .then_some(Duration::from_micros(plan.redundancy_us));
    let client = Client::builder()
        .relay(relay)
        .token(fanout::viewer_token(token_secret, 10))
        .trust_pem(cert_pem)?
        .redundancy(redundancy)
        .connect()
        .await
        .context("connecting the SDK client")?;
    let room = tokio::time::timeout(Duration::from_secs(10), client.join(RoomId(1)))
        .await
        .context("join timed out")??;
    let mut called = Latencies::new();
    let mut failed = 0;
    let mut s = Sampler::new(how);
    while let Some(i) = s.next_trip() {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), room.gift(GiftId(1), 1)).await;
        let took = t.elapsed();
        match r {
            Ok(Ok(a)) if matches!(a.outcome, Outcome::Applied { .. }) => {
                // The SDK's own figure is the sample; the app's call time
                // rides along.
                s.record(i, a.latency);
                if s.counted(i) {
                    called.record(took);
                }
            }
            _ => failed += 1,
        }
        s.pause().await;
    }
    let acked = s.finish().latencies;
    client.close().await;
    Ok((acked, called, failed))
}

fn proc_report(name: &str, pid: u32) -> ProcReport {
    ProcReport {
        name: name.into(),
        pid,
        rss_idle_kb: sys::rss_kb(pid).unwrap_or(0),
        ..ProcReport::default()
    }
}

/// Run the benchmark. `progress` hears what is happening (for stderr).
pub async fn run(plan: &Plan, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<Report> {
    let started = Instant::now();
    let tmp = TempDir::new(plan.dir.as_deref())?;
    let dir = tmp.path().to_path_buf();
    let mut report = Report {
        cores: sys::cores(),
        cpu_model: first_line_with("/proc/cpuinfo", "model name").unwrap_or_default(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        release: !cfg!(debug_assertions),
        data_dir: dir.join("origin").display().to_string(),
        data_fs: sys::filesystem_of(&dir),
        loadavg: (sys::loadavg().unwrap_or_default(), String::new()),
        gap: plan.gap,
        ..Report::default()
    };

    let identity = Identity::self_signed(&["localhost"]).context("generating a certificate")?;
    let (cert, key) = sys::write_identity(&identity, &dir)?;
    progress("starting the echo, origin and relay processes");
    let secrets = Secrets::generate(&dir)?;
    let redundancy_us = if plan.redundancy {
        plan.redundancy_us
    } else {
        0
    };
    let knobs = servers::RelayKnobs {
        redundancy_us,
        linger_us: plan.linger_us,
        threads: plan.relay_threads,
    };
    let servers = servers::start(
        &plan.exe,
        plan.sender_on_other_relay,
        knobs,
        &dir,
        &cert,
        &key,
        &secrets,
    )
    .await?;
    // Origin time as this process reads it, right after the origin started.
    let clock = OriginClock::now();
    open_rooms(servers.relay.addr(), &cert_pem_of(&cert)?, &secrets.token).await?;
    let me = std::process::id();
    let mut procs = vec![
        proc_report("origin", servers.origin.pid()),
        proc_report("relay", servers.relay.pid()),
    ];
    if let Some(r2) = &servers.relay2 {
        procs.push(proc_report("relay2 (sender)", r2.pid()));
    }
    procs.push(proc_report("echo", servers.echo.pid()));
    procs.push(proc_report("bench (clients)", me));

    let machine_start = sys::MachineCpu::now().unwrap_or_default();
    let ours_start: Duration = procs.iter().map(|p| sys::sample(p.pid).cpu).sum();
    hops(
        plan,
        &servers,
        &secrets,
        &identity,
        &dir,
        &mut report,
        progress,
    )
    .await?;
    audience_part(
        plan,
        &servers,
        &secrets,
        (&identity, &dir),
        &clock,
        &mut procs,
        &mut report,
        progress,
    )
    .await?;
    let machine = sys::MachineCpu::now()
        .unwrap_or_default()
        .since(&machine_start);
    let ours_end: Duration = procs.iter().map(|p| sys::sample(p.pid).cpu).sum();
    report.others_cpu = machine
        .tasks
        .saturating_sub(ours_end.saturating_sub(ours_start));
    report.softirq = machine.softirq;
    report.steal = machine.steal;
    report.loadavg.1 = sys::loadavg().unwrap_or_default();
    report.procs = procs;

    servers.stop(&mut report.notes).await;
    if plan.keep_dir {
        report.notes.push(format!("kept {}", tmp.keep().display()));
    }
    report.took = started.elapsed();
    Ok(report)
}

/// The floor and each hop alone: echo, relay ping, origin ping and gift,
/// the disk's fdatasync, the SDK's ack path.
async fn hops(
    plan: &Plan,
    servers: &Servers,
    secrets: &Secrets,
    identity: &Identity,
    dir: &Path,
    report: &mut Report,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let roots = identity.certs.clone();
    let cert_pem = identity.cert_pem();
    let how = Sampling {
        warmup: plan.warmup,
        samples: plan.probe_samples,
        limit: plan.phase_limit,
        gap: plan.gap,
    };

    progress("quinn datagram echo");
    let floor = echo::round_trips(
        servers.echo.addr(),
        &roots,
        plan.echo_size,
        how.with_samples(plan.echo_samples),
    )
    .await
    .context("echo round trips")?;
    report.rows.push(Row::trips(
        "quinn_echo",
        format!("quinn datagram echo, {} B (floor)", plan.echo_size.max(8)),
        &floor,
    ));

    progress("relay ping (relay hop alone)");
    let pings = probe::relay_pings(
        servers.relay.addr(),
        &roots,
        fanout::viewer_token(&secrets.token, 5),
        SessionId(0xbe9c_0005),
        how,
    )
    .await
    .context("relay pings")?;
    report.rows.push(Row::trips(
        "relay_ping",
        "client → relay → client, Ping/Pong datagrams",
        &pings,
    ));

    progress("origin ping and gifts (origin hop alone)");
    let mut o = OriginProbe::connect(servers.origin.addr(), &roots, &secrets.cluster)
        .await
        .context("connecting to the origin as a relay")?;
    let oping = o.pings(how).await?;
    let ogift = o
        .gifts(RoomId(900_001), SessionId(0xbe9c_0006), how)
        .await?;
    o.close().await;
    report.rows.push(Row::trips(
        "origin_ping",
        "relay link → origin → back, Ping/Pong frames (no log)",
        &oping,
    ));
    report.rows.push(Row::trips(
        "origin_gift",
        "relay link → origin gift → ack (rules + WAL fsync + publish)",
        &ogift.trips,
    ));
    report.probe_rejected = ogift.rejected;

    progress("fdatasync on the data directory's disk");
    let fs_dir = dir.to_path_buf();
    let (n, limit) = (plan.fsync_samples, plan.phase_limit);
    let fsync = tokio::task::spawn_blocking(move || sys::fsync_probe(&fs_dir, n, limit))
        .await
        .context("fsync probe task")??;
    report.rows.push(Row::new(
        "fdatasync",
        "64 B append + fdatasync, data dir's disk",
        fsync.summary(),
        0,
    ));

    progress("gift acks through the SDK");
    let (acked, called, failed) = sdk_acks(
        plan,
        how.with_samples(plan.ack_samples),
        servers.relay.addr(),
        &cert_pem,
        &secrets.token,
    )
    .await?;
    report.rows.push(Row::new(
        "sdk_ack",
        "SDK gift → relay → origin → ack (Acked.latency)",
        acked.summary(),
        0,
    ));
    report.rows.push(Row::new(
        "sdk_ack_call",
        "the same, Instant around room.gift().await",
        called.summary(),
        0,
    ));
    report.sdk_failed = failed;

    Ok(())
}

/// The NATS peer and the viewers' stages ([`audience::run`]), then each
/// process's memory.
#[allow(clippy::too_many_arguments)]
async fn audience_part(
    plan: &Plan,
    servers: &Servers,
    secrets: &Secrets,
    (identity, dir): (&Identity, &Path),
    clock: &OriginClock,
    procs: &mut [ProcReport],
    report: &mut Report,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<()> {
    let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
    let index = |name: &str| {
        procs
            .iter()
            .position(|p| p.name.starts_with(name))
            .unwrap_or(0)
    };
    let sender_relay = servers
        .relay2
        .as_ref()
        .map_or(servers.relay.addr(), Server::addr);
    report.sender_relay = if servers.relay2.is_some() {
        "an SDK client, on a second relay process".into()
    } else {
        "an SDK client, on the same relay".into()
    };
    let aplan = AudiencePlan {
        relay: servers.relay.addr(),
        sender_relay,
        roots: identity.certs.clone(),
        cert_pem: identity.cert_pem(),
        token_secret: secrets.token.clone(),
        room: RoomId(2),
        fanout_clients: plan.fanout_clients,
        rates: plan.rates.clone(),
        duration: plan.duration,
        drain: plan.drain,
        burst_clients: plan.burst_clients,
        bursts: plan.bursts,
        clients: plan.clients,
        idle: plan.idle,
        per_endpoint: plan.per_endpoint,
        concurrency: plan.concurrency,
        connect_limit: plan.connect_limit,
        ping_every: plan.viewer_ping,
        viewer_threads: plan.viewer_threads,
        redundancy: plan
            .redundancy
            .then_some(Duration::from_micros(plan.redundancy_us)),
        nats: plan.nats.clone(),
        dir: dir.to_path_buf(),
        relay_index: index("relay"),
        me_index: index("bench"),
        pids,
    };
    report.audience = audience::run(&aplan, clock, progress).await?;
    report.phases.append(&mut report.audience.phases);
    report.notes.append(&mut report.audience.notes);
    for p in procs.iter_mut() {
        p.rss_after_kb = sys::rss_kb(p.pid).unwrap_or(0);
        p.rss_peak_kb = sys::peak_rss_kb(p.pid).unwrap_or(0);
        p.threads = sys::threads(p.pid);
    }
    if let Some(m) = &report.audience.memory {
        if let Some(p) = procs.iter_mut().find(|p| p.name == "relay") {
            p.rss_connected_kb = m.rss_after_kb;
        }
    }
    Ok(())
}

fn cert_pem_of(cert: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))
}

/// Only a host (or an operator) opens a room: the bench's rooms are opened
/// by their host's first action, as a show starts.
async fn open_rooms(
    relay: std::net::SocketAddr,
    cert_pem: &str,
    token_secret: &str,
) -> anyhow::Result<()> {
    let rooms = [RoomId(1), RoomId(2)];
    let token =
        net::token::TokenKey::new(token_secret.as_bytes()).mint(&net::token::Claims::client(
            protocol::UserId(1),
            rooms.to_vec(),
            net::token::unix_now() + 3600,
        ));
    let host = Client::builder()
        .relay(relay)
        .token(token)
        .trust_pem(cert_pem)?
        .connect()
        .await
        .context("connecting the host")?;
    for id in rooms {
        let room = host.join(id).await.context("the host joins")?;
        let acked = room
            .seat_mode(protocol::room::SeatMode::ApplyToTake)
            .await
            .context("the host opens the room")?;
        anyhow::ensure!(
            acked.outcome.is_applied(),
            "opening {id}: {:?}",
            acked.outcome
        );
    }
    host.close().await;
    Ok(())
}
