//! `testbed bench --peer nats`: the same fan-out through a NATS server, in
//! the same run, so Ringside's figures have the plain pub/sub server a team
//! would otherwise pick beside them.
//!
//! Getting the server: `nats-server` is looked for on `PATH`, then in
//! `/usr/sbin`, `/usr/local/sbin` and `/usr/local/bin` (or given with
//! `--nats-server PATH`). On Debian and Ubuntu: `apt-get install
//! nats-server` (it installs `/usr/sbin/nats-server`). Without it the
//! NATS rows are skipped with that hint; nothing else changes.
//!
//! What runs: a `nats-server` child on a free loopback port (nats-server
//! takes no port 0: a port is picked by binding one and letting it go),
//! `subscribers` async-nats clients (the NATS project's own Rust client),
//! each its own TCP connection, all subscribed to one subject, and one
//! publisher connection sending `payload`-byte messages at `rate` per second
//! for `duration`. Each message carries its publish instant (this process's
//! monotonic clock, which the subscribers share), so every delivery is
//! timed publish → subscriber saw it. The server's CPU (utime + stime from
//! `/proc`) over the publish phase, divided by the deliveries, is its CPU
//! per delivery — the figure the relay's is set against.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::StreamExt as _;
use tokio::task::JoinSet;

use super::loadgen::ClientRuntime;
use super::stats::{Latencies, Summary};
use super::sys;

/// The subject the fan-out goes through.
const SUBJECT: &str = "ringside.bench.fanout";

/// How to get nats-server when it is missing.
pub const INSTALL_HINT: &str =
    "nats-server not found (looked on PATH and in /usr/sbin, /usr/local/sbin, /usr/local/bin); \
     install it with `apt-get install nats-server` (Debian/Ubuntu) or pass --nats-server PATH";

/// The NATS run.
#[derive(Debug, Clone)]
pub struct NatsPlan {
    /// `nats-server` to use; found on PATH (and the sbin dirs) if `None`.
    pub server: Option<PathBuf>,
    /// Where its log goes.
    pub dir: PathBuf,
    /// Subscribers, one TCP connection each.
    pub subscribers: usize,
    /// Messages per second.
    pub rate: f64,
    /// How long the publisher publishes.
    pub duration: Duration,
    /// Message size, bytes (at least 8: the publish instant).
    pub payload: usize,
    /// After the last publish, wait this long at most for deliveries.
    pub drain: Duration,
    /// Threads of the subscribers' runtime, as the viewers' (1: a
    /// current-thread runtime; 0: the caller's).
    pub threads: usize,
}

/// What the NATS run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NatsReport {
    /// The server binary.
    pub server: String,
    /// Its version, as it reports it to clients.
    pub version: String,
    /// Subscribers connected.
    pub subscribers: usize,
    /// Messages per second.
    pub rate: f64,
    /// Message size, bytes.
    pub payload: usize,
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (published × subscribers).
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Publish → a subscriber saw it.
    pub delivery: Summary,
    /// The server's CPU over the publish phase, seconds.
    #[serde(rename = "server_cpu_s", serialize_with = "super::stats::secs")]
    pub server_cpu: Duration,
    /// The publish phase (first publish to the drain's end).
    #[serde(rename = "wall_s", serialize_with = "super::stats::secs")]
    pub wall: Duration,
    /// The server's CPU per delivery, µs.
    pub server_us_per_delivery: f64,
    /// This process's CPU per delivery (the clients), µs.
    pub clients_us_per_delivery: f64,
}

/// The run, or why it did not happen.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsOutcome {
    /// It ran.
    Ran(NatsReport),
    /// It was skipped: why (and how to get nats-server).
    Skipped(String),
}

/// `nats-server`: `explicit` if given, else on PATH, else in the usual
/// sbin directories (Debian's package puts it in `/usr/sbin`, which is not
/// on every user's PATH).
pub fn find_server(explicit: Option<&Path>, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = path_var
        .map(|v| std::env::split_paths(v).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A free loopback TCP port (bound and let go: nats-server takes no port 0).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

/// A running nats-server; killed when dropped.
struct NatsServer {
    child: Child,
    addr: SocketAddr,
}

impl NatsServer {
    /// Start `exe` on a free port and wait (at most 10 s) for "Server is ready".
    async fn start(exe: &Path, log: &Path) -> anyhow::Result<NatsServer> {
        let port = free_port()?;
        let mut child = Command::new(exe)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", exe.display()))?;
        let stderr = child.stderr.take();
        let server = NatsServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let stderr = stderr.context("no stderr pipe")?;
        let mut file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nats-log".into())
            .spawn(move || {
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    use std::io::Write as _;
                    let _ = writeln!(file, "{line}");
                    if line.contains("Server is ready") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            })
            .context("starting the log reader")?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(())) => Ok(server),
            _ => bail!(
                "nats-server did not say it was ready within 10 s; its log:\n{}",
                super::child::log_tail(log, 20)
            ),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The message published at `t` (ns since `epoch` in its first 8 bytes).
fn message(epoch: Instant, t: Instant, size: usize) -> bytes::Bytes {
    let mut m = vec![0u8; size.max(8)];
    let ns = u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX);
    m[..8].copy_from_slice(&ns.to_le_bytes());
    m.into()
}

/// When the message was published (its first 8 bytes).
fn published_at(epoch: Instant, payload: &[u8]) -> Option<Instant> {
    let ns = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(epoch + Duration::from_nanos(ns))
}

/// Run the fan-out through nats-server (or say why not).
pub async fn run(plan: &NatsPlan, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<NatsOutcome> {
    let Some(exe) = find_server(plan.server.as_deref(), std::env::var_os("PATH").as_deref()) else {
        return Ok(NatsOutcome::Skipped(INSTALL_HINT.into()));
    };
    progress(&format!("starting {}", exe.display()));
    let server = NatsServer::start(&exe, &plan.dir.join("nats-server.log")).await?;
    let url = format!("nats://{}", server.addr);
    let epoch = Instant::now();

    progress(&format!("{} NATS subscribers", plan.subscribers));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The subscribers (their connections' tasks too) run where the viewers
    // run: the same kind of runtime receives both fan-outs.
    let rt = ClientRuntime::new(plan.threads)?;
    let mut subs = JoinSet::new();
    let mut clients = Vec::with_capacity(plan.subscribers);
    for _ in 0..plan.subscribers {
        let url = url.clone();
        let (c, mut sub) = rt
            .handle
            .spawn(async move {
                let c = async_nats::connect(&url).await?;
                let sub = c.subscribe(SUBJECT).await?;
                // The server has the subscription once the flush is answered.
                c.flush().await?;
                Ok::<_, async_nats::Error>((c, sub))
            })
            .await
            .context("a NATS subscriber task")?
            .map_err(|e| anyhow::anyhow!("a NATS subscriber: {e}"))?;
        let (received, mut stop) = (received.clone(), stop_rx.clone());
        subs.spawn_on(
            async move {
                let mut lat = Latencies::new();
                loop {
                    tokio::select! {
                        m = sub.next() => {
                            let Some(m) = m else { break };
                            let now = Instant::now();
                            if let Some(t0) = published_at(epoch, &m.payload) {
                                lat.record(now.saturating_duration_since(t0));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ = stop.changed() => break,
                    }
                }
                lat
            },
            &rt.handle,
        );
        clients.push(c);
    }
    let publisher = async_nats::connect(&url)
        .await
        .context("the NATS publisher connects")?;
    let version = publisher.server_info().version;

    let rate = plan.rate.max(0.1);
    let total = ((rate * plan.duration.as_secs_f64()).round() as u64).max(1);
    let expected = total * plan.subscribers as u64;
    progress(&format!(
        "NATS fan-out: {total} messages at {rate}/s to {} subscribers",
        plan.subscribers
    ));
    let (cpu0, me0) = (
        sys::sample(server.pid()).cpu,
        sys::sample(std::process::id()).cpu,
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut published = 0u64;
    for _ in 0..total {
        tick.tick().await;
        let m = message(epoch, Instant::now(), plan.payload);
        publisher.publish(SUBJECT, m).await.context("publishing")?;
        published += 1;
    }
    publisher.flush().await.context("flushing the publisher")?;
    let drain_end = Instant::now() + plan.drain;
    // A measurement wait, not synchronisation: the figures come from the
    // stamps; this only decides when to stop looking.
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    let server_cpu = sys::sample(server.pid()).cpu.saturating_sub(cpu0);
    let me = sys::sample(std::process::id()).cpu.saturating_sub(me0);
    let _ = stop_tx.send(true);
    let mut delivery = Latencies::new();
    while let Some(r) = subs.join_next().await {
        if let Ok(l) = r {
            delivery.merge(&l);
        }
    }
    drop(clients);
    drop(server);
    drop(rt);
    let delivered = received.load(Ordering::Relaxed);
    let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / delivered.max(1) as f64;
    Ok(NatsOutcome::Ran(NatsReport {
        server: exe.display().to_string(),
        version,
        subscribers: plan.subscribers,
        rate,
        payload: plan.payload.max(8),
        published,
        expected,
        delivered,
        delivery: delivery.summary(),
        server_cpu,
        wall,
        server_us_per_delivery: per(server_cpu),
        clients_us_per_delivery: per(me),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_publish_instant() {
        let epoch = Instant::now();
        let t = epoch + Duration::from_micros(1234);
        let m = message(epoch, t, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(published_at(epoch, &m), Some(t));
        assert_eq!(message(epoch, t, 2).len(), 8, "at least the stamp");
        assert_eq!(published_at(epoch, b"short"), None);
    }

    #[test]
    fn the_server_is_found_on_path_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("ringside-nats-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch dir");
        let exe = dir.join("nats-server");
        std::fs::write(&exe, b"").expect("a stand-in file");
        let path = std::env::join_paths([&dir]).expect("a PATH");
        assert_eq!(find_server(None, Some(&path)), Some(exe.clone()));
        assert_eq!(find_server(Some(&exe), None), Some(exe.clone()));
        assert_eq!(find_server(Some(&dir.join("missing")), Some(&path)), None);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(INSTALL_HINT.contains("apt-get install nats-server"));
    }
}
