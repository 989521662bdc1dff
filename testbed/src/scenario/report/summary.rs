//! The terminal summary: the runs side by side in a table, section by
//! section, then the release gates and every invariant.

use std::fmt::Write as _;

use crate::scenario::report::charts::ms;
use crate::scenario::report::contents::Report;
use crate::scenario::report::tail::TailGoal;
use crate::scenario::run::record::StallKind;
use crate::scenario::verdict::analysis::{ClassFigures, Recovery, RunFigures, CLASSES};
use crate::scenario::verdict::gates::Judgement;
use crate::scenario::verdict::stats::Summary;

/// The whole summary of `r`.
pub fn render(r: &Report) -> String {
    let mut out = header(r);
    let mut t = Table::new(r.runs.iter().map(|r| r.mode.label().to_owned()).collect());
    latency_rows(&mut t, &r.runs);
    if let Some(goal) = &r.tail {
        tail_rows(&mut t, goal, &r.runs);
    }
    timer_rows(&mut t, &r.runs);
    recovery_rows(&mut t, &r.runs);
    context_rows(&mut t, &r.runs);
    out.push_str(&t.render());
    if let Some(g) = &r.gates {
        out.push('\n');
        out.push_str(&gates_table(g));
    }
    for run in &r.runs {
        let _ = writeln!(out, "\ninvariants, {}:", run.mode.label());
        for c in &run.checks {
            let _ = writeln!(
                out,
                "  {} {} — {}",
                if c.ok { "✓" } else { "✗" },
                c.name,
                c.detail
            );
        }
        if let Some(c) = &run.cluster {
            let _ = writeln!(out, "cluster, {}:", run.mode.label());
            for l in c.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        for n in &run.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    out
}

/// The scenario: name, seed, setup, timeline.
fn header(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Ringside testbed · scenario {} · seed {}",
        r.scenario, r.seed
    );
    for l in &r.setup {
        let _ = writeln!(out, "  {l}");
    }
    if !r.timeline.is_empty() {
        // Many steps at one time (100 battles at once) print as the first
        // two and a count.
        let mut steps: Vec<String> = Vec::new();
        let mut i = 0;
        while i < r.timeline.len() {
            let t = r.timeline[i].0;
            let same = r.timeline[i..].iter().take_while(|(u, _)| *u == t).count();
            for (_, what) in r.timeline[i..].iter().take(if same > 3 { 2 } else { same }) {
                steps.push(format!("{t:.1} s {what}"));
            }
            if same > 3 {
                steps.push(format!("{t:.1} s {} more like them", same - 2));
            }
            i += same;
        }
        let _ = writeln!(out, "  timeline: {}", steps.join(" · "));
    }
    out.push('\n');
    out
}

/// Ack latency per class, delivery latency overall and per class.
fn latency_rows(t: &mut Table, runs: &[RunFigures]) {
    t.section("ack latency, ms", "p50 / p99 / p99.9  (n)");
    for (i, (_, label)) in CLASSES.iter().enumerate() {
        t.row(
            &format!("  {label}"),
            runs.iter()
                .map(|r| r.ack.get(i).map_or("—".into(), class_cell))
                .collect(),
        );
    }
    t.section("delivery latency, ms", "p50 / p99 / p99.9  (n)");
    t.row(
        "  every event, every client",
        runs.iter().map(|r| triple(r.delivery)).collect(),
    );
    for (i, (_, label)) in CLASSES.iter().enumerate() {
        let of = |r: &RunFigures| r.delivery_by_class.get(i).and_then(|c| c.1);
        if runs.iter().all(|r| of(r).is_none()) {
            continue;
        }
        t.row(
            &format!("  {label} events"),
            runs.iter().map(|r| triple(of(r))).collect(),
        );
    }
}

/// The gift ack tail in round trips, beside its goal.
fn tail_rows(t: &mut Table, goal: &TailGoal, runs: &[RunFigures]) {
    t.section(
        &format!(
            "gift ack tail, × RTT ({} ms: client ↔ relay ↔ origin)",
            num((goal.rtt_ms * 1000.0) as u64)
        ),
        "p99 / p99.9",
    );
    t.row(
        &format!("  goal {}", goal.text()),
        runs.iter()
            .map(|r| goal.judge(r).map_or("—".into(), |x| x.text()))
            .collect(),
    );
}

/// Clock error and countdown error.
fn timer_rows(t: &mut Table, runs: &[RunFigures]) {
    t.section("timer drift, ms", "");
    t.row(
        "  |clock error| p50 / p99 / max",
        runs.iter()
            .map(|r| {
                r.clock_abs.map_or("no battle".into(), |s| {
                    format!("{} / {} / {}", num(s.p50), num(s.p99), num(s.max))
                })
            })
            .collect(),
    );
    t.row(
        "  countdown zero − ends_at",
        runs.iter()
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
}

/// One section per failure of the first run.
fn recovery_rows(t: &mut Table, runs: &[RunFigures]) {
    let Some(first) = runs.first() else { return };
    for (i, f) in first.recoveries.iter().enumerate() {
        t.section(
            &format!("recovery: {} at {:.1} s", f.label, f.at_us as f64 / 1e6),
            "",
        );
        let get = |r: &RunFigures| r.recoveries.get(i).cloned();
        t.row(
            "  every affected client resumed",
            runs.iter()
                .map(|r| get(r).map_or("—".into(), |x| resumed_cell(&x)))
                .collect(),
        );
        t.row(
            "  delivery p99 back under pre-failure p99",
            runs.iter()
                .map(|r| get(r).map_or("—".into(), |x| back_cell(&x)))
                .collect(),
        );
    }
}

/// Outcomes, client counters, links, stalls, run time, invariants.
fn context_rows(t: &mut Table, runs: &[RunFigures]) {
    t.section("context", "");
    let row = |t: &mut Table, label: &str, cell: &dyn Fn(&RunFigures) -> String| {
        t.row(label, runs.iter().map(cell).collect());
    };
    row(t, "  actions applied / rejected / other", &|r| {
        let o = r.outcomes;
        format!(
            "{} / {} / {}",
            o.applied,
            o.rejected,
            o.busy + o.failed + o.unresolved
        )
    });
    row(t, "  client fallbacks / resyncs / moves", &|r| {
        let s = r.client_stats;
        format!("{} / {} / {}", s.fallbacks, s.resyncs, s.moves)
    });
    row(t, "  snapshots received", &|r| {
        r.client_stats.snapshots.to_string()
    });
    row(t, "  packets through links, dropped", &|r| {
        let offered: u64 = r.links.iter().map(|l| l.1).sum();
        let dropped: u64 = r.links.iter().map(|l| l.2).sum();
        format!(
            "{}, {:.2}%",
            offered,
            dropped as f64 * 100.0 / offered.max(1) as f64
        )
    });
    row(t, "  stalls > 20 ms: thread / runtime (max)", &stalls_cell);
    row(t, "  run time (setup)", &|r| {
        format!("{:.1} s ({:.1} s)", r.wall_s, r.setup_s)
    });
    row(t, "  invariants", &|r| {
        let bad = r.checks.iter().filter(|c| !c.ok).count();
        if bad == 0 {
            format!("✓ all {} hold", r.checks.len())
        } else {
            format!("✗ {bad} of {} FAILED", r.checks.len())
        }
    });
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
    triple(c.summary)
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
