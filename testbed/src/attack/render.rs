//! The text `testbed attack` prints: the setup, the baseline, the aioquic
//! client, each attack, a summary table and the verdict, one function per
//! section.

use crate::bench::stats::fmt_us;

use super::honest::Gifts;
use super::hostile::Tally;
use super::report::{bytes, mib, p99, stopped, AioquicReport, AttackReport, Figures, Report};

impl Report {
    /// The report as text.
    pub fn render(&self, command: &str) -> String {
        let mut o = String::new();
        self.render_setup(&mut o, command);
        let base = p99(&self.baseline_gifts);
        o.push_str(&format!(
            "\nbaselines (no attackers; {} phases of {:.1} s, pooled)\n",
            self.attacks.len() + 1,
            self.plan.baseline.as_secs_f64()
        ));
        o.push_str(&format!("  {}\n", figures_line(&self.baseline)));
        o.push_str(&format!(
            "  honest gifts: {}\n",
            gifts_line(&self.baseline_gifts, base)
        ));
        if let Some(line) = slowest_line(&self.baseline_gifts) {
            o.push_str(&format!("  {line}\n"));
        }
        if let Some(q) = &self.aioquic {
            self.render_aioquic(&mut o, q, base);
        }
        for a in &self.attacks {
            self.render_attack(&mut o, a);
        }
        self.render_summary(&mut o, base);
        self.render_verdict(&mut o, base);
        o
    }

    /// The build, the processes, the honest crowd, the attackers, the
    /// bounds and the relay's memory before any attack.
    fn render_setup(&self, o: &mut String, command: &str) {
        let p = &self.plan;
        o.push_str(&format!(
            "\nRingside attack: {} cores, {}\ncommand: {command}\n",
            self.cores,
            if self.release {
                "release build"
            } else {
                "DEBUG build: CPU and latency figures are not meaningful, use --release"
            }
        ));
        o.push_str(&format!(
            "layout: origin (pid {}) and relay (pid {}) are child processes with their default limits; \
             the honest clients run on a one-thread runtime of their own in this process; \
             each attack's attackers are a child process of their own (`serve-attack`)\n",
            self.pids.1, self.pids.0
        ));
        o.push_str(&format!(
            "honest: {} SDK clients on the relay: 2 hosts in a PK battle, {} viewers gifting {}/s each; \
             a gift not applied within {:.0} s is lost\n",
            p.honest,
            p.honest.saturating_sub(2),
            p.gift_rate,
            p.action_deadline.as_secs_f64()
        ));
        o.push_str(&format!(
            "attackers: {} connections per attack ({} users among them, one loopback address each), \
             {:.1} s per attack, at full rate, on this machine (same priority as everything else); seed {}\n",
            p.attackers,
            p.attacker_users,
            p.duration.as_secs_f64(),
            p.seed
        ));
        o.push_str(&format!(
            "baselines: {:.1} s without attackers before the first attack and after each; \
             each attack is compared with the two beside it, pooled\n",
            p.baseline.as_secs_f64()
        ));
        o.push_str(&format!(
            "bounds: relay RSS {} MiB (abort at {} MiB); honest ack p99 within {}× the baselines beside each attack{}\n",
            mib(p.rss_bound / 1024),
            mib(p.rss_abort / 1024),
            p.p99_factor,
            if p.p99_warn_only {
                " (warn only)"
            } else {
                " (past it the run fails)"
            }
        ));
        o.push_str(&format!(
            "relay RSS: {} MiB idle, {} MiB with the honest crowd\n",
            mib(self.relay_idle_kb),
            mib(self.relay_connected_kb)
        ));
    }

    /// The aioquic client's section: its growth per connection and the
    /// script's own lines.
    fn render_aioquic(&self, o: &mut String, q: &AioquicReport, base: Option<f64>) {
        let p = &self.plan;
        o.push_str(&format!(
            "\naioquic — a non-quinn client (Python aioquic, {} connections): junk datagrams, \
             bogus length prefixes, unfinished streams, idle connections\n",
            p.aioquic_connections
        ));
        o.push_str(&format!("  {}\n", figures_line(&q.figures)));
        o.push_str(&format!(
            "  relay growth over its baseline: {} MiB ({} per connection; bound {} per connection)\n",
            mib(q.figures.relay_peak_kb.saturating_sub(q.figures.relay_before_kb)),
            bytes(
                q.figures
                    .relay_peak_kb
                    .saturating_sub(q.figures.relay_before_kb)
                    * 1024
                    / p.aioquic_connections.max(1) as u64
            ),
            bytes(p.per_connection_bound)
        ));
        match &q.outcome {
            Ok(out) => {
                for l in &out.lines {
                    o.push_str(&format!("  | {l}\n"));
                }
                if out.status != Some(0) {
                    o.push_str(&format!(
                        "  script status {:?}; stderr:\n{}\n",
                        out.status, out.stderr
                    ));
                }
            }
            Err(e) => o.push_str(&format!("  could not run: {e}\n")),
        }
        o.push_str(&format!("  honest gifts: {}\n", gifts_line(&q.gifts, base)));
    }

    /// One attack's section: the relay's figures, what the attackers did,
    /// how they were stopped, the honest gifts meanwhile, the relay after.
    fn render_attack(&self, o: &mut String, a: &AttackReport) {
        o.push_str(&format!("\n{} — {}\n", a.attack.name(), a.attack.what()));
        if let Some(e) = &a.error {
            o.push_str(&format!("  could not run: {e}\n"));
            return;
        }
        o.push_str(&format!(
            "  {}{}\n",
            figures_line(&a.figures),
            if a.aborted {
                "  [stopped early: relay RSS passed the abort level]"
            } else {
                ""
            }
        ));
        let t = &a.tally;
        o.push_str(&format!("  attack: {}\n", did_line(t)));
        o.push_str(&format!("  stopped: {}\n", stopped(t)));
        let ends: Vec<String> = t.ends.iter().map(|(e, n)| format!("{e} ×{n}")).collect();
        if !ends.is_empty() {
            let life = if t.lifetimes.is_empty() {
                String::new()
            } else {
                let s = t.lifetimes.summary();
                format!(
                    "; lifetime of those the relay ended p50 {} max {}",
                    fmt_us(s.p50_us),
                    fmt_us(s.max_us)
                )
            };
            o.push_str(&format!("  connections ended: {}{life}\n", ends.join(", ")));
        }
        for n in &t.notes {
            o.push_str(&format!("  note: {n}\n"));
        }
        o.push_str(&format!(
            "  honest gifts: {}\n",
            gifts_line(&a.gifts, p99(&a.baseline))
        ));
        if let Some(line) = slowest_line(&a.gifts) {
            o.push_str(&format!("  {line}\n"));
        }
        o.push_str(&format!("  {}\n", self.goal_line(a)));
        o.push_str(&format!(
            "  relay afterwards: {}, {}; {} of {} honest clients connected\n",
            if a.alive { "alive" } else { "DEAD" },
            match &a.not_serving {
                None => "serving".to_string(),
                Some(e) => format!("NOT SERVING ({e})"),
            },
            a.honest_connected,
            self.plan.honest
        ));
    }

    /// An attack's honest ack p99 against the baselines beside it, and the
    /// verdict on the goal.
    fn goal_line(&self, a: &AttackReport) -> String {
        let factor = self.plan.p99_factor;
        match (p99(&a.gifts), p99(&a.baseline), a.p99_ratio()) {
            (Some(p), Some(b), Some(r)) => format!(
                "honest ack p99 {} against {} in the baselines beside it ({} acks): {:.2}× — {}",
                fmt_us(p),
                fmt_us(b),
                a.baseline.latencies.len(),
                r,
                verdict(r, factor)
            ),
            _ => "honest ack p99: nothing to compare".into(),
        }
    }

    /// One line per phase: memory, CPU, honest p99, how attackers stopped.
    fn render_summary(&self, o: &mut String, base: Option<f64>) {
        o.push_str(&format!(
            "\nsummary{:>13} {:>24} {:>10} {:>10} {:>10} {:>10} {:>14} {:>12} {:>7}  {:<14}  {}\n",
            "",
            "relay RSS peak (MiB)",
            "growth",
            "relay CPU",
            "attackers",
            "machine",
            "honest p99",
            "beside it",
            "ratio",
            format!("goal ≤ {}×", self.plan.p99_factor),
            "stopped"
        ));
        summary_row(
            o,
            "baseline",
            mib(self.baseline.relay_peak_kb),
            &self.baseline,
            false,
            base,
            &no_goal("-"),
        );
        if let Some(q) = &self.aioquic {
            let closed = q.outcome.as_ref().ok().map(|out| {
                let count = |needle: &str| out.lines.iter().filter(|l| l.contains(needle)).count();
                format!(
                    "{} of {} closed by the relay (codes in its lines above)",
                    count("\"closed_by_relay\": true"),
                    count("\"conn\"")
                )
            });
            summary_row(
                o,
                "aioquic",
                mib(q.figures.relay_peak_kb),
                &q.figures,
                false,
                p99(&q.gifts),
                &no_goal(&closed.unwrap_or_else(|| "-".into())),
            );
        }
        for a in &self.attacks {
            let peak = format!(
                "{}{}",
                mib(a.figures.relay_peak_kb),
                if a.aborted { " (aborted)" } else { "" }
            );
            let goal = match a.p99_ratio() {
                Some(r) => format!(
                    "{:>12} {:>7}  {:<14}",
                    p99(&a.baseline).map_or("-".into(), fmt_us),
                    format!("{r:.2}×"),
                    verdict(r, self.plan.p99_factor)
                ),
                None => no_goal("").trim_end().to_string(),
            };
            summary_row(
                o,
                a.attack.name(),
                peak,
                &a.figures,
                true,
                p99(&a.gifts),
                &format!("{goal}  {}", stopped(&a.tally)),
            );
        }
        let within = (self.attacks.iter())
            .filter(|a| a.p99_within(self.plan.p99_factor) == Some(true))
            .count();
        o.push_str(&format!(
            "honest ack p99 within {}× of the baselines beside it: {within} of {} attacks\n",
            self.plan.p99_factor,
            self.attacks.len()
        ));
    }

    /// Gifts lost between phases, the machine, notes, warnings and the
    /// verdict.
    fn render_verdict(&self, o: &mut String, base: Option<f64>) {
        if self.between.lost() > 0 {
            o.push_str(&format!(
                "\nbetween phases: {}\n",
                gifts_line(&self.between, base)
            ));
        }
        let others = self.others_cpu.as_secs_f64() / self.took.as_secs_f64().max(0.001);
        o.push_str(&format!(
            "\nmachine: load average {} at the start, {} at the end; other processes used {:.2} cores on average\n",
            self.loadavg.0, self.loadavg.1, others
        ));
        if others > 0.2 {
            o.push_str("  !! the machine was busy with other work: latencies and CPU shares are inflated\n");
        }
        for n in &self.notes {
            o.push_str(&format!("note: {n}\n"));
        }
        for w in &self.warnings {
            o.push_str(&format!("target missed: {w}\n"));
        }
        if self.violations.is_empty() {
            o.push_str("\nverdict: every invariant held\n");
        } else {
            o.push_str("\nverdict: INVARIANTS BROKEN\n");
            for v in &self.violations {
                o.push_str(&format!("  - {v}\n"));
            }
        }
        o.push_str(&format!(
            "the whole run took {:.1} s\n",
            self.took.as_secs_f64()
        ));
    }
}

/// The summary's goal columns left empty, then `stopped`.
fn no_goal(stopped: &str) -> String {
    format!("{:>12} {:>7}  {:<14}  {stopped}", "-", "-", "-")
}

/// The goal's verdict for a p99 `ratio`.
fn verdict(ratio: f64, factor: f64) -> &'static str {
    if ratio <= factor {
        "within"
    } else {
        "PAST THE GOAL"
    }
}

/// A phase's honest gifts: applied, ack p50 and p99 (against the
/// baseline's p99 `base`), and how many were lost.
fn gifts_line(g: &Gifts, base: Option<f64>) -> String {
    if g.latencies.is_empty() {
        return format!("{} sent, none applied", g.sent);
    }
    let s = g.latencies.summary();
    let ratio = match base {
        Some(b) if b > 0.0 => format!(" ({:.2}× baseline)", s.p99_us / b),
        _ => String::new(),
    };
    format!(
        "{} of {} applied; ack p50 {} p99 {}{ratio}{}",
        g.applied,
        g.sent,
        fmt_us(s.p50_us),
        fmt_us(s.p99_us),
        if g.lost() > 0 {
            format!("  !! {} LOST", g.lost())
        } else {
            String::new()
        }
    )
}

/// A window's memory and CPU in one line.
fn figures_line(f: &Figures) -> String {
    format!(
        "relay RSS {} → peak {} → after {} MiB, CPU {:.2} cores; origin RSS {} → peak {} → after {} MiB, CPU {:.2} cores",
        mib(f.relay_before_kb),
        mib(f.relay_peak_kb),
        mib(f.relay_after_kb),
        f.relay_cores(),
        mib(f.origin_before_kb),
        mib(f.origin_peak_kb),
        mib(f.origin_after_kb),
        f.cores(f.origin_cpu)
    )
}

/// What the attackers did: connections, bytes, packets, messages, answers.
fn did_line(t: &Tally) -> String {
    let mut did = format!(
        "{} attackers, {} connections, sent {}",
        t.attackers,
        t.connections,
        bytes(t.bytes_sent)
    );
    if t.raw_packets > 0 {
        did.push_str(&format!(" in {} raw packets", t.raw_packets));
    }
    if t.messages > 0 {
        did.push_str(&format!(", {} messages/streams", t.messages));
    }
    if t.applied + t.rejected + t.throttled > 0 {
        did.push_str(&format!(
            "; answers seen: {} applied, {} refused, {} throttled",
            t.applied, t.rejected, t.throttled
        ));
    }
    did
}

/// One row of the summary table: the relay's peak (as given) and growth,
/// CPU as cores (the attackers' column only where there were any), the
/// honest ack p99, how the attackers were stopped.
fn summary_row(
    o: &mut String,
    name: &str,
    peak: String,
    f: &Figures,
    attackers: bool,
    honest_p99: Option<f64>,
    stopped: &str,
) {
    o.push_str(&format!(
        "  {:<18} {:>24} {:>10} {:>10} {:>10} {:>10} {:>14} {}\n",
        name,
        peak,
        mib(f.growth_kb()),
        format!("{:.2}", f.relay_cores()),
        if attackers {
            format!("{:.2}", f.cores(f.attackers_cpu))
        } else {
            "-".into()
        },
        format!("{:.2}", f.cores(f.machine_cpu)),
        honest_p99.map_or("-".into(), fmt_us),
        stopped
    ));
}

/// The slowest acks of a phase and when in it their gifts were sent.
fn slowest_line(g: &Gifts) -> Option<String> {
    (!g.slowest.is_empty()).then(|| {
        let each: Vec<String> = g
            .slowest
            .iter()
            .map(|(at, l)| {
                format!(
                    "{} (sent at +{:.2} s)",
                    fmt_us(l.as_secs_f64() * 1e6),
                    at.as_secs_f64()
                )
            })
            .collect();
        format!("slowest acks: {}", each.join(", "))
    })
}
