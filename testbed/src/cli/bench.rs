//! `testbed bench`: Ringside's round trips and fan-out beside a plain quinn
//! echo, on this machine, with the origin, the relay and the echo each in a
//! process of its own (spawned from this binary) and the clients here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use testbed::bench::fanout::FanoutReport;
use testbed::bench::nats::NatsOutcome;
use testbed::bench::run::Phase;
use testbed::bench::stages::BurstReport;
use testbed::bench::stats::{fmt_us, Summary};
use testbed::bench::targets;
use testbed::bench::{Plan, Report};

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

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn row_line(out: &mut String, what: &str, s: &Summary, lost: u64) {
    let lost = if lost > 0 {
        format!("  ({lost} lost)")
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  {what:<64} {:>6} {:>10} {:>10} {:>10} {:>10}{lost}\n",
        s.count,
        fmt_us(s.p50_us),
        fmt_us(s.p99_us),
        fmt_us(s.p999_us),
        fmt_us(s.max_us),
    ));
}

fn cores(ph: &Phase, cpu: Option<Duration>) -> String {
    match cpu {
        Some(c) if !ph.wall.is_zero() => format!("{:.2}", c.as_secs_f64() / ph.wall.as_secs_f64()),
        _ => "-".into(),
    }
}

fn p50(r: &Report, key: &str) -> Option<f64> {
    r.rows
        .iter()
        .find(|row| row.key == key && row.summary.count > 0)
        .map(|row| row.summary.p50_us)
}

/// The report as text: one section after another.
fn render(r: &Report, plan: &Plan, command: &str) -> String {
    let mut o = String::new();
    render_setup(&mut o, r, plan, command);
    render_targets(&mut o, r);
    render_round_trips(&mut o, r);
    if let Some(n) = &r.audience.nats {
        render_nats(&mut o, n);
    }
    if !r.audience.connects.is_empty() {
        render_connects(&mut o, r);
    }
    for f in &r.audience.fanout {
        render_fanout(&mut o, f);
    }
    if let Some(b) = &r.audience.bursts {
        render_bursts(&mut o, b);
    }
    if !r.procs.is_empty() {
        render_memory(&mut o, r);
    }
    if !r.phases.is_empty() {
        render_cpu(&mut o, r);
    }
    render_machine(&mut o, r);
    o
}

/// The machine, the build, the command, the processes, the log's disk and
/// the redundancy setting.
fn render_setup(o: &mut String, r: &Report, plan: &Plan, command: &str) {
    let build = if r.release {
        "release build"
    } else {
        "DEBUG build: figures are not meaningful, use --release"
    };
    o.push_str(&format!(
        "\nRingside bench: {} cores ({}), Linux {}, {build}\n",
        r.cores, r.cpu_model, r.kernel
    ));
    o.push_str(&format!("command: {command}\n"));
    let pid = |name: &str| {
        r.procs
            .iter()
            .find(|p| p.name.starts_with(name))
            .map_or(0, |p| p.pid)
    };
    o.push_str(&format!(
        "layout: origin (pid {}), relay (pid {}) and echo (pid {}) are separate processes \
         spawned from this binary;\n        every client shares the bench process (pid {}). \
         All traffic on loopback.\n",
        pid("origin"),
        pid("relay"),
        pid("echo"),
        pid("bench")
    ));
    let fs = r
        .data_fs
        .as_ref()
        .map_or("an unknown filesystem".to_string(), |(fs, dev)| {
            format!("{fs} ({dev})")
        });
    o.push_str(&format!(
        "origin log: {} on {fs}; every group commit fdatasyncs before anything is acked \
         (durability on)\n",
        r.data_dir
    ));
    o.push_str(&format!(
        "fan-out linger: {}\n",
        match plan.linger_us {
            Some(0) => "off (every event to every client at once)".to_string(),
            Some(us) => format!("{us} µs (--linger-us)"),
            None => format!(
                "the relay's default, {} µs (a busy room's events go together, about that late at most)",
                relay::config::Config::default().fanout_linger_us
            ),
        }
    ));
    o.push_str(&format!(
        "redundancy: {}\n\n",
        if plan.redundancy {
            format!(
                "on (the relay sends acks twice, {} µs apart; the SDK copies actions at that delay, then 16 and 32 ms, unless answered)",
                plan.redundancy_us
            )
        } else {
            "off (critical messages sent once)".into()
        }
    ));
}

/// The latency rows, and where the SDK ack's median goes.
fn render_round_trips(o: &mut String, r: &Report) {
    let spacing = if r.gap.is_zero() {
        "back to back".to_string()
    } else {
        format!("{} µs apart", r.gap.as_micros())
    };
    let head = format!("Round trips, one outstanding at a time, {spacing}");
    o.push_str(&format!(
        "{head:<66} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
        "n", "p50", "p99", "p99.9", "max"
    ));
    for row in &r.rows {
        row_line(o, &row.what, &row.summary, row.lost);
    }
    if r.probe_rejected > 0 || r.sdk_failed > 0 {
        o.push_str(&format!(
            "  !! gifts not applied: origin probe {}, SDK {}\n",
            r.probe_rejected, r.sdk_failed
        ));
    }
    if let (Some(floor), Some(relay), Some(oping), Some(ogift), Some(sdk)) = (
        p50(r, "quinn_echo"),
        p50(r, "relay_ping"),
        p50(r, "origin_ping"),
        p50(r, "origin_gift"),
        p50(r, "sdk_ack"),
    ) {
        let rest = sdk - relay - ogift;
        let (sign, rest) = if rest < 0.0 {
            ("−", -rest)
        } else {
            ("+", rest)
        };
        o.push_str(&format!(
            "  where the p50 goes: relay ping {} (floor {}); origin gift {} = link ping {} + rules, \
             WAL fsync, publish {};\n  SDK ack {} = relay ping + origin gift {sign} {} (the relay's \
             hub and upstream tasks, the SDK's driver; p50s do not add exactly)\n",
            fmt_us(relay),
            fmt_us(floor),
            fmt_us(ogift),
            fmt_us(oping),
            fmt_us(ogift - oping),
            fmt_us(sdk),
            fmt_us(rest),
        ));
    }
}

/// Every figure beside its goal, the peer's beside Ringside's.
fn render_targets(o: &mut String, r: &Report) {
    let rows = targets::targets(r);
    if rows.is_empty() {
        return;
    }
    o.push_str("Targets (issue 11): each figure beside its goal\n");
    for t in &rows {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "-",
        };
        o.push_str(&format!("  {:<66} {}\n", t.figure, t.value));
        if let Some(p) = &t.peer {
            o.push_str(&format!("  {:<66} {p}\n", "    NATS, same run"));
        }
        o.push_str(&format!("  {:<66} goal: {} [{mark}]\n", "", t.goal));
    }
    match &r.audience.nats {
        None => o.push_str("  (NATS beside these: --peer nats)\n"),
        Some(NatsOutcome::Skipped(_)) => o.push_str("  (the NATS peer was skipped: see below)\n"),
        Some(NatsOutcome::Ran(_)) => {}
    }
    o.push('\n');
}

/// The NATS peer's run, or why it was skipped.
fn render_nats(o: &mut String, n: &NatsOutcome) {
    match n {
        NatsOutcome::Skipped(why) => o.push_str(&format!("\nNATS peer: skipped: {why}\n")),
        NatsOutcome::Ran(n) => {
            o.push_str(&format!(
                "\nNATS peer: {} (version {}), {} subscribers (async-nats, one TCP connection each), \
                 {} B messages at {}/s\n",
                n.server, n.version, n.subscribers, n.payload, n.rate
            ));
            o.push_str(&format!(
                "  delivered  {} of {} ({} published); server CPU {:.2} core, {:.2} µs per delivery; \
                 clients {:.2} µs per delivery\n",
                n.delivered,
                n.expected,
                n.published,
                n.server_cpu.as_secs_f64() / n.wall.as_secs_f64().max(0.001),
                n.server_us_per_delivery,
                n.clients_us_per_delivery
            ));
            row_line(o, "publish → a subscriber saw it", &n.delivery, 0);
        }
    }
}

/// How each growth of the viewers went.
fn render_connects(o: &mut String, r: &Report) {
    let a = &r.audience;
    o.push_str(&format!(
        "\nViewers: one QUIC connection each (hello, join, read; clock pings at --viewer-ping-ms, 30 s by default as a quiet SDK session), \
         {} per client endpoint ({} endpoints),\n         on {}; the sender is {}\n",
        a.per_endpoint,
        a.endpoints,
        match a.viewer_threads {
            0 => "the bench's runtime".to_string(),
            1 => "a current-thread runtime of their own".to_string(),
            n => format!("a runtime of their own with {n} threads"),
        },
        r.sender_relay
    ));
    for (what, c) in &a.connects {
        o.push_str(&format!(
            "  {what:<26} +{} of {} in {:.2} s, {} handshakes at a time ({} failed); \
             handshake+hello p50 {} p99 {}; join p50 {} p99 {}\n",
            c.connected,
            c.wanted,
            c.took.as_secs_f64(),
            c.batch,
            c.failed,
            fmt_us(c.connect.p50_us),
            fmt_us(c.connect.p99_us),
            fmt_us(c.join.p50_us),
            fmt_us(c.join.p99_us)
        ));
        for e in &c.errors {
            o.push_str(&format!("             ! {e}\n"));
        }
    }
}

/// Single gifts to the burst audience.
fn render_bursts(o: &mut String, b: &BurstReport) {
    o.push_str(&format!(
        "  -- single gifts to {} viewers: {} sent, {} reached every viewer --\n",
        b.audience, b.gifts, b.complete
    ));
    row_line(
        o,
        "send → the last viewer saw it (per gift)",
        &b.last_client,
        0,
    );
    row_line(
        o,
        "origin stamp → the last viewer saw it (per gift)",
        &b.last_client_origin,
        0,
    );
    row_line(
        o,
        "send → a viewer saw it (every viewer, every gift)",
        &b.delivery,
        0,
    );
}

/// One fan-out run: what was sent, what arrived, how fast.
fn render_fanout(o: &mut String, f: &FanoutReport) {
    o.push_str(&format!(
        "  -- {} viewers at {}/s --{}\n",
        f.audience,
        f.rate,
        match (f.relay_us_per_delivery, f.clients_us_per_delivery) {
            (Some(relay), Some(clients)) => format!(
                " (CPU per delivery over the run: relay {relay:.2} µs, viewers and sender {clients:.2} µs)"
            ),
            _ => String::new(),
        }
    ));
    o.push_str(&format!(
        "  sent       {} of {} gifts at {}/s in {:.2} s: {} applied, {} rejected, {} errors\n",
        f.issued,
        f.planned,
        f.rate,
        f.send_took.as_secs_f64(),
        f.applied,
        f.rejected,
        f.errors
    ));
    for e in &f.error_text {
        o.push_str(&format!("             ! {e}\n"));
    }
    o.push_str(&format!(
        "  delivered  {} of {} (missing {}, lagged {}, snapshots {}{}); {} of {} gifts reached every client\n",
        f.delivered,
        f.expected,
        f.missing,
        f.lagged,
        f.snapshots,
        if f.unmatched > 0 {
            format!(", {} of unacked gifts", f.unmatched)
        } else {
            String::new()
        },
        f.complete_events,
        f.applied
    ));
    o.push_str(&format!(
        "  throughput {:.0} deliveries/s (first send to last sighting, {:.2} s; offered {:.0}/s)\n",
        f.deliveries_per_sec,
        f.span.as_secs_f64(),
        f.rate * f.audience as f64
    ));
    render_fanout_latency(o, f);
}

/// One fan-out run's latency rows.
fn render_fanout_latency(o: &mut String, f: &FanoutReport) {
    o.push_str(&format!(
        "  {:<62} {:>6} {:>10} {:>10} {:>10} {:>10}\n",
        "latency", "n", "p50", "p99", "p99.9", "max"
    ));
    row_line(
        o,
        "send → a client saw it (every client, every gift)",
        &f.delivery,
        0,
    );
    row_line(
        o,
        "origin stamp → a client saw it (one machine, one clock)",
        &f.origin_delivery,
        0,
    );
    if f.by_second.len() > 1 {
        let list = |g: fn(&Summary) -> f64| {
            f.by_second
                .iter()
                .map(|s| fmt_us(g(s)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        o.push_str(&format!(
            "    by the second the gift was sent: p50 {}\n                                     p99 {}\n",
            list(|s| s.p50_us),
            list(|s| s.p99_us)
        ));
    }
    row_line(
        o,
        &format!(
            "send → the last of {} clients saw it (per gift)",
            f.audience
        ),
        &f.all_clients,
        0,
    );
    row_line(o, "the sender's acks meanwhile (Acked.latency)", &f.ack, 0);
}

/// Each process's resident memory through the run.
fn render_memory(o: &mut String, r: &Report) {
    o.push_str(&format!(
        "\nMemory (RSS)       {:>10} {:>12} {:>12} {:>10} {:>8}\n",
        "idle", "connected", "after", "peak", "threads"
    ));
    for p in &r.procs {
        let kb = |v: u64| if v == 0 { "-".into() } else { mib(v) };
        o.push_str(&format!(
            "  {:<16} {:>10} {:>12} {:>12} {:>10} {:>8}\n",
            p.name,
            kb(p.rss_idle_kb),
            kb(p.rss_connected_kb),
            kb(p.rss_after_kb),
            kb(p.rss_peak_kb),
            p.threads.map_or("-".into(), |t| t.to_string()),
        ));
    }
}

/// CPU per process and phase, then the machine's softirq and UDP counters.
fn render_cpu(o: &mut String, r: &Report) {
    o.push_str(&format!("\nCPU, cores on average{}", " ".repeat(6)));
    for ph in &r.phases {
        o.push_str(&format!(
            "{:>22}",
            format!("{} ({:.1} s)", ph.name, ph.wall.as_secs_f64())
        ));
    }
    o.push('\n');
    for (i, p) in r.procs.iter().enumerate() {
        o.push_str(&format!("  {:<24}", p.name));
        for ph in &r.phases {
            o.push_str(&format!("{:>22}", cores(ph, ph.cpu.get(i).copied())));
        }
        o.push('\n');
    }
    o.push_str(&format!("  {:<24}", "softirq (whole machine)"));
    for ph in &r.phases {
        o.push_str(&format!("{:>22}", cores(ph, Some(ph.softirq))));
    }
    o.push_str(&format!("\n  {:<24}", "UDP datagrams/s sent"));
    for ph in &r.phases {
        let per_s = ph.udp.out_datagrams as f64 / ph.wall.as_secs_f64().max(0.001);
        o.push_str(&format!("{per_s:>22.0}"));
    }
    o.push_str(&format!("\n  {:<24}", "UDP receive-buffer drops"));
    for ph in &r.phases {
        o.push_str(&format!("{:>22}", ph.udp.rcvbuf_errors));
    }
    o.push('\n');
}

/// How busy the machine was with other work, the notes, the run's length.
fn render_machine(o: &mut String, r: &Report) {
    let others = r.others_cpu.as_secs_f64() / r.took.as_secs_f64().max(0.001);
    o.push_str(&format!(
        "\nmachine: load average {} at the start, {} at the end; during the run other processes \
         used {:.1} CPU-s ({:.2} core on average),\n         softirq {:.1} CPU-s (mostly our own \
         loopback packets), steal {:.1} s\n",
        r.loadavg.0,
        r.loadavg.1,
        r.others_cpu.as_secs_f64(),
        others,
        r.softirq.as_secs_f64(),
        r.steal.as_secs_f64()
    ));
    if others > 0.1 {
        o.push_str(
            "  !! the machine was busy with other work: latencies are inflated; run again on an idle machine\n",
        );
    }
    for n in &r.notes {
        o.push_str(&format!("note: {n}\n"));
    }
    o.push_str(&format!(
        "\nthe whole run took {:.1} s\n",
        r.took.as_secs_f64()
    ));
}
