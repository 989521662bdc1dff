//! `testbed failover --idle-secs S`: what idle clients cost the relays that
//! hold them. The origin and two relays run as processes of their own
//! (spawned from this binary, as `testbed bench` does), so each relay's CPU
//! is its own; N SDK clients, here, connect to relay A with their warm
//! standby on relay B, join one quiet room, and idle. After a settling time
//! (long enough for every session to be quiet: its pings slow down), the
//! relays' CPU over `S` seconds, per client, beside the goal: 10,000 idle
//! clients cost a relay at most 0.1 core. In a deployment every relay
//! holds about as many standbys as live sessions, so a relay's cost per
//! client is relay A's (live) plus relay B's (standby).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use client_sdk::{Client, Room};
use net::token::{unix_now, Claims, Purpose, TokenKey};
use net::Identity;
use protocol::{RoomId, UserId};
use testbed::bench::child::{Server, Spawn};
use testbed::bench::sys::{self, TempDir, UdpCounters};

use super::Args;

/// The goal: 10,000 idle clients cost a relay at most this much CPU (cores).
const GOAL_CORES_PER_10K: f64 = 0.1;

/// How long the relays are measured with no client.
const BARE: Duration = Duration::from_secs(5);

/// How long after the last client connected the measurement starts: every
/// session must be quiet by then (the SDK slows its pings after 10 s).
const SETTLE: Duration = Duration::from_secs(12);

/// Run the idle measurement.
pub(super) async fn run(args: &Args, idle: Duration) -> anyhow::Result<()> {
    let dir = TempDir::new(None)?;
    let exe = std::env::current_exe().context("finding the testbed binary")?;
    let identity = Identity::self_signed(&["localhost"]).context("a certificate")?;
    let (cert, key) = sys::write_identity(&identity, dir.path())?;
    let token_secret = net::secret::generate_hex().context("a token secret")?;
    let cluster_secret = net::secret::generate_hex().context("a cluster secret")?;
    let token_file = dir.path().join("token-secret");
    let cluster_file = dir.path().join("cluster-secret");
    for (file, secret) in [
        (&token_file, &token_secret),
        (&cluster_file, &cluster_secret),
    ] {
        net::secret::create_private(file, secret.as_bytes())
            .with_context(|| format!("writing {}", file.display()))?;
    }
    let files = Files {
        dir: dir.path(),
        exe: &exe,
        cert: &cert,
        key: &key,
        token: &token_file,
        cluster: &cluster_file,
    };
    let origin = files.origin().await?;
    let relay_a = files.relay("idle-relay-a", &origin).await?;
    let relay_b = files.relay("idle-relay-b", &origin).await?;
    println!(
        "testbed failover --idle-secs {}: {} SDK clients on relay A (pid {}){}, in one quiet room; client keep-alive {} ms",
        idle.as_secs_f64(),
        args.clients,
        relay_a.pid(),
        match args.no_standby {
            true => ", no standby".to_string(),
            false => format!(", standby on relay B (pid {})", relay_b.pid()),
        },
        args.keep_alive_ms,
    );
    // What the relays cost with no client at all (their link to the
    // origin): not a cost of idle clients.
    let (a0, b0) = (cpu(&relay_a)?, cpu(&relay_b)?);
    tokio::time::sleep(BARE).await;
    let bare = ((cpu(&relay_a)? - a0) + (cpu(&relay_b)? - b0)).as_secs_f64() / 2.0;
    let bare = bare / BARE.as_secs_f64();
    let members = connect(args, &identity, &token_secret, &relay_a, &relay_b).await?;
    if !args.no_standby {
        for (i, (c, _)) in members.iter().enumerate() {
            let mut w = c.standby_watch();
            tokio::time::timeout(Duration::from_secs(30), w.wait_for(Option::is_some))
                .await
                .with_context(|| format!("client {i} opened no standby in 30 s"))?
                .with_context(|| format!("client {i} stopped"))?;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let (a0, b0) = (cpu(&relay_a)?, cpu(&relay_b)?);
    let (udp0, t0) = (UdpCounters::now(), Instant::now());
    tokio::time::sleep(idle).await;
    let wall = t0.elapsed().as_secs_f64();
    let (a, b) = (
        (cpu(&relay_a)? - a0).as_secs_f64(),
        (cpu(&relay_b)? - b0).as_secs_f64(),
    );
    let udp = UdpCounters::now().zip(udp0).map(|(n, e)| n.since(&e));
    print_cost(members.len(), wall, (a, b), bare, udp);
    for (c, _) in members {
        c.close().await;
    }
    for s in [relay_a, relay_b, origin] {
        s.stop(Duration::from_secs(3)).await;
    }
    Ok(())
}

/// A process's CPU time so far.
fn cpu(s: &Server) -> anyhow::Result<Duration> {
    sys::cpu_time(s.pid()).with_context(|| format!("reading the CPU time of {}", s.name()))
}

/// Print the relays' CPU (`a`, `b`: seconds over `wall`) per client, above
/// what a relay costs bare (`bare`, cores).
fn print_cost(n: usize, wall: f64, (a, b): (f64, f64), bare: f64, udp: Option<UdpCounters>) {
    let n = n.max(1) as f64;
    let per = |cpu: f64| (cpu / wall - bare).max(0.0) / n * 1e6;
    println!("a relay with no client: {bare:.4} core (its link to the origin; not counted below)");
    println!("idle for {wall:.1} s, {n} clients:");
    println!(
        "  relay A (live sessions):  {:.4} core, {:.2} µs of CPU per client-second above bare",
        a / wall,
        per(a)
    );
    println!(
        "  relay B (standbys):       {:.4} core, {:.2} µs of CPU per client-second above bare",
        b / wall,
        per(b)
    );
    if let Some(u) = udp {
        println!(
            "  UDP datagrams (whole machine, both ends): {:.0}/s, {:.2} per client-second",
            u.out_datagrams as f64 / wall,
            u.out_datagrams as f64 / wall / n
        );
    }
    let per_10k = (per(a) + per(b)) * 10_000.0 / 1e6;
    println!(
        "  a relay holding 10,000 idle clients (live + standby each): {per_10k:.3} core (goal ≤ {GOAL_CORES_PER_10K} core): {}",
        match per_10k <= GOAL_CORES_PER_10K {
            true => "met",
            false => "NOT met",
        }
    );
}

/// Where this run's files are, and how to start its processes.
struct Files<'a> {
    dir: &'a Path,
    exe: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    token: &'a Path,
    cluster: &'a Path,
}

impl Files<'_> {
    fn path(p: &Path) -> String {
        p.display().to_string()
    }

    async fn origin(&self) -> anyhow::Result<Server> {
        let env = vec![
            ("RINGSIDE_ORIGIN_NAME", "idle-origin".to_string()),
            ("RINGSIDE_ORIGIN_LISTEN", "127.0.0.1:0".into()),
            (
                "RINGSIDE_ORIGIN_DATA_DIR",
                Self::path(&self.dir.join("origin")),
            ),
            (
                "RINGSIDE_ORIGIN_CLUSTER_SECRET_FILE",
                Self::path(self.cluster),
            ),
            ("RINGSIDE_ORIGIN_TLS__CERT", Self::path(self.cert)),
            ("RINGSIDE_ORIGIN_TLS__KEY", Self::path(self.key)),
        ];
        let args = vec!["serve-origin".to_string()];
        Server::spawn(Spawn::child(self.exe, self.dir, "origin", args, env)).await
    }

    async fn relay(&self, name: &str, origin: &Server) -> anyhow::Result<Server> {
        let env = vec![
            ("RINGSIDE_RELAY_NAME", name.to_string()),
            ("RINGSIDE_RELAY_REGION", "idle".into()),
            ("RINGSIDE_RELAY_LISTEN", "127.0.0.1:0".into()),
            ("RINGSIDE_RELAY_ORIGIN", origin.addr().to_string()),
            ("RINGSIDE_RELAY_ORIGIN_CERT", Self::path(self.cert)),
            (
                "RINGSIDE_RELAY_CLUSTER_SECRET_FILE",
                Self::path(self.cluster),
            ),
            ("RINGSIDE_RELAY_TOKEN_SECRET_FILE", Self::path(self.token)),
            ("RINGSIDE_RELAY_TLS__CERT", Self::path(self.cert)),
            ("RINGSIDE_RELAY_TLS__KEY", Self::path(self.key)),
            // Thousands of clients, all on loopback.
            ("RINGSIDE_RELAY_LIMITS__MAX_PER_ADDR", "100000".into()),
            (
                "RINGSIDE_RELAY_LIMITS__MAX_UNAUTHENTICATED",
                "100000".into(),
            ),
            (
                "RINGSIDE_RELAY_LIMITS__RETRY_ABOVE_PER_SEC",
                "100000".into(),
            ),
        ];
        let args = vec!["serve-relay".to_string()];
        Server::spawn(Spawn::child(self.exe, self.dir, name, args, env)).await
    }
}

/// `args.clients` clients on relay A (standby on B unless `no_standby`),
/// each in room 1; 50 connect at a time.
async fn connect(
    args: &Args,
    identity: &Identity,
    secret: &str,
    a: &Server,
    b: &Server,
) -> anyhow::Result<Vec<(Client, Room)>> {
    let tuning = net::Tuning {
        idle_timeout_ms: args.idle_timeout_ms,
        keep_alive_ms: args.keep_alive_ms,
        ..Default::default()
    };
    let key = TokenKey::new(secret.as_bytes());
    let pem = identity.cert_pem();
    let mut members = Vec::new();
    let users: Vec<u64> = (0..args.clients).collect();
    for batch in users.chunks(50) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            let token = key.mint(&Claims {
                purpose: Purpose::Client,
                user: UserId(10_000 + i),
                rooms: None,
                host_of: Vec::new(),
                operator: false,
                expires: unix_now() + 3600,
            });
            let builder = Client::builder()
                .relays([a.addr(), b.addr()])
                .probe(false)
                .standby(!args.no_standby)
                .tuning(tuning.clone())
                .token(token)
                .trust_pem(&pem)?;
            set.spawn(async move {
                let c = builder.connect().await?;
                let r = c.join(RoomId(1)).await?;
                Ok::<_, client_sdk::Error>((c, r))
            });
        }
        while let Some(r) = set.join_next().await {
            members.push(r.context("a client task")?.context("a client")?);
        }
    }
    Ok(members)
}
