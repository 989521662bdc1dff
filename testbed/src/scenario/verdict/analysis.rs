//! From what a run recorded to the figures a report shows. Pure.
//!
//! - **ack latency** per action class: the SDK's `Acked::latency`, from the
//!   app's call to the authoritative outcome (client → relay → origin,
//!   durable → relay → client), for every action that got an outcome.
//! - **delivery latency**: for every event every client received one by one,
//!   from the event's origin time (`Event::at`, stamped when the origin
//!   decided it) to its arrival in the client's mirror, on the origin's clock.
//!   Events a client got inside a snapshot are not delivery samples.
//! - **clock error**: `client.server_time() - origin now`, read every 500 ms
//!   for each client of a room in a running battle.
//! - **countdown error**: the origin time at which each such client's
//!   countdown to the bell showed zero, minus `ends_at`.
//! - **recovery** after each failure (see [`recovery`]).

use std::collections::BTreeMap;

use protocol::Class;
use serde::Serialize;

use crate::scenario::run::record::{
    ActionRecord, ActionResult, ConnRecord, Marker, Mode, RunRecord, Stall,
};
use crate::scenario::run::timeline::Kind;
use crate::scenario::verdict::invariants::{self, Check, Facts};
use crate::scenario::verdict::stats::{
    buckets, cdf, opt_us_as_ms, opt_us_as_s, quantile, us_as_ms, us_as_s, Bucket, Summary,
};

/// Width of the delivery-over-time buckets, ms.
pub const BUCKET_MS: u64 = 500;
/// Pre-failure window for the delivery threshold, ms.
const BEFORE_MS: u64 = 5_000;
/// Window over which delivery must be back under the threshold, ms.
const WINDOW_MS: u64 = 1_000;
/// Step of the recovery scan, ms.
const STEP_MS: u64 = 250;
/// Slack on the pre-failure p99 before delivery counts as "back": a
/// 1-second window's p99 is noisy.
const SLACK: f64 = 1.1;

/// The action classes reported, with their names.
pub const CLASSES: [(Class, &str); 4] = [
    (Class::Gift, "gift"),
    (Class::Chat, "chat"),
    (Class::Ambient, "like"),
    (Class::Authority, "authority"),
];

/// Latency figures of one class.
#[derive(Debug, Clone)]
pub struct ClassFigures {
    /// The class.
    pub class: Class,
    /// Its name in reports.
    pub label: &'static str,
    /// Percentiles, µs.
    pub summary: Option<Summary>,
    /// CDF points `(µs, fraction below)`.
    pub cdf: Vec<(u64, f64)>,
}

/// How actions ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Applied by the origin.
    pub applied: usize,
    /// Refused.
    pub rejected: usize,
    /// Not sent by the SDK (too many in flight).
    pub busy: usize,
    /// Failed without an outcome.
    pub failed: usize,
    /// No outcome by the end.
    pub unresolved: usize,
}

/// Recovery after one failure (serialised with report.json's keys).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// What failed.
    #[serde(rename = "what")]
    pub label: String,
    /// When, µs.
    #[serde(rename = "at_s", serialize_with = "us_as_s")]
    pub at_us: u64,
    /// When the failure ended (heal, origin back), for failures with a
    /// length, µs.
    #[serde(rename = "healed_at_s", serialize_with = "opt_us_as_s")]
    pub heal_us: Option<u64>,
    /// Where the measurement stops (the next failure, or the end), µs.
    #[serde(rename = "window_end_s", serialize_with = "us_as_s")]
    pub window_end_us: u64,
    /// Clients that noticed (moved, or were told their relay lost the origin).
    #[serde(rename = "affected_clients")]
    pub affected: usize,
    /// Of those, resumed from a snapshot rather than gap-free.
    #[serde(rename = "rebuilt_from_snapshot")]
    pub rebuilt: usize,
    /// Of those, not resumed by the end of the window.
    #[serde(rename = "not_resumed")]
    pub unresumed: usize,
    /// From the failure to the last affected client resumed, µs (`None`
    /// when none was affected or some never resumed).
    #[serde(rename = "all_resumed_after_s", serialize_with = "opt_us_as_s")]
    pub resumed_us: Option<u64>,
    /// p99 delivery latency over the 5 s before the failure, µs.
    #[serde(
        rename = "pre_failure_delivery_p99_ms",
        serialize_with = "opt_us_as_ms"
    )]
    pub threshold_us: Option<u64>,
    /// Allowance on top of it for clients moved to a farther relay, µs.
    #[serde(rename = "longer_path_allowance_ms", serialize_with = "us_as_ms")]
    pub allowance_us: u64,
    /// From the failure until the p99 delivery latency over a 1 s window
    /// is back under the threshold (+10%), µs; `None` if it never was.
    #[serde(rename = "delivery_back_after_s", serialize_with = "opt_us_as_s")]
    pub delivery_back_us: Option<u64>,
    /// For each affected client resumed by the end of the window, from the
    /// failure to its last resume, µs, ascending (the release gate
    /// `recovery_p99_s` is their p99).
    #[serde(skip)]
    pub resume_us: Vec<u64>,
}

/// Everything a report shows about one run.
#[derive(Debug, Clone)]
pub struct RunFigures {
    /// Design or baseline.
    pub mode: Mode,
    /// Clients.
    pub clients: u32,
    /// Wall time of the run.
    pub wall_s: f64,
    /// Wall time of its setup.
    pub setup_s: f64,
    /// Scenario length, µs.
    pub duration_us: u64,
    /// Ack latency per class.
    pub ack: Vec<ClassFigures>,
    /// How actions ended.
    pub outcomes: Outcomes,
    /// Delivery latency of every event, µs.
    pub delivery: Option<Summary>,
    /// Delivery latency per class, µs.
    pub delivery_by_class: Vec<(&'static str, Option<Summary>)>,
    /// Delivery latency over time, 500 ms buckets.
    pub delivery_series: Vec<Bucket>,
    /// Deliveries missed by a lagging watcher (not measured).
    pub lagged: u64,
    /// Clock error, signed, µs.
    pub clock_errors: Vec<i64>,
    /// |clock error|, µs.
    pub clock_abs: Option<Summary>,
    /// Countdown errors, signed, µs.
    pub countdown_errors: Vec<i64>,
    /// |countdown error|, µs.
    pub countdown_abs: Option<Summary>,
    /// Clients whose countdown never showed zero (no clock estimate).
    pub countdown_missing: usize,
    /// Battles started.
    pub battles: usize,
    /// Recovery after each failure.
    pub recoveries: Vec<Recovery>,
    /// Timeline entries as played.
    pub markers: Vec<Marker>,
    /// Late wake-ups of the stall detectors.
    pub stalls: Vec<Stall>,
    /// The SDK's counters, summed.
    pub client_stats: client_sdk::Stats,
    /// Each client at the end.
    pub per_client: Vec<crate::scenario::run::record::ClientSummary>,
    /// Per link: name, packets offered (both ways), packets dropped.
    pub links: Vec<(String, u64, u64)>,
    /// Each link's full counters, for the JSON.
    pub link_stats: Vec<(String, crate::link::LinkStats)>,
    /// Steps of the origin's clock at restarts, µs.
    pub origin_estimate_steps: Vec<i64>,
    /// Cluster mode: what the room logs showed.
    pub cluster: Option<crate::cluster::ClusterEvidence>,
    /// The invariants.
    pub checks: Vec<Check>,
    /// Remarks from the run.
    pub notes: Vec<String>,
}

impl RunFigures {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Latency figures of one class.
    pub fn class(&self, class: Class) -> Option<&ClassFigures> {
        self.ack.iter().find(|c| c.class == class)
    }
}

/// Compute every figure of a run.
pub fn analyse(r: &RunRecord) -> RunFigures {
    let rec = &r.recorded;
    let duration_us = r.duration.as_micros() as u64;
    let (outcomes, ack) = acks(&rec.actions);
    let d = deliveries(r, duration_us);
    let clock_errors: Vec<i64> = rec.readings.iter().map(|c| c.error_us).collect();
    let clock_abs = abs_summary(&clock_errors);
    let countdown_errors: Vec<i64> = rec.countdowns.iter().filter_map(|c| c.error_us).collect();
    let countdown_abs = abs_summary(&countdown_errors);
    let countdown_missing = rec
        .countdowns
        .iter()
        .filter(|c| c.error_us.is_none())
        .count();
    let mut markers = rec.markers.clone();
    markers.sort_by_key(|m| m.t_us);
    let recoveries = recoveries(&markers, &rec.conns, &d.timed, d.end_ms * 1000);

    let links = r
        .links
        .iter()
        .map(|(name, s)| {
            let offered = s.up.engine.packets_in + s.down.engine.packets_in;
            let dropped = s.up.engine.dropped() + s.down.engine.dropped();
            (name.clone(), offered, dropped)
        })
        .collect();

    let mut checks = invariants::check(&Facts {
        actions: &rec.actions,
        seen: &rec.seen,
        origin: &r.origin_rooms,
        mirrors: &r.mirrors,
        converge_error: r.converge_error.as_deref(),
        battles: &rec.battles,
    });
    if let Some(c) = &r.cluster {
        checks.push(invariants::one_writer(c));
    }

    RunFigures {
        mode: r.mode,
        clients: r.clients,
        wall_s: r.wall.as_secs_f64(),
        setup_s: r.setup.as_secs_f64(),
        duration_us,
        ack,
        outcomes,
        delivery: d.all,
        delivery_by_class: d.by_class,
        delivery_series: d.series,
        lagged: r.lagged,
        clock_errors,
        clock_abs,
        countdown_errors,
        countdown_abs,
        countdown_missing,
        battles: rec.battles.len(),
        recoveries,
        markers,
        stalls: rec.stalls.clone(),
        client_stats: r.client_stats,
        per_client: r.per_client.clone(),
        links,
        link_stats: r.links.clone(),
        origin_estimate_steps: r.origin_estimate_steps.clone(),
        cluster: r.cluster.clone(),
        checks,
        notes: rec.notes.clone(),
    }
}

/// How actions ended, and the ack latency per class.
fn acks(actions: &[ActionRecord]) -> (Outcomes, Vec<ClassFigures>) {
    let mut outcomes = Outcomes::default();
    let mut lat: BTreeMap<Class, Vec<u64>> = BTreeMap::new();
    for a in actions {
        match a.result {
            ActionResult::Applied { .. } => outcomes.applied += 1,
            ActionResult::Rejected { .. } => outcomes.rejected += 1,
            ActionResult::Busy => outcomes.busy += 1,
            ActionResult::Failed(_) => outcomes.failed += 1,
            ActionResult::Unresolved => outcomes.unresolved += 1,
        }
        if matches!(
            a.result,
            ActionResult::Applied { .. } | ActionResult::Rejected { .. }
        ) {
            lat.entry(a.class).or_default().push(a.latency_us);
        }
    }
    let ack = CLASSES
        .iter()
        .map(|&(class, label)| {
            let mut v = lat.remove(&class).unwrap_or_default();
            v.sort_unstable();
            ClassFigures {
                class,
                label,
                summary: Summary::of_sorted(&v),
                cdf: cdf(&v, 300),
            }
        })
        .collect();

    (outcomes, ack)
}

/// Delivery latencies: overall, per class, over time.
struct Deliveries {
    all: Option<Summary>,
    by_class: Vec<(&'static str, Option<Summary>)>,
    series: Vec<Bucket>,
    /// `(arrival ms, latency µs)`, by arrival.
    timed: Vec<(u64, u64)>,
    /// The last arrival, or the run's end if later, ms.
    end_ms: u64,
}

fn deliveries(r: &RunRecord, duration_us: u64) -> Deliveries {
    let mut all: Vec<u64> = r
        .deliveries
        .iter()
        .map(|d| u64::from(d.latency_us))
        .collect();
    let delivery = Summary::of(&mut all);
    let delivery_by_class = CLASSES
        .iter()
        .map(|&(class, label)| {
            let mut v: Vec<u64> = r
                .deliveries
                .iter()
                .filter(|d| d.class == class)
                .map(|d| u64::from(d.latency_us))
                .collect();
            (label, Summary::of(&mut v))
        })
        .collect();
    let mut timed: Vec<(u64, u64)> = r
        .deliveries
        .iter()
        .map(|d| (u64::from(d.t_ms), u64::from(d.latency_us)))
        .collect();
    timed.sort_unstable();
    let end_ms = timed
        .last()
        .map_or(duration_us / 1000, |d| d.0)
        .max(duration_us / 1000);
    let delivery_series = buckets(&timed, BUCKET_MS, end_ms + 1);

    Deliveries {
        all: delivery,
        by_class: delivery_by_class,
        series: delivery_series,
        timed,
        end_ms,
    }
}

/// `Summary` of the absolute values.
fn abs_summary(values: &[i64]) -> Option<Summary> {
    Summary::of(&mut values.iter().map(|e| e.unsigned_abs()).collect::<Vec<_>>())
}

/// Recovery after each failure, up to the next failure (or `end_us`).
fn recoveries(
    markers: &[Marker],
    conns: &[ConnRecord],
    timed: &[(u64, u64)],
    end_us: u64,
) -> Vec<Recovery> {
    let failures: Vec<&Marker> = markers.iter().filter(|m| m.kind == Kind::Failure).collect();
    failures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let heal_us = markers
                .iter()
                .find(|m| m.kind == Kind::Heal && m.step == f.step && m.t_us >= f.t_us)
                .map(|m| m.t_us);
            let window_end_us = failures.get(i + 1).map_or(end_us, |n| n.t_us).max(f.t_us);
            recovery(
                &f.label,
                f.t_us,
                f.extra_path_us,
                heal_us,
                window_end_us,
                conns,
                timed,
            )
        })
        .collect()
}

/// Recovery after a failure at `at_us`, looking no further than
/// `window_end_us`.
///
/// - **affected**: clients with a disruption (moving, or told their relay
///   lost the origin) in the window; **resumed** when the last of them is
///   back (resumed on a relay, or told the origin is back) and stays back
///   until the window ends.
/// - **delivery back**: the first 1 s window, starting no earlier than the
///   failure's end (heal) and the last resume, whose p99 delivery latency is
///   within 10% of the p99 over the 5 s before the failure — plus
///   `allowance_us` when the failure moved clients to another region's
///   relay, whose path is longer by that much each way.
///
/// `deliveries` are `(arrival ms, latency µs)`, sorted by arrival.
pub fn recovery(
    label: &str,
    at_us: u64,
    allowance_us: u64,
    heal_us: Option<u64>,
    window_end_us: u64,
    conns: &[ConnRecord],
    deliveries: &[(u64, u64)],
) -> Recovery {
    // Each client's state through the window.
    let mut clients: BTreeMap<u32, (bool, Option<u64>, bool)> = BTreeMap::new(); // (down, last resume, rebuilt)
    let mut sorted: Vec<&ConnRecord> = conns
        .iter()
        .filter(|c| c.t_us >= at_us && c.t_us < window_end_us)
        .collect();
    sorted.sort_by_key(|c| c.t_us);
    for c in sorted {
        if c.event.disrupts() {
            clients.entry(c.client).or_default().0 = true;
        } else if c.event.resumes() {
            if let Some(s) = clients.get_mut(&c.client) {
                s.0 = false;
                s.1 = Some(c.t_us);
                if let crate::scenario::run::record::ConnEvent::Reconnected {
                    rebuilt: true, ..
                } = c.event
                {
                    s.2 = true;
                }
            }
        }
    }
    let affected = clients.len();
    let unresumed = clients.values().filter(|s| s.0).count();
    let rebuilt = clients.values().filter(|s| s.2).count();
    let last_resume = clients.values().filter_map(|s| s.1).max();
    let mut resume_us: Vec<u64> = clients
        .values()
        .filter(|s| !s.0)
        .filter_map(|s| s.1)
        .map(|t| t - at_us)
        .collect();
    resume_us.sort_unstable();
    let resumed_us = match (affected, unresumed, last_resume) {
        (0, _, _) | (_, 1.., _) | (_, _, None) => None,
        (_, 0, Some(t)) => Some(t - at_us),
    };

    let window = |from_ms: u64, to_ms: u64| -> &[(u64, u64)] {
        let a = deliveries.partition_point(|d| d.0 < from_ms);
        let b = deliveries.partition_point(|d| d.0 < to_ms);
        &deliveries[a..b]
    };
    let p99 = |samples: &[(u64, u64)]| {
        let mut v: Vec<u64> = samples.iter().map(|d| d.1).collect();
        v.sort_unstable();
        quantile(&v, 0.99)
    };
    let at_ms = at_us / 1000;
    let before = window(at_ms.saturating_sub(BEFORE_MS), at_ms);
    let threshold_us = (before.len() >= 50).then(|| p99(before));
    let delivery_back_us = threshold_us.and_then(|th| {
        let limit = (th as f64 * SLACK) as u64 + allowance_us;
        let from = [Some(at_us), heal_us, last_resume]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(at_us)
            / 1000;
        let end_ms = window_end_us / 1000;
        let mut t = from;
        // Bounded: one step per 250 ms of the window.
        while t + WINDOW_MS <= end_ms {
            let w = window(t, t + WINDOW_MS);
            if w.len() >= 20 && p99(w) <= limit {
                return Some((t * 1000).saturating_sub(at_us));
            }
            t += STEP_MS;
        }
        None
    });
    Recovery {
        label: label.to_owned(),
        at_us,
        heal_us,
        window_end_us,
        affected,
        rebuilt,
        unresumed,
        resumed_us,
        threshold_us,
        allowance_us,
        delivery_back_us,
        resume_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::run::record::ConnEvent;

    fn conn(t_ms: u64, client: u32, event: ConnEvent) -> ConnRecord {
        ConnRecord {
            t_us: t_ms * 1000,
            client,
            event,
        }
    }

    /// 40 ms deliveries every 10 ms, with 900 ms ones from 11.0 s to 12.4 s.
    fn deliveries() -> Vec<(u64, u64)> {
        (0..2_000u64)
            .map(|i| {
                let t = i * 10;
                let slow = (11_000..12_400).contains(&t);
                (t, if slow { 900_000 } else { 40_000 })
            })
            .collect()
    }

    #[test]
    fn recovery_after_a_relay_death() {
        let conns = [
            conn(9_000, 7, ConnEvent::Moving { goaway: false }), // before: not counted
            conn(11_000, 1, ConnEvent::Moving { goaway: false }),
            conn(11_050, 2, ConnEvent::Moving { goaway: false }),
            conn(
                11_200,
                1,
                ConnEvent::Reconnected {
                    rebuilt: false,
                    took_us: 200_000,
                },
            ),
            conn(
                11_300,
                2,
                ConnEvent::Reconnected {
                    rebuilt: true,
                    took_us: 250_000,
                },
            ),
        ];
        let r = recovery(
            "relay killed",
            10_000_000,
            0,
            None,
            20_000_000,
            &conns,
            &deliveries(),
        );
        assert_eq!((r.affected, r.rebuilt, r.unresumed), (2, 1, 0));
        assert_eq!(r.resumed_us, Some(1_300_000));
        assert_eq!(r.resume_us, [1_200_000, 1_300_000]);
        assert_eq!(r.threshold_us, Some(40_000));
        // Scanning from the last resume (11.3 s) in 250 ms steps, the first
        // clean 1 s window starts at 12.55 s.
        assert_eq!(r.delivery_back_us, Some(2_550_000));
    }

    #[test]
    fn a_client_never_resumed_is_counted() {
        let conns = [
            conn(11_000, 1, ConnEvent::UpstreamDown),
            conn(11_000, 2, ConnEvent::UpstreamDown),
            conn(13_000, 2, ConnEvent::UpstreamUp),
        ];
        let r = recovery(
            "partition",
            10_000_000,
            0,
            Some(12_000_000),
            20_000_000,
            &conns,
            &deliveries(),
        );
        assert_eq!((r.affected, r.unresumed), (2, 1));
        assert_eq!(r.resumed_us, None);
        assert_eq!(r.resume_us, [3_000_000]);
        // Scanning starts at the later of the heal (12 s) and the last
        // resume (13 s), which is clean.
        assert_eq!(r.delivery_back_us, Some(3_000_000));
    }

    #[test]
    fn no_samples_before_means_no_threshold() {
        let r = recovery("early", 100_000, 0, None, 20_000_000, &[], &deliveries());
        assert_eq!(r.threshold_us, None);
        assert_eq!(r.delivery_back_us, None);
        assert_eq!((r.affected, r.resumed_us), (0, None));
    }
}
