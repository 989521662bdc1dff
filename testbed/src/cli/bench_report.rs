//! `testbed bench`'s printed report: the setup, each row beside its goal
//! (issue 11's targets), the round trips, the NATS peer, the audience's
//! growth, the fan-out and burst rows, memory, CPU and the machine.

use std::time::Duration;

use testbed::bench::fanout::FanoutReport;
use testbed::bench::nats::NatsOutcome;
use testbed::bench::run::Phase;
use testbed::bench::stages::BurstReport;
use testbed::bench::stats::{fmt_us, Summary};
use testbed::bench::targets;
use testbed::bench::{Plan, Report};

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
/// The whole report, as printed.
pub(super) fn render(r: &Report, plan: &Plan, command: &str) -> String {
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
         spawned from this binary;\n        every client shares the bench process (pid {}): the SDK \
         clients (sender, ack probe) and the echo's client on its main thread, the viewers on \
         a thread of their own (current-thread runtimes). All traffic on loopback.\n",
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
        "threads: the origin's default, {} (and its commit thread); the relay's {}\n",
        origin::Config::default().threads,
        match plan.relay_threads {
            Some(0) => "one worker per core (--relay-threads 0)".to_string(),
            Some(n) => format!("{n} (--relay-threads)"),
            None => match relay::config::Config::default().threads {
                0 => "default, one worker per core".to_string(),
                n => format!("default, {n}"),
            },
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
