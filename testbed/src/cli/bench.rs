//! `testbed bench`: Ringside's round trips and fan-out beside a plain quinn
//! echo, on this machine, with the origin, the relay and the echo each in a
//! process of its own (spawned from this binary) and the clients here.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use testbed::bench::fanout::{ConnectReport, FanoutReport};
use testbed::bench::run::Phase;
use testbed::bench::stats::{fmt_us, Summary};
use testbed::bench::{Plan, Report};

/// Options of `testbed bench`. The defaults take about a minute on 2 cores.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fan-out audience: SDK clients in one room on one relay (0: skip the fan-out).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients connecting at once (a thousand handshakes at once overflow
    /// socket buffers; batches keep the relay responsive).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Fan-out gifts per second from one sender; a comma-separated list
    /// runs the fan-out once per rate, on the same audience. On 2 cores,
    /// 10/s × 1,000 clients is a light load and 50/s saturates the machine.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    rate: Vec<f64>,
    /// How long the fan-out sender sends, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// After the last ack, wait at most this long for deliveries, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    drain: f64,
    /// With the audience connected and quiet, measure CPU and packets this
    /// long, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    idle: f64,
    /// Where the fan-out's sender connects: `same` (the audience's relay)
    /// or `other` (a second relay process).
    #[arg(long, value_name = "WHERE", default_value = "same", value_parser = ["same", "other"])]
    sender_relay: String,
    /// The whole connect phase stops after this long, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    connect_limit: f64,
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
    /// Send critical messages once (relay redundancy_us = 0, SDK redundancy
    /// off); production sends them twice.
    #[arg(long)]
    no_redundancy: bool,
    /// The relay's redundancy_us (and the SDK's copy delay) when on.
    #[arg(long, value_name = "US", default_value_t = 4000)]
    redundancy_us: u64,
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
        anyhow::ensure!(self.batch > 0, "--batch must be positive");
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
            clients: self.clients,
            batch: self.batch,
            connect_limit: seconds("connect-limit", self.connect_limit)?,
            rates: self.rate.clone(),
            duration: seconds("duration", self.duration)?,
            drain: seconds("drain", self.drain)?,
            idle: seconds("idle", self.idle)?,
            sender_on_other_relay: self.sender_relay == "other",
            redundancy: !self.no_redundancy,
            redundancy_us: self.redundancy_us,
        })
    }
}

/// Run the benchmark and print its report (Ctrl-C stops it cleanly: the
/// server processes are killed and the temporary directory removed).
pub async fn run(args: Args) -> anyhow::Result<()> {
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

/// CPU per delivery of the relay and of the bench process during a fan-out
/// run, above what the idle audience costs anyway (µs).
fn per_delivery_cpu(r: &Report, f: &FanoutReport) -> Option<(f64, f64)> {
    let idle = r.phases.iter().find(|p| p.name == "idle")?;
    let run = r
        .phases
        .iter()
        .find(|p| p.name == format!("fan-out {}/s", f.rate))?;
    let at = |name: &str, ph: &Phase| {
        let i = r.procs.iter().position(|p| p.name.starts_with(name))?;
        Some(ph.cpu.get(i)?.as_secs_f64())
    };
    let above = |name: &str| {
        let base = at(name, idle)? / idle.wall.as_secs_f64().max(0.001);
        let used = at(name, run)? - base * run.wall.as_secs_f64();
        Some(used.max(0.0) * 1e6 / (f.delivered.max(1) as f64))
    };
    Some((above("relay")?, above("bench")?))
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
    render_round_trips(&mut o, r);
    if let Some(c) = &r.connect {
        render_connect(&mut o, r, c);
    }
    for f in &r.fanout {
        render_fanout(&mut o, r, f);
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
        "redundancy: {}\n\n",
        if plan.redundancy {
            format!(
                "on, as in production (relay and SDK send critical messages twice, {} µs apart)",
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

/// How the fan-out's audience connected.
fn render_connect(o: &mut String, r: &Report, c: &ConnectReport) {
    o.push_str(&format!(
        "\nFan-out: {} SDK clients (real client_sdk::Client, each its own QUIC endpoint) in one \
         room on one relay;\n         the sender is {}\n",
        c.connected, r.sender_relay
    ));
    o.push_str(&format!(
        "  connect    {} of {} clients connected and joined in {:.2} s, {} at a time \
         ({} failed, {} retried)\n",
        c.connected,
        c.wanted,
        c.took.as_secs_f64(),
        c.batch,
        c.failed,
        c.retried
    ));
    o.push_str(&format!(
        "             per client: connect() p50 {} p99 {}; join() p50 {} p99 {}\n",
        fmt_us(c.connect.p50_us),
        fmt_us(c.connect.p99_us),
        fmt_us(c.join.p50_us),
        fmt_us(c.join.p99_us)
    ));
    for e in &c.errors {
        o.push_str(&format!("             ! {e}\n"));
    }
}

/// One fan-out run: what was sent, what arrived, how fast.
fn render_fanout(o: &mut String, r: &Report, f: &FanoutReport) {
    let per_delivery = per_delivery_cpu(r, f);
    o.push_str(&format!(
        "  -- at {}/s --{}\n",
        f.rate,
        per_delivery
            .map(|(relay, bench)| format!(
                " (CPU per delivery above the idle baseline: relay {relay:.1} µs, clients {bench:.1} µs)"
            ))
            .unwrap_or_default()
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
