//! `testbed bench`: Ringside's round trips and fan-out beside a plain quinn
//! echo, on this machine, with the origin, the relay and the echo each in a
//! process of its own (spawned from this binary) and the clients here. The
//! command line is here; the printed report is `bench_report.rs`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use testbed::bench::Plan;

use super::bench_report::render;

/// How to read and extend the bench (printed after `testbed bench --help`).
const AFTER_HELP: &str = "\
Rows and their goals (issue 11): fan-out p50/p99 from the origin's stamp and from the gift's \
send to every viewer, relay CPU per delivery, one gift to many viewers (send -> last viewer), \
relay RSS per connected client, idle clients' relay CPU, SDK gift ack over its floor. Each \
row is printed beside its goal; a size of 0 skips its row (--fanout-clients, --burst-clients, \
--clients).

The viewers are not SDK clients: each is one QUIC connection (hello with a signed token, \
join, read datagrams and streams, a clock ping a second), hundreds sharing one client \
endpoint, on a current-thread runtime of their own (--viewer-threads), built so that 10,000 \
fit beside the relay on 2 cores. The sender and the ack probe are real SDK clients.

--peer nats runs the same fan-out (subscribers = --fanout-clients, the first --rate, the \
size of a gift event's datagram) through nats-server, found on PATH or in /usr/sbin, \
/usr/local/sbin, /usr/local/bin (or --nats-server PATH). Install it with \
`apt-get install nats-server` (Debian/Ubuntu); without it the NATS rows are skipped.

--cluster measures cluster mode instead (issue 12), in process: durable gift ack p50/p99 \
with three origin nodes on three clustered nats-servers (replicas 3) beside the embedded \
origin and the quinn floor, and durable actions/s for one node and for three (and the \
embedded origin), --cluster-rooms rooms with --cluster-window gifts in flight each. It uses \
--ack-samples, --warmup, --gap-us, --phase-limit, --echo-samples and --echo-size.

Measure with a release build: cargo build --release -p ringside-testbed, then \
./target/release/testbed bench --peer nats";

/// Options of `testbed bench`. The defaults take a few minutes on 2 cores.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Viewers of the fan-out rows (0: skip them).
    #[arg(long, default_value_t = 100)]
    fanout_clients: usize,
    /// Fan-out gifts per second from one SDK sender; a comma-separated list
    /// runs the fan-out once per rate, on the same viewers.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rate: Vec<f64>,
    /// How long the fan-out sender sends, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// After the last ack, wait at most this long for deliveries, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    drain: f64,
    /// Viewers of the single-gift row (the audience grows to this; 0: skip).
    #[arg(long, default_value_t = 1000)]
    burst_clients: usize,
    /// Single gifts sent to them, one at a time.
    #[arg(long, default_value_t = 20)]
    bursts: u64,
    /// Viewers of the memory and idle rows (the audience grows to this; 0: skip).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// With every viewer connected and quiet, measure CPU and packets this
    /// long, seconds. It must cover every periodic packet of an idle
    /// session (the 15 s keep-alive, the 30 s quiet clock ping): 10 s right
    /// after connecting saw almost none of them and gave a fifth of the cost.
    #[arg(long, value_name = "SECS", default_value_t = 40.0)]
    idle: f64,
    /// Viewer connections per client endpoint (one UDP socket each). On a
    /// busy 2-core machine 4,000 idle viewers on one socket overflowed its
    /// 4 MiB receive buffer; 250 each lost nothing.
    #[arg(long, default_value_t = 250)]
    per_endpoint: usize,
    /// Viewer handshakes in flight at once (a thousand at once overflow
    /// socket buffers).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A viewer's clock ping interval, milliseconds (0: none): the SDK's
    /// quiet one (no action or room event for 10 s). In a busy room the SDK
    /// pings every second, a cost nothing beside the room's events.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    viewer_ping_ms: u64,
    /// Threads of the viewers' own tokio runtime: 1 is a current-thread
    /// runtime (no wake-up crosses threads: the cheapest), 0 shares the
    /// bench's multi-threaded one.
    #[arg(long, default_value_t = 1)]
    viewer_threads: usize,
    /// Where the fan-out's sender connects: `same` (the viewers' relay)
    /// or `other` (a second relay process).
    #[arg(long, value_name = "WHERE", default_value = "same", value_parser = ["same", "other"])]
    sender_relay: String,
    /// Each growth of the audience stops after this long, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    connect_limit: f64,
    /// Run the same fan-out through a peer too, printed beside Ringside's.
    #[arg(long, value_name = "PEER", value_parser = ["nats"])]
    peer: Option<String>,
    /// The nats-server binary (default: found on PATH or in the sbin dirs).
    #[arg(long, value_name = "PATH")]
    nats_server: Option<PathBuf>,
    /// Round trips before each latency run that are not counted.
    #[arg(long, default_value_t = 300)]
    warmup: u64,
    /// Pause between round trips in the latency runs, microseconds (0: back
    /// to back). Real users pause: with a gap every hop starts from idle
    /// threads and cores, which costs wake-ups.
    #[arg(long, value_name = "US", default_value_t = 0)]
    gap_us: u64,
    /// Quinn datagram echo samples.
    #[arg(long, default_value_t = 5000)]
    echo_samples: u64,
    /// Echo datagram size, bytes.
    #[arg(long, default_value_t = 32)]
    echo_size: usize,
    /// Samples of each single-hop probe (relay ping, origin ping, origin gift).
    #[arg(long, default_value_t = 3000)]
    probe_samples: u64,
    /// fdatasync samples on the data directory's disk.
    #[arg(long, default_value_t = 500)]
    fsync_samples: u64,
    /// Gift acks through the SDK, one at a time.
    #[arg(long, default_value_t = 3000)]
    ack_samples: u64,
    /// Each latency run stops after this long whatever its count, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    phase_limit: f64,
    /// Send critical messages once (relay redundancy_us = 0, SDK copies
    /// off); production sends acks twice and actions with up to three copies.
    #[arg(long)]
    no_redundancy: bool,
    /// The relay's redundancy_us (and the SDK's copy delay) when on.
    #[arg(long, value_name = "US", default_value_t = 4000)]
    redundancy_us: u64,
    /// The relay's fanout_linger_us: a client sent events less than this
    /// long ago gets the next ones together this long after (0: each at
    /// once). Default: the relay's own default.
    #[arg(long, value_name = "US")]
    linger_us: Option<u64>,
    /// The relay's threads (1: one thread; 0: one worker per core).
    /// Default: the relay's own default.
    #[arg(long, value_name = "N")]
    relay_threads: Option<usize>,
    /// Write the figures as JSON here too.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Parent of the temporary directory (origin log, certificates, child
    /// logs); it must be on the disk you mean to measure. Default: the
    /// system temp dir.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary directory (with the child processes' logs).
    #[arg(long)]
    keep_dir: bool,
    #[command(flatten)]
    cluster: super::bench_cluster::ClusterArgs,
}

fn seconds(flag: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{flag} {s}: not a duration"))
}

impl Args {
    fn plan(&self) -> anyhow::Result<Plan> {
        anyhow::ensure!(
            !self.rate.is_empty() && self.rate.iter().all(|r| *r > 0.0 && r.is_finite()),
            "--rate must be positive"
        );
        anyhow::ensure!(
            self.concurrency > 0 && self.per_endpoint > 0,
            "--concurrency and --per-endpoint must be positive"
        );
        Ok(Plan {
            exe: std::env::current_exe().context("finding the testbed binary")?,
            dir: self.dir.clone(),
            keep_dir: self.keep_dir,
            warmup: self.warmup,
            gap: Duration::from_micros(self.gap_us),
            echo_samples: self.echo_samples,
            echo_size: self.echo_size,
            probe_samples: self.probe_samples,
            fsync_samples: self.fsync_samples,
            ack_samples: self.ack_samples,
            phase_limit: seconds("phase-limit", self.phase_limit)?,
            fanout_clients: self.fanout_clients,
            rates: self.rate.clone(),
            duration: seconds("duration", self.duration)?,
            drain: seconds("drain", self.drain)?,
            burst_clients: self.burst_clients,
            bursts: self.bursts,
            clients: self.clients,
            idle: seconds("idle", self.idle)?,
            per_endpoint: self.per_endpoint,
            concurrency: self.concurrency,
            connect_limit: seconds("connect-limit", self.connect_limit)?,
            viewer_ping: (self.viewer_ping_ms > 0)
                .then(|| Duration::from_millis(self.viewer_ping_ms)),
            viewer_threads: self.viewer_threads,
            sender_on_other_relay: self.sender_relay == "other",
            nats: self.peer.as_ref().map(|_| self.nats_server.clone()),
            redundancy: !self.no_redundancy,
            redundancy_us: self.redundancy_us,
            linger_us: self.linger_us,
            relay_threads: self.relay_threads,
        })
    }
}

/// Run the benchmark and print its report (Ctrl-C stops it cleanly: the
/// server processes are killed and the temporary directory removed).
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.cluster.cluster {
        let sampling = |samples| -> anyhow::Result<testbed::bench::stats::Sampling> {
            Ok(testbed::bench::stats::Sampling {
                warmup: args.warmup,
                samples,
                limit: seconds("phase-limit", args.phase_limit)?,
                gap: Duration::from_micros(args.gap_us),
            })
        };
        let (acks, echo) = (sampling(args.ack_samples)?, sampling(args.echo_samples)?);
        let json = args.json.as_deref();
        return super::bench_cluster::run(&args.cluster, acks, echo, args.echo_size, json).await;
    }
    let plan = args.plan()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let progress = |s: &str| eprintln!("[bench] {s}");
    let report = tokio::select! {
        r = testbed::bench::run(&plan, &progress) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    print!("{}", render(&report, &plan, &command));
    if let Some(path) = &args.json {
        std::fs::write(path, testbed::bench::json::render(&report, &command))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}
