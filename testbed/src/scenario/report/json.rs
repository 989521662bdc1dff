//! `report.json`: every figure, for machines, derived with serde.
//!
//! The figures' own structs serialise themselves ([`Summary`],
//! [`Outcomes`], [`Recovery`], [`Marker`], [`Stall`], [`Check`],
//! [`Judgement`]); the views here only arrange them in the file's shape
//! (documented in `testbed/README.md`) and lend keys to the types of other
//! crates (the SDK's counters, the links' counters).

use serde::Serialize;

use crate::link::{DirectionStats, LinkStats};
use crate::scenario::report::contents::Report;
use crate::scenario::report::tail::{Tail, TailGoal};
use crate::scenario::run::record::{ClientSummary, Marker, Mode, Stall};
use crate::scenario::verdict::analysis::{ClassFigures, Outcomes, Recovery, RunFigures};
use crate::scenario::verdict::gates::Judgement;
use crate::scenario::verdict::invariants::Check;
use crate::scenario::verdict::stats::{Bucket, Summary};

/// The whole report, pretty-printed, with a final newline.
pub fn render(r: &Report) -> String {
    let doc = ReportJson {
        scenario: &r.scenario,
        seed: r.seed,
        duration_s: r.duration_s,
        setup: &r.setup,
        timeline: r
            .timeline
            .iter()
            .map(|(at_s, what)| TimelineJson { at_s: *at_s, what })
            .collect(),
        ok: r.ok(),
        gates: r.gates.as_ref(),
        tail: r.tail.map(|goal| TailJson {
            goal,
            runs: r.runs.iter().map(|run| goal.judge(run)).collect(),
        }),
        runs: r.runs.iter().map(RunJson::of).collect(),
    };
    // Serialising plain structs of numbers and strings into a String
    // cannot fail (no map with non-string keys, no IO).
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

#[derive(Serialize)]
struct ReportJson<'a> {
    scenario: &'a str,
    seed: u64,
    duration_s: f64,
    setup: &'a [String],
    timeline: Vec<TimelineJson<'a>>,
    ok: bool,
    gates: Option<&'a Judgement>,
    tail: Option<TailJson>,
    runs: Vec<RunJson<'a>>,
}

/// The gift ack tail × RTT: the goal, and each run's (in the runs' order).
#[derive(Serialize)]
struct TailJson {
    goal: TailGoal,
    runs: Vec<Option<Tail>>,
}

#[derive(Serialize)]
struct TimelineJson<'a> {
    at_s: f64,
    what: &'a str,
}

/// One run, in the file's order of keys.
#[derive(Serialize)]
struct RunJson<'a> {
    mode: Mode,
    ok: bool,
    client_count: u32,
    wall_s: f64,
    setup_s: f64,
    ack: Ordered<&'a str, AckJson>,
    outcomes: Outcomes,
    delivery: Ordered<&'a str, Option<Summary>>,
    delivery_over_time: &'a [Bucket],
    deliveries_not_measured_lagged: u64,
    timer: TimerJson,
    failures: &'a [Recovery],
    markers: &'a [Marker],
    stalls: &'a [Stall],
    client_stats: StatsJson,
    clients: Vec<ClientJson<'a>>,
    links: Vec<LinkJson<'a>>,
    invariants: &'a [Check],
    /// Cluster mode: what the room logs showed, as the summary prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Vec<String>>,
    notes: &'a [String],
}

impl<'a> RunJson<'a> {
    fn of(r: &'a RunFigures) -> RunJson<'a> {
        let ack = Ordered(r.ack.iter().map(|c| (c.label, AckJson::of(c))).collect());
        let delivery = Ordered(
            std::iter::once(("all", r.delivery))
                .chain(r.delivery_by_class.iter().copied())
                .collect(),
        );
        RunJson {
            mode: r.mode,
            ok: r.ok(),
            client_count: r.clients,
            wall_s: r.wall_s,
            setup_s: r.setup_s,
            ack,
            outcomes: r.outcomes,
            delivery,
            delivery_over_time: &r.delivery_series,
            deliveries_not_measured_lagged: r.lagged,
            timer: TimerJson::of(r),
            failures: &r.recoveries,
            markers: &r.markers,
            stalls: &r.stalls,
            client_stats: StatsJson::from(r.client_stats),
            clients: r.per_client.iter().map(ClientJson::of).collect(),
            links: r
                .link_stats
                .iter()
                .map(|(name, s)| LinkJson::of(name, s))
                .collect(),
            invariants: &r.checks,
            cluster: r.cluster.as_ref().map(|c| c.lines()),
            notes: &r.notes,
        }
    }
}

/// A JSON object whose keys come from data, in the order given (the
/// classes in report order).
struct Ordered<K, V>(Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for Ordered<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct AckJson {
    latency: Option<Summary>,
    /// `[ms, fraction below]`.
    cdf: Vec<(f64, f64)>,
}

impl AckJson {
    fn of(c: &ClassFigures) -> AckJson {
        AckJson {
            latency: c.summary,
            cdf: c
                .cdf
                .iter()
                .map(|(us, q)| (*us as f64 / 1000.0, *q))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct TimerJson {
    battles: usize,
    clock_readings: usize,
    clock_error_abs: Option<Summary>,
    clock_error_min_ms: Option<f64>,
    clock_error_max_ms: Option<f64>,
    countdown_error_abs: Option<Summary>,
    countdown_errors_ms: Vec<f64>,
    countdown_missing: usize,
    origin_estimate_steps_ms: Vec<f64>,
}

impl TimerJson {
    fn of(r: &RunFigures) -> TimerJson {
        let ms = |us: &i64| *us as f64 / 1000.0;
        TimerJson {
            battles: r.battles,
            clock_readings: r.clock_errors.len(),
            clock_error_abs: r.clock_abs,
            clock_error_min_ms: r.clock_errors.iter().min().map(ms),
            clock_error_max_ms: r.clock_errors.iter().max().map(ms),
            countdown_error_abs: r.countdown_abs,
            countdown_errors_ms: r.countdown_errors.iter().map(ms).collect(),
            countdown_missing: r.countdown_missing,
            origin_estimate_steps_ms: r.origin_estimate_steps.iter().map(ms).collect(),
        }
    }
}

/// The SDK's counters a report shows.
#[derive(Serialize)]
struct StatsJson {
    fallbacks: u64,
    resyncs: u64,
    snapshots: u64,
    moves: u64,
}

impl From<client_sdk::Stats> for StatsJson {
    fn from(s: client_sdk::Stats) -> StatsJson {
        StatsJson {
            fallbacks: s.fallbacks,
            resyncs: s.resyncs,
            snapshots: s.snapshots,
            moves: s.moves,
        }
    }
}

#[derive(Serialize)]
struct ClientJson<'a> {
    client: u32,
    user: u64,
    room: u64,
    region: &'a str,
    role: &'a str,
    relay_at_end: Option<&'a str>,
    #[serde(flatten)]
    stats: StatsJson,
}

impl<'a> ClientJson<'a> {
    fn of(c: &'a ClientSummary) -> ClientJson<'a> {
        ClientJson {
            client: c.client,
            user: c.user.0,
            room: c.room.0,
            region: &c.region,
            role: c.role,
            relay_at_end: c.relay.as_deref(),
            stats: StatsJson::from(c.stats),
        }
    }
}

#[derive(Serialize)]
struct LinkJson<'a> {
    name: &'a str,
    up: DirectionJson,
    down: DirectionJson,
    sessions_opened: u64,
}

impl<'a> LinkJson<'a> {
    fn of(name: &'a str, s: &LinkStats) -> LinkJson<'a> {
        LinkJson {
            name,
            up: DirectionJson::from(&s.up),
            down: DirectionJson::from(&s.down),
            sessions_opened: s.sessions.opened,
        }
    }
}

/// One direction of a link: what its impairment engine did.
#[derive(Serialize)]
struct DirectionJson {
    packets: u64,
    delivered: u64,
    dropped_loss: u64,
    dropped_burst: u64,
    dropped_queue: u64,
    dropped_blackhole: u64,
    duplicated: u64,
    reordered: u64,
    send_errors: u64,
}

impl From<&DirectionStats> for DirectionJson {
    fn from(d: &DirectionStats) -> DirectionJson {
        let e = &d.engine;
        DirectionJson {
            packets: e.packets_in,
            delivered: e.delivered,
            dropped_loss: e.dropped_loss,
            dropped_burst: e.dropped_burst,
            dropped_queue: e.dropped_queue,
            dropped_blackhole: e.dropped_blackhole,
            duplicated: e.duplicated,
            reordered: e.reordered,
            send_errors: d.send_errors,
        }
    }
}
