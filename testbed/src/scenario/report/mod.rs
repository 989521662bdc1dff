//! The report of a scenario: the runs' figures side by side in a terminal
//! table, all of them in a JSON file, and the pictures. Pure apart from
//! [`Report::write`], which writes the files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub mod charts;
pub mod json;
pub mod svg;

use crate::scenario::run::paths::describe;
use crate::scenario::run::record::{Mode, StallKind};
use crate::scenario::run::timeline::Timeline;
use crate::scenario::spec::Scenario;
use crate::scenario::verdict::analysis::{ClassFigures, Recovery, RunFigures};
use crate::scenario::verdict::gates::{Figures, Judgement};
use crate::scenario::verdict::stats::Summary;
use charts::ms;

/// The files [`Report::write`] produces.
pub const FILES: [&str; 5] = [
    "summary.txt",
    "report.json",
    "ack-latency-cdf.svg",
    "delivery-latency.svg",
    "timer-drift.svg",
];

/// A scenario's report: what it was and what each run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Its length, s.
    pub duration_s: f64,
    /// What the scenario sets up, one line each.
    pub setup: Vec<String>,
    /// Its timeline, as played: `(seconds, what)`.
    pub timeline: Vec<(f64, String)>,
    /// The runs (the design first, then the baseline).
    pub runs: Vec<RunFigures>,
    /// The release gates judged on the datagram-first run; `None` when
    /// the scenario declares none.
    pub gates: Option<Judgement>,
}

impl Report {
    /// The report of `runs` of `s`.
    pub fn new(s: &Scenario, runs: Vec<RunFigures>) -> Report {
        let regions: Vec<String> = s
            .regions
            .iter()
            .map(|r| {
                format!(
                    "{} (clients {} ms RTT, {}; origin {} ms RTT, {})",
                    r.name,
                    r.client_rtt_ms,
                    describe(&r.clients),
                    r.origin_rtt_ms,
                    describe(&r.origin)
                )
            })
            .collect();
        let mut setup = vec![format!(
            "{} s · {} clients in {} room{} · regions: {}",
            s.duration.as_secs_f64(),
            s.client_count(),
            s.rooms.len(),
            if s.rooms.len() == 1 { "" } else { "s" },
            regions.join("; ")
        )];
        if s.regions.len() > 1 {
            setup.push(format!(
                "a client on another region's relay pays {} ms more RTT",
                s.cross_region_rtt_ms
            ));
        }
        let gates = (!s.gates.is_empty()).then(|| {
            match runs.iter().find(|r| r.mode == Mode::DatagramFirst) {
                Some(r) => {
                    Judgement::new(r.mode.label(), &Figures::of(r, s.battles_asked()), &s.gates)
                }
                None => Judgement::not_judged(),
            }
        });
        let timeline = Timeline::new(s)
            .entries()
            .iter()
            .map(|e| (e.at.as_secs_f64(), e.label.clone()))
            .collect();
        Report {
            scenario: s.name.clone(),
            seed: s.seed,
            duration_s: s.duration.as_secs_f64(),
            setup,
            timeline,
            runs,
            gates,
        }
    }

    /// Whether every invariant held in every run.
    pub fn ok(&self) -> bool {
        self.runs.iter().all(RunFigures::ok)
    }

    /// Every violated invariant, as `mode: name: detail`.
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(move |c| format!("{}: {}: {}", r.mode.label(), c.name, c.detail))
            })
            .collect()
    }

    /// Whether every release gate passed (true when there are none, or
    /// when their run was not played).
    pub fn gates_ok(&self) -> bool {
        self.gates.as_ref().is_none_or(|g| g.ok)
    }

    /// Every breached release gate, as `key: measured M, limit ≤ L`.
    pub fn gate_breaches(&self) -> Vec<String> {
        self.gates
            .as_ref()
            .map_or_else(Vec::new, Judgement::breaches)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Ringside testbed · scenario {} · seed {}",
            self.scenario, self.seed
        );
        for l in &self.setup {
            let _ = writeln!(out, "  {l}");
        }
        if !self.timeline.is_empty() {
            let steps: Vec<String> = self
                .timeline
                .iter()
                .map(|(t, what)| format!("{t:.1} s {what}"))
                .collect();
            let _ = writeln!(out, "  timeline: {}", steps.join(" · "));
        }
        out.push('\n');
        let mut t = Table::new(
            self.runs
                .iter()
                .map(|r| r.mode.label().to_owned())
                .collect(),
        );
        t.section("ack latency, ms", "p50 / p99 / p99.9  (n)");
        for (i, (_, label)) in crate::scenario::verdict::analysis::CLASSES
            .iter()
            .enumerate()
        {
            t.row(
                &format!("  {label}"),
                self.runs
                    .iter()
                    .map(|r| r.ack.get(i).map_or("—".into(), class_cell))
                    .collect(),
            );
        }
        t.section("delivery latency, ms", "p50 / p99 / p99.9  (n)");
        t.row(
            "  every event, every client",
            self.runs.iter().map(|r| triple(r.delivery)).collect(),
        );
        for (i, (_, label)) in crate::scenario::verdict::analysis::CLASSES
            .iter()
            .enumerate()
        {
            if self
                .runs
                .iter()
                .all(|r| r.delivery_by_class.get(i).and_then(|c| c.1).is_none())
            {
                continue;
            }
            t.row(
                &format!("  {label} events"),
                self.runs
                    .iter()
                    .map(|r| triple(r.delivery_by_class.get(i).and_then(|c| c.1)))
                    .collect(),
            );
        }
        t.section("timer drift, ms", "");
        t.row(
            "  |clock error| p50 / p99 / max",
            self.runs
                .iter()
                .map(|r| {
                    r.clock_abs.map_or("no battle".into(), |s| {
                        format!("{} / {} / {}", num(s.p50), num(s.p99), num(s.max))
                    })
                })
                .collect(),
        );
        t.row(
            "  countdown zero − ends_at",
            self.runs
                .iter()
                .map(|r| {
                    if r.countdown_errors.is_empty() {
                        return "—".into();
                    }
                    let lo = r.countdown_errors.iter().min().copied().unwrap_or(0);
                    let hi = r.countdown_errors.iter().max().copied().unwrap_or(0);
                    format!(
                        "{} … {}  (n {})",
                        signed(lo),
                        signed(hi),
                        r.countdown_errors.len()
                    )
                })
                .collect(),
        );
        let failures = self.runs.first().map_or(0, |r| r.recoveries.len());
        for i in 0..failures {
            let first = &self.runs[0].recoveries[i];
            t.section(
                &format!(
                    "recovery: {} at {:.1} s",
                    first.label,
                    first.at_us as f64 / 1e6
                ),
                "",
            );
            let get = |r: &RunFigures| r.recoveries.get(i).cloned();
            t.row(
                "  every affected client resumed",
                self.runs
                    .iter()
                    .map(|r| get(r).map_or("—".into(), |x| resumed_cell(&x)))
                    .collect(),
            );
            t.row(
                "  delivery p99 back under pre-failure p99",
                self.runs
                    .iter()
                    .map(|r| get(r).map_or("—".into(), |x| back_cell(&x)))
                    .collect(),
            );
        }
        t.section("context", "");
        t.row(
            "  actions applied / rejected / other",
            self.runs
                .iter()
                .map(|r| {
                    let o = r.outcomes;
                    format!(
                        "{} / {} / {}",
                        o.applied,
                        o.rejected,
                        o.busy + o.failed + o.unresolved
                    )
                })
                .collect(),
        );
        t.row(
            "  client fallbacks / resyncs / moves",
            self.runs
                .iter()
                .map(|r| {
                    let s = r.client_stats;
                    format!("{} / {} / {}", s.fallbacks, s.resyncs, s.moves)
                })
                .collect(),
        );
        t.row(
            "  snapshots received",
            self.runs
                .iter()
                .map(|r| r.client_stats.snapshots.to_string())
                .collect(),
        );
        t.row(
            "  packets through links, dropped",
            self.runs
                .iter()
                .map(|r| {
                    let offered: u64 = r.links.iter().map(|l| l.1).sum();
                    let dropped: u64 = r.links.iter().map(|l| l.2).sum();
                    format!(
                        "{}, {:.2}%",
                        offered,
                        dropped as f64 * 100.0 / offered.max(1) as f64
                    )
                })
                .collect(),
        );
        t.row(
            "  stalls > 20 ms: thread / runtime (max)",
            self.runs.iter().map(stalls_cell).collect(),
        );
        t.row(
            "  run time (setup)",
            self.runs
                .iter()
                .map(|r| format!("{:.1} s ({:.1} s)", r.wall_s, r.setup_s))
                .collect(),
        );
        t.row(
            "  invariants",
            self.runs
                .iter()
                .map(|r| {
                    let bad = r.checks.iter().filter(|c| !c.ok).count();
                    if bad == 0 {
                        format!("✓ all {} hold", r.checks.len())
                    } else {
                        format!("✗ {bad} of {} FAILED", r.checks.len())
                    }
                })
                .collect(),
        );
        out.push_str(&t.render());
        if let Some(g) = &self.gates {
            out.push('\n');
            out.push_str(&gates_table(g));
        }
        for r in &self.runs {
            let _ = writeln!(out, "\ninvariants, {}:", r.mode.label());
            for c in &r.checks {
                let _ = writeln!(
                    out,
                    "  {} {} — {}",
                    if c.ok { "✓" } else { "✗" },
                    c.name,
                    c.detail
                );
            }
            for n in &r.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        out
    }

    /// Every figure, for machines: `report.json`.
    pub fn json(&self) -> String {
        json::render(self)
    }

    /// Writes [`FILES`] into `dir` (created if needed); returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let docs = [
            self.summary(),
            self.json(),
            charts::ack_cdf(&self.scenario, self.seed, &self.runs),
            charts::delivery_over_time(&self.scenario, self.seed, &self.runs),
            charts::timer_drift(&self.scenario, self.seed, &self.runs),
        ];
        let mut paths = Vec::new();
        for (name, doc) in FILES.iter().zip(docs) {
            let p = dir.join(name);
            std::fs::write(&p, doc)?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// The release gates: one row per gate with its figure, limit and verdict.
fn gates_table(g: &Judgement) -> String {
    let Some(run) = g.run else {
        return "release gates: not judged (they judge the datagram-first run, \
                which was not played)\n"
            .into();
    };
    let mut t = Table::new(vec!["measured".into(), "limit".into(), "verdict".into()]);
    t.section(&format!("release gates, {run} run"), "");
    for v in &g.verdicts {
        t.row(
            &format!("  {}", v.gate.key()),
            vec![
                v.measured_text(),
                v.limit_text(),
                if v.pass { "pass" } else { "FAIL" }.into(),
            ],
        );
    }
    let mut out = t.render();
    let failed = g.verdicts.iter().filter(|v| !v.pass).count();
    let _ = writeln!(
        out,
        "  {}",
        if failed == 0 {
            format!("✓ all {} gates pass", g.verdicts.len())
        } else {
            format!("✗ {failed} of {} gates FAILED", g.verdicts.len())
        }
    );
    out
}

fn class_cell(c: &ClassFigures) -> String {
    c.summary.map_or("—".into(), |s| {
        format!(
            "{} / {} / {}  ({})",
            num(s.p50),
            num(s.p99),
            num(s.p999),
            s.count
        )
    })
}

fn triple(s: Option<Summary>) -> String {
    s.map_or("—".into(), |s| {
        format!(
            "{} / {} / {}  ({})",
            num(s.p50),
            num(s.p99),
            num(s.p999),
            s.count
        )
    })
}

fn stalls_cell(r: &RunFigures) -> String {
    let count = |k: StallKind| r.stalls.iter().filter(|s| s.kind == k).count();
    let max = r.stalls.iter().map(|s| s.late_ms).max().unwrap_or(0);
    format!(
        "{} / {}{}",
        count(StallKind::Thread),
        count(StallKind::Runtime),
        if max > 0 {
            format!("  ({max} ms)")
        } else {
            String::new()
        }
    )
}

fn resumed_cell(r: &Recovery) -> String {
    match (r.affected, r.resumed_us) {
        (0, _) => "no client disrupted".into(),
        (n, Some(us)) => {
            let rebuilt = if r.rebuilt > 0 {
                format!(", {} rebuilt", r.rebuilt)
            } else {
                String::new()
            };
            format!("{:.2} s  ({n} clients{rebuilt})", us as f64 / 1e6)
        }
        (n, None) => format!("{} of {n} NOT resumed", r.unresumed),
    }
}

fn back_cell(r: &Recovery) -> String {
    match (r.threshold_us, r.delivery_back_us) {
        (None, _) => "— (too few samples before)".into(),
        (Some(th), back) => {
            let limit = if r.allowance_us > 0 {
                format!("{} + {} path", ms(th), ms(r.allowance_us))
            } else {
                ms(th)
            };
            match back {
                Some(us) => format!("{:.2} s  (< {limit})", us as f64 / 1e6),
                None => format!("not back  (< {limit})"),
            }
        }
    }
}

/// µs as ms with sensible decimals, no unit.
fn num(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn signed(us: i64) -> String {
    let sign = if us < 0 { "−" } else { "+" };
    format!("{sign}{}", num(us.unsigned_abs()))
}

/// A table of a label column and one column per run, in sections.
struct Table {
    heads: Vec<String>,
    rows: Vec<(String, Vec<String>, bool)>,
}

impl Table {
    fn new(heads: Vec<String>) -> Table {
        Table {
            heads,
            rows: Vec::new(),
        }
    }

    fn section(&mut self, title: &str, unit: &str) {
        let cells = if unit.is_empty() {
            Vec::new()
        } else {
            vec![unit.to_owned(); self.heads.len()]
        };
        self.rows.push((title.to_owned(), cells, true));
    }

    fn row(&mut self, label: &str, cells: Vec<String>) {
        self.rows.push((label.to_owned(), cells, false));
    }

    fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let label_w = self
            .rows
            .iter()
            .map(|r| width(&r.0))
            .max()
            .unwrap_or(0)
            .max(10)
            + 2;
        let col_w: Vec<usize> = (0..self.heads.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.1.get(i))
                    .map(|c| width(c))
                    .chain(std::iter::once(width(&self.heads[i])))
                    .max()
                    .unwrap_or(0)
                    + 3
            })
            .collect();
        let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(width(s))));
        let mut out = String::new();
        out.push_str(&pad("", label_w));
        for (h, w) in self.heads.iter().zip(&col_w) {
            out.push_str(&pad(h, *w));
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
        for (label, cells, section) in &self.rows {
            if *section {
                out.push('\n');
            }
            out.push_str(&pad(label, label_w));
            for (i, w) in col_w.iter().enumerate() {
                out.push_str(&pad(cells.get(i).map_or("", String::as_str), *w));
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up() {
        let mut t = Table::new(vec!["a".into(), "bb".into()]);
        t.section("latency", "p50");
        t.row("  gift", vec!["1.00".into(), "22.0".into()]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], format!("{}a      bb", " ".repeat(12)));
        let col = lines[3].find("1.00").expect("cell");
        assert_eq!(lines[2].find("p50"), Some(col));
    }
}
