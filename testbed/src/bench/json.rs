//! `testbed bench --json PATH`: the figures, derived with serde.
//!
//! [`Summary`], [`ConnectReport`] and [`ProcReport`] serialise themselves;
//! the views here arrange the rest in the file's shape (durations in
//! seconds, the latency rows keyed by name, each phase's CPU per process).

use std::time::Duration;

use serde::{Serialize, Serializer};

use super::fanout::{ConnectReport, FanoutReport};
use super::nats::NatsOutcome;
use super::run::{Phase, ProcReport, Report, Row};
use super::stages::{BurstReport, IdleReport, MemoryReport};
use super::stats::{secs, Summary};
use super::targets::{self, Target};

/// How the bench lays its processes out (a constant of the file).
const LAYOUT: &str = "origin, relay and echo are separate processes; the viewers (many QUIC \
     connections per client endpoint), the SDK sender and the probes share the bench process";

/// The report as pretty JSON, with a final newline.
pub fn render(r: &Report, command: &str) -> String {
    let doc = BenchJson {
        command,
        cores: r.cores,
        cpu_model: &r.cpu_model,
        kernel: &r.kernel,
        release_build: r.release,
        layout: LAYOUT,
        data_dir: &r.data_dir,
        data_fs: r.data_fs.as_ref().map(|(fs, dev)| format!("{fs} {dev}")),
        round_trips: Ordered(
            r.rows
                .iter()
                .map(|row| (row.key, RowJson::of(row)))
                .collect(),
        ),
        probe_rejected: r.probe_rejected,
        sdk_failed: r.sdk_failed,
        targets: targets::targets(r),
        connects: Ordered(
            (r.audience.connects.iter())
                .map(|(k, c)| (k.as_str(), c))
                .collect(),
        ),
        viewers_per_endpoint: r.audience.per_endpoint,
        viewer_endpoints: r.audience.endpoints,
        gift_datagram_bytes: r.audience.gift_bytes,
        bursts: r.audience.bursts.as_ref(),
        memory: r.audience.memory.as_ref(),
        idle: r.audience.idle.as_ref(),
        nats: r.audience.nats.as_ref(),
        fanout: r
            .audience
            .fanout
            .iter()
            .map(|f| FanoutJson::of(f, &r.sender_relay))
            .collect(),
        processes: &r.procs,
        phases: r
            .phases
            .iter()
            .map(|ph| PhaseJson::of(ph, &r.procs))
            .collect(),
        notes: &r.notes,
        took_s: r.took,
        loadavg_start: &r.loadavg.0,
        loadavg_end: &r.loadavg.1,
        other_processes_cpu_s: r.others_cpu,
        softirq_s: r.softirq,
        steal_s: r.steal,
        gap_us: u64::try_from(r.gap.as_micros()).unwrap_or(u64::MAX),
    };
    // Plain structs of numbers and strings always serialise.
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

#[derive(Serialize)]
struct BenchJson<'a> {
    command: &'a str,
    cores: usize,
    cpu_model: &'a str,
    kernel: &'a str,
    release_build: bool,
    layout: &'static str,
    data_dir: &'a str,
    data_fs: Option<String>,
    round_trips: Ordered<&'static str, RowJson<'a>>,
    probe_rejected: u64,
    sdk_failed: u64,
    targets: Vec<Target>,
    connects: Ordered<&'a str, &'a ConnectReport>,
    viewers_per_endpoint: usize,
    viewer_endpoints: usize,
    gift_datagram_bytes: usize,
    fanout: Vec<FanoutJson<'a>>,
    bursts: Option<&'a BurstReport>,
    memory: Option<&'a MemoryReport>,
    idle: Option<&'a IdleReport>,
    nats: Option<&'a NatsOutcome>,
    processes: &'a [ProcReport],
    phases: Vec<PhaseJson<'a>>,
    notes: &'a [String],
    #[serde(serialize_with = "secs")]
    took_s: Duration,
    loadavg_start: &'a str,
    loadavg_end: &'a str,
    #[serde(serialize_with = "secs")]
    other_processes_cpu_s: Duration,
    #[serde(serialize_with = "secs")]
    softirq_s: Duration,
    #[serde(serialize_with = "secs")]
    steal_s: Duration,
    gap_us: u64,
}

/// A JSON object whose keys come from data, in the order given.
struct Ordered<K, V>(Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for Ordered<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// One latency row: what it measures, its figures, its losses.
#[derive(Serialize)]
struct RowJson<'a> {
    what: &'a str,
    #[serde(flatten)]
    summary: Summary,
    lost: u64,
}

impl<'a> RowJson<'a> {
    fn of(r: &'a Row) -> RowJson<'a> {
        RowJson {
            what: &r.what,
            summary: r.summary,
            lost: r.lost,
        }
    }
}

#[derive(Serialize)]
struct FanoutJson<'a> {
    audience: usize,
    sender: &'a str,
    rate_per_s: f64,
    planned: u64,
    sent: u64,
    applied: u64,
    rejected: u64,
    errors: u64,
    #[serde(serialize_with = "secs")]
    send_s: Duration,
    expected_deliveries: u64,
    deliveries: u64,
    missing: u64,
    unmatched: u64,
    lagged: u64,
    snapshots: u64,
    drained: bool,
    #[serde(serialize_with = "secs")]
    drained_in_s: Duration,
    events_seen_by_all: u64,
    delivery: Summary,
    origin_delivery: Summary,
    relay_us_per_delivery: Option<f64>,
    clients_us_per_delivery: Option<f64>,
    delivery_by_send_second: &'a [Summary],
    last_client: Summary,
    sender_ack: Summary,
    #[serde(serialize_with = "secs")]
    span_s: Duration,
    deliveries_per_s: f64,
}

impl<'a> FanoutJson<'a> {
    fn of(f: &'a FanoutReport, sender: &'a str) -> FanoutJson<'a> {
        FanoutJson {
            audience: f.audience,
            sender,
            rate_per_s: f.rate,
            planned: f.planned,
            sent: f.issued,
            applied: f.applied,
            rejected: f.rejected,
            errors: f.errors,
            send_s: f.send_took,
            expected_deliveries: f.expected,
            deliveries: f.delivered,
            missing: f.missing,
            unmatched: f.unmatched,
            lagged: f.lagged,
            snapshots: f.snapshots,
            drained: f.drained,
            drained_in_s: f.drained_in,
            events_seen_by_all: f.complete_events,
            delivery: f.delivery,
            origin_delivery: f.origin_delivery,
            relay_us_per_delivery: f.relay_us_per_delivery,
            clients_us_per_delivery: f.clients_us_per_delivery,
            delivery_by_send_second: &f.by_second,
            last_client: f.all_clients,
            sender_ack: f.ack,
            span_s: f.span,
            deliveries_per_s: f.deliveries_per_sec,
        }
    }
}

#[derive(Serialize)]
struct PhaseJson<'a> {
    name: &'a str,
    #[serde(serialize_with = "secs")]
    wall_s: Duration,
    /// CPU time per process name, s.
    cpu_s: Ordered<&'a str, f64>,
    #[serde(serialize_with = "secs")]
    softirq_s: Duration,
    udp_in: u64,
    udp_out: u64,
    udp_rcvbuf_errors: u64,
    udp_sndbuf_errors: u64,
}

impl<'a> PhaseJson<'a> {
    fn of(ph: &'a Phase, procs: &'a [ProcReport]) -> PhaseJson<'a> {
        PhaseJson {
            name: &ph.name,
            wall_s: ph.wall,
            cpu_s: Ordered(
                procs
                    .iter()
                    .zip(&ph.cpu)
                    .map(|(p, c)| (p.name.as_str(), c.as_secs_f64()))
                    .collect(),
            ),
            softirq_s: ph.softirq,
            udp_in: ph.udp.in_datagrams,
            udp_out: ph.udp.out_datagrams,
            udp_rcvbuf_errors: ph.udp.rcvbuf_errors,
            udp_sndbuf_errors: ph.udp.sndbuf_errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::audience::AudienceReport;
    use crate::bench::stats::Latencies;

    fn sample() -> Report {
        let mut l = Latencies::new();
        l.record(Duration::from_micros(100));
        Report {
            rows: vec![Row {
                key: "echo",
                what: "the floor".into(),
                summary: l.summary(),
                lost: 1,
            }],
            audience: AudienceReport {
                connects: vec![(
                    "fan-out audience".into(),
                    ConnectReport {
                        errors: vec!["x".into()],
                        ..Default::default()
                    },
                )],
                fanout: vec![FanoutReport {
                    by_second: vec![l.summary()],
                    ..Default::default()
                }],
                nats: Some(NatsOutcome::Skipped("no server".into())),
                ..Default::default()
            },
            procs: vec![ProcReport {
                name: "relay".into(),
                threads: Some(3),
                ..Default::default()
            }],
            phases: vec![Phase {
                name: "idle".into(),
                cpu: vec![Duration::from_millis(5)],
                ..Default::default()
            }],
            data_fs: Some(("ext4".into(), "/dev/vda".into())),
            notes: vec!["n".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let text = render(&sample(), "testbed bench");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["command"], "testbed bench");
        let echo = &v["round_trips"]["echo"];
        assert_eq!(echo["what"], "the floor");
        assert_eq!(echo["samples"], 1);
        assert_eq!(echo["lost"], 1);
        assert!(echo["p99_us"]
            .as_f64()
            .is_some_and(|p| (p - 100.0).abs() < 1.0));
        assert_eq!(v["connects"]["fan-out audience"]["errors"][0], "x");
        assert!(v["connects"]["fan-out audience"]["took_s"].is_number());
        assert_eq!(v["nats"]["skipped"], "no server");
        assert!(v["targets"].is_array());
        assert_eq!(v["fanout"][0]["delivery_by_send_second"][0]["samples"], 1);
        assert_eq!(v["processes"][0]["threads"], 3);
        assert_eq!(v["phases"][0]["cpu_s"]["relay"], 0.005);
        assert_eq!(v["data_fs"], "ext4 /dev/vda");
        assert!(text.ends_with("}\n"));
    }
}
