//! What `testbed attack` measured and the invariants it judged (the text it
//! prints: [`Report::render`], in `render.rs`).

use std::time::Duration;

use crate::bench::stats::fmt_us;

use super::aioquic;
use super::honest::Gifts;
use super::hostile::{End, Tally};
use super::plan::{Attack, Plan};

/// The relay's and origin's figures over one window.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Relay RSS when the window opened, KiB.
    pub relay_before_kb: u64,
    /// Relay peak RSS in the window (attack and wind-down), KiB.
    pub relay_peak_kb: u64,
    /// Relay RSS after the settle pause, KiB.
    pub relay_after_kb: u64,
    /// Origin RSS when the window opened, KiB.
    pub origin_before_kb: u64,
    /// Origin peak RSS, KiB.
    pub origin_peak_kb: u64,
    /// Origin RSS after the settle pause, KiB.
    pub origin_after_kb: u64,
    /// Relay CPU time during the attack itself.
    pub relay_cpu: Duration,
    /// Origin CPU time during the attack itself.
    pub origin_cpu: Duration,
    /// CPU time of the whole machine during the attack itself (every
    /// process, plus interrupt work such as loopback packet delivery).
    pub machine_cpu: Duration,
    /// CPU time of the attackers' own process during the attack itself.
    pub attackers_cpu: Duration,
    /// How long the attack itself lasted.
    pub wall: Duration,
}

impl Figures {
    /// How much the relay grew in the window (peak over before), KiB.
    pub fn growth_kb(&self) -> u64 {
        self.relay_peak_kb.saturating_sub(self.relay_before_kb)
    }

    /// Relay CPU as cores on average.
    pub fn relay_cores(&self) -> f64 {
        self.cores(self.relay_cpu)
    }

    /// `cpu` over the window's wall time, as cores.
    pub fn cores(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / self.wall.as_secs_f64().max(0.001)
    }
}

/// One attack's results.
#[derive(Debug, Clone, Default)]
pub struct AttackReport {
    /// Which.
    pub attack: Attack,
    /// Its honest gift phase.
    pub phase: usize,
    /// Memory and CPU.
    pub figures: Figures,
    /// What the attackers did and met.
    pub tally: Tally,
    /// The honest gifts sent during it.
    pub gifts: Gifts,
    /// The honest gifts of the baselines beside it (before and after),
    /// pooled: what its p99 is compared with.
    pub baseline: Gifts,
    /// Stopped early: the relay passed the abort level.
    pub aborted: bool,
    /// The relay process was running afterwards.
    pub alive: bool,
    /// Why the relay did not serve a fresh client afterwards (`None`: it did).
    pub not_serving: Option<String>,
    /// Honest clients on a relay afterwards.
    pub honest_connected: usize,
    /// The attack could not run.
    pub error: Option<String>,
}

/// The aioquic client's results.
#[derive(Debug, Clone)]
pub struct AioquicReport {
    /// Its honest gift phase.
    pub phase: usize,
    /// Memory and CPU.
    pub figures: Figures,
    /// What the script printed, or why it could not run.
    pub outcome: Result<aioquic::Outcome, String>,
    /// The honest gifts sent meanwhile.
    pub gifts: Gifts,
    /// The relay process was running afterwards.
    pub alive: bool,
    /// Why the relay did not serve a fresh client afterwards.
    pub not_serving: Option<String>,
}

/// Everything measured and judged.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// What was run.
    pub plan: Plan,
    /// An optimised build.
    pub release: bool,
    /// Cores.
    pub cores: usize,
    /// Relay and origin process ids.
    pub pids: (u32, u32),
    /// Relay RSS before any client, KiB.
    pub relay_idle_kb: u64,
    /// Relay RSS with the honest crowd connected, KiB.
    pub relay_connected_kb: u64,
    /// The baseline window.
    pub baseline: Figures,
    /// The baseline's honest gifts.
    pub baseline_gifts: Gifts,
    /// Honest gifts sent between phases.
    pub between: Gifts,
    /// Each attack.
    pub attacks: Vec<AttackReport>,
    /// The aioquic client, if run.
    pub aioquic: Option<AioquicReport>,
    /// Anything worth saying.
    pub notes: Vec<String>,
    /// Invariants broken: the run fails if any.
    pub violations: Vec<String>,
    /// Targets missed that do not fail the run (ack p99 beyond the factor,
    /// with `p99_warn_only`).
    pub warnings: Vec<String>,
    /// Load averages at the start and at the end.
    pub loadavg: (String, String),
    /// CPU time other processes on the machine used during the run (a busy
    /// machine inflates every latency here).
    pub others_cpu: Duration,
    /// The whole run.
    pub took: Duration,
}

/// KiB as MiB, one decimal, no unit.
pub(super) fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// A phase's honest ack p99, µs (`None`: no ack).
pub(super) fn p99(g: &Gifts) -> Option<f64> {
    (!g.latencies.is_empty()).then(|| g.latencies.summary().p99_us)
}

impl AttackReport {
    /// Its honest ack p99 over the p99 of the baselines beside it (`None`
    /// without acks in either).
    pub fn p99_ratio(&self) -> Option<f64> {
        match (p99(&self.gifts), p99(&self.baseline)) {
            (Some(p), Some(b)) if b > 0.0 => Some(p / b),
            _ => None,
        }
    }

    /// Whether its honest ack p99 is within `factor` times the baselines'
    /// beside it (`None`: nothing to compare).
    pub fn p99_within(&self, factor: f64) -> Option<bool> {
        self.p99_ratio().map(|r| r <= factor)
    }
}

fn lost_line(what: &str, g: &Gifts) -> Option<String> {
    (g.lost() > 0).then(|| {
        format!(
            "{what}: {} of {} honest gifts lost ({} refused, {} failed, {} unresolved){}",
            g.lost(),
            g.sent,
            g.rejected,
            g.failed,
            g.unresolved,
            if g.examples.is_empty() {
                String::new()
            } else {
                format!(", e.g. {}", g.examples.join("; "))
            }
        )
    })
}

/// How the attackers were stopped, in a few words: each attacker's first
/// cut-off by code, with when (from the attack's start).
pub fn stopped(t: &Tally) -> String {
    if t.first_stops.is_empty() {
        return if t.connections == 0 {
            "no connections (raw packets)".into()
        } else {
            "never".into()
        };
    }
    let mut by: std::collections::BTreeMap<&End, Vec<Duration>> = Default::default();
    for (end, at) in &t.first_stops {
        by.entry(end).or_default().push(*at);
    }
    let mut parts = Vec::new();
    for (end, mut at) in by {
        at.sort();
        let med = at[at.len() / 2];
        let max = at[at.len() - 1];
        parts.push(format!(
            "{end} ×{} (p50 {:.2} s, max {:.2} s)",
            at.len(),
            med.as_secs_f64(),
            max.as_secs_f64()
        ));
    }
    let never = t.attackers.saturating_sub(t.first_stops.len() as u64);
    if never > 0 && t.connections > 0 {
        parts.push(format!("never ×{never}"));
    }
    parts.join(", ")
}

/// Bytes in KiB, MiB or GiB.
pub(super) fn bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

impl Report {
    /// Judge the invariants (fills `violations` and `warnings`).
    pub fn judge(&mut self) {
        let mut v = Vec::new();
        let mut w = Vec::new();
        let bound_kb = self.plan.rss_bound / 1024;
        v.extend(lost_line("between phases", &self.between));
        v.extend(lost_line("baseline", &self.baseline_gifts));
        for a in &self.attacks {
            let name = a.attack.name();
            if let Some(e) = &a.error {
                v.push(format!("{name}: could not run: {e}"));
                continue;
            }
            v.extend(lost_line(name, &a.gifts));
            if !a.alive {
                v.push(format!("{name}: the relay died"));
            } else if let Some(e) = &a.not_serving {
                v.push(format!("{name}: the relay stopped serving: {e}"));
            }
            if a.figures.relay_peak_kb > bound_kb {
                v.push(format!(
                    "{name}: relay RSS peaked at {} MiB (+{} MiB in this attack), past the {} MiB bound{}",
                    mib(a.figures.relay_peak_kb),
                    mib(a.figures.growth_kb()),
                    mib(bound_kb),
                    if a.aborted {
                        " (the attack was stopped early at the abort level)"
                    } else {
                        ""
                    }
                ));
            }
            if let (Some(false), Some(p), Some(base)) = (
                a.p99_within(self.plan.p99_factor),
                p99(&a.gifts),
                p99(&a.baseline),
            ) {
                let line = format!(
                    "{name}: honest ack p99 {} is {:.1}× the {} of the baselines beside it (goal: within {}×)",
                    fmt_us(p),
                    p / base,
                    fmt_us(base),
                    self.plan.p99_factor
                );
                if self.plan.p99_warn_only {
                    w.push(line);
                } else {
                    v.push(line);
                }
            }
        }
        if let Some(q) = &self.aioquic {
            v.extend(lost_line("aioquic", &q.gifts));
            match &q.outcome {
                Err(e) => v.push(format!("aioquic: could not run: {e}")),
                Ok(o) if o.status != Some(0) => v.push(format!(
                    "aioquic: the script failed (status {:?}): {}",
                    o.status, o.stderr
                )),
                Ok(_) => {}
            }
            if !q.alive {
                v.push("aioquic: the relay died".into());
            } else if let Some(e) = &q.not_serving {
                v.push(format!("aioquic: the relay stopped serving: {e}"));
            }
            let grew = q
                .figures
                .relay_peak_kb
                .saturating_sub(q.figures.relay_before_kb);
            let allowed =
                self.plan.per_connection_bound / 1024 * self.plan.aioquic_connections as u64;
            if grew > allowed {
                v.push(format!(
                    "aioquic: relay RSS grew {} MiB over its baseline with {} connections, past {} MiB ({} per connection)",
                    mib(grew),
                    self.plan.aioquic_connections,
                    mib(allowed),
                    bytes(self.plan.per_connection_bound)
                ));
            }
        }
        self.violations = v;
        self.warnings = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gifts(applied: u64, lost: u64, p99_ms: u64) -> Gifts {
        let mut g = Gifts {
            sent: applied + lost,
            applied,
            unresolved: lost,
            ..Gifts::default()
        };
        for _ in 0..applied {
            g.latencies.record(Duration::from_millis(p99_ms));
        }
        g
    }

    #[test]
    fn a_lost_gift_a_dead_relay_and_a_fat_relay_each_break_the_run() {
        let mut r = Report {
            baseline_gifts: gifts(100, 0, 5),
            ..Report::default()
        };
        r.attacks.push(AttackReport {
            attack: Attack::Joins,
            gifts: gifts(10, 0, 5),
            baseline: gifts(100, 0, 5),
            alive: true,
            ..AttackReport::default()
        });
        r.judge();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        r.attacks[0].gifts = gifts(10, 1, 5);
        r.judge();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        r.attacks[0].gifts = gifts(10, 0, 5);
        r.attacks[0].alive = false;
        r.judge();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        r.attacks[0].alive = true;
        r.attacks[0].figures.relay_peak_kb = r.plan.rss_bound / 1024 + 1;
        r.judge();
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }

    #[test]
    fn a_p99_past_the_factor_of_the_baselines_beside_it_fails_unless_warn_only() {
        let mut r = Report {
            // The run's first baseline was quiet; the machine got busier.
            baseline_gifts: gifts(100, 0, 2),
            ..Report::default()
        };
        r.attacks.push(AttackReport {
            attack: Attack::Actions,
            gifts: gifts(10, 0, 9),
            baseline: gifts(100, 0, 5),
            alive: true,
            ..AttackReport::default()
        });
        r.judge();
        assert!(
            r.violations.is_empty() && r.warnings.is_empty(),
            "1.8× the baselines beside it: within 2×"
        );
        assert_eq!(r.attacks[0].p99_within(2.0), Some(true));
        r.attacks[0].gifts = gifts(10, 0, 11);
        r.judge();
        assert_eq!(r.violations.len(), 1, "2.2×: {:?}", r.violations);
        assert!(r.violations[0].contains("2.2×"), "{:?}", r.violations);
        r.plan.p99_warn_only = true;
        r.judge();
        assert!(r.violations.is_empty());
        assert_eq!(r.warnings.len(), 1);
    }

    #[test]
    fn stops_are_summarised_by_code() {
        let mut t = Tally {
            attackers: 3,
            connections: 3,
            ..Tally::default()
        };
        assert_eq!(stopped(&t), "never");
        t.first_stops.push((
            End::code(protocol::message::ErrorCode::Flood),
            Duration::from_millis(400),
        ));
        let s = stopped(&t);
        assert!(s.contains("Flood (6) ×1"), "{s}");
        assert!(s.contains("never ×2"), "{s}");
    }
}
