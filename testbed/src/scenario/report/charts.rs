//! The report's pictures, drawn with [`crate::scenario::report::svg`]: ack latency CDF per
//! class, delivery latency over time with the failures marked, and the
//! distribution of timer drift. Each takes the runs of one scenario (the
//! design and its baseline) and draws them on the same axes. Pure.

use crate::scenario::report::svg::{nice_floor, Anchor, Frame, Scale, Stroke, Svg};
use crate::scenario::run::record::Mode;
use crate::scenario::run::timeline::Kind;
use crate::scenario::verdict::analysis::RunFigures;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 590.0;

/// Colour of each reported class, in [`crate::scenario::verdict::analysis::CLASSES`] order.
const CLASS_COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];

fn mode_color(m: Mode) -> &'static str {
    match m {
        Mode::DatagramFirst => "#1f77b4",
        Mode::StreamOnly => "#ff7f0e",
    }
}

fn mode_dash(m: Mode) -> Option<&'static str> {
    match m {
        Mode::DatagramFirst => None,
        Mode::StreamOnly => Some("7 4"),
    }
}

fn frame(x: Scale, y: Scale) -> Frame {
    Frame {
        left: 80.0,
        top: 70.0,
        width: WIDTH - 110.0,
        height: HEIGHT - 70.0 - 150.0,
        x,
        y,
    }
}

fn heading(svg: &mut Svg, title: &str, subtitle: &str) {
    svg.title(20.0, 28.0, 17.0, title);
    svg.text(20.0, 48.0, 12.0, Anchor::Start, "#444444", subtitle);
}

fn empty(svg: &mut Svg, f: &Frame, why: &str) {
    svg.text(
        f.left + f.width / 2.0,
        f.top + f.height / 2.0,
        14.0,
        Anchor::Middle,
        "#888888",
        why,
    );
}

/// Ack latency CDF per class: x is latency (ms, log), y is the share of
/// acks faster than x on an axis stretched toward the tail, so p99 and
/// p99.9 get as much room as the median.
pub fn ack_cdf(scenario: &str, seed: u64, runs: &[RunFigures]) -> String {
    let mut svg = Svg::new(WIDTH, HEIGHT);
    heading(
        &mut svg,
        &format!("Ack latency CDF by class — scenario {scenario}, seed {seed}"),
        "From the app's call to the authoritative outcome. Solid: datagram-first; dashed: stream-only (baseline).",
    );
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    let mut most = 0usize;
    for r in runs {
        for c in &r.ack {
            if let Some(s) = c.summary {
                lo = lo.min(s.min as f64 / 1000.0);
                hi = hi.max(s.max as f64 / 1000.0);
                most = most.max(s.count);
            }
        }
    }
    let decades = ((most.max(1) as f64).log10().ceil() as u32).clamp(2, 4);
    let (lo, hi) = if lo.is_finite() {
        let lo = nice_floor(lo.max(0.01));
        (lo, (hi * 1.2).max(lo * 10.0))
    } else {
        (1.0, 1000.0)
    };
    let f = frame(Scale::Log { min: lo, max: hi }, Scale::Tail { decades });
    f.axes(
        &mut svg,
        "ack latency (ms, log scale)",
        "acks faster than this",
    );
    if most == 0 {
        empty(&mut svg, &f, "no acks recorded");
        return svg.finish();
    }
    let mut legend = Vec::new();
    for r in runs {
        for (i, c) in r.ack.iter().enumerate() {
            let Some(s) = c.summary else { continue };
            let mut stroke = Stroke::solid(CLASS_COLORS[i % CLASS_COLORS.len()], 2.0);
            if let Some(d) = mode_dash(r.mode) {
                stroke = stroke.dashed(d);
            }
            let pts: Vec<(f64, f64)> = c
                .cdf
                .iter()
                .map(|&(v, q)| (f.px(v as f64 / 1000.0), f.py(q)))
                .collect();
            svg.polyline(&pts, stroke);
            legend.push((
                format!(
                    "{} {} (n={}, p99 {})",
                    c.label,
                    r.mode.label(),
                    s.count,
                    ms(s.p99)
                ),
                stroke,
            ));
        }
    }
    f.legend(&mut svg, &legend);
    svg.finish()
}

/// Delivery latency over time: p99 (thick) and p50 (thin) of every event
/// delivery in each 500 ms, per run, with the timeline's failures (red),
/// heals (grey) and impairment changes (olive) marked.
pub fn delivery_over_time(scenario: &str, seed: u64, runs: &[RunFigures]) -> String {
    let mut svg = Svg::new(WIDTH, HEIGHT);
    heading(
        &mut svg,
        &format!("Event delivery latency over time — scenario {scenario}, seed {seed}"),
        "Origin time of the event to its arrival at each client, per 500 ms. Thick: p99; thin: p50. Red lines: failures; grey: heals.",
    );
    let mut lo = f64::INFINITY;
    let mut hi: f64 = 0.0;
    let mut end_s: f64 = 1.0;
    for r in runs {
        end_s = end_s.max(r.duration_us as f64 / 1e6);
        for b in r.delivery_series.iter().filter(|b| b.count > 0) {
            lo = lo.min(b.p50 as f64 / 1000.0);
            hi = hi.max(b.p99 as f64 / 1000.0);
            end_s = end_s
                .max((b.start_ms + crate::scenario::verdict::analysis::BUCKET_MS) as f64 / 1000.0);
        }
    }
    let (lo, hi) = if lo.is_finite() {
        let lo = nice_floor(lo.max(0.01));
        (lo, (hi * 1.5).max(lo * 10.0))
    } else {
        (1.0, 1000.0)
    };
    let f = frame(
        Scale::Linear {
            min: 0.0,
            max: end_s,
        },
        Scale::Log { min: lo, max: hi },
    );
    f.axes(
        &mut svg,
        "time since the start of the run (s)",
        "delivery latency (ms, log)",
    );
    // Markers from the first run (the timeline is the same in both).
    if let Some(r) = runs.first() {
        for (row, m) in r
            .markers
            .iter()
            .filter(|m| m.kind != Kind::Traffic)
            .enumerate()
        {
            let x = f.px(m.t_us as f64 / 1e6);
            let stroke = match m.kind {
                Kind::Failure => Stroke::solid("#d62728", 1.5),
                Kind::Heal => Stroke::solid("#7f7f7f", 1.2).dashed("5 3"),
                _ => Stroke::solid("#8c8c00", 1.2).dashed("2 3"),
            };
            svg.line(x, f.top, x, f.bottom(), stroke);
            svg.text(
                x + 3.0,
                f.top + 12.0 + 12.0 * (row % 4) as f64,
                10.0,
                Anchor::Start,
                stroke.color,
                &m.label,
            );
        }
    }
    let mut legend = Vec::new();
    // Stalls of this machine or runtime: latency then is inflated by them.
    let stall = Stroke::solid("#444444", 2.0);
    let mut stalls = 0;
    for r in runs {
        for st in &r.stalls {
            let x = f.px(f64::from(st.t_ms) / 1000.0);
            svg.line(x, f.bottom() - 10.0, x, f.bottom(), stall);
            stalls += 1;
        }
    }
    let bucket_s = crate::scenario::verdict::analysis::BUCKET_MS as f64 / 1000.0;
    for r in runs {
        let color = mode_color(r.mode);
        for (pick, stroke, name) in [
            (
                true,
                Stroke::solid(color, 2.2),
                format!("{} p99", r.mode.label()),
            ),
            (
                false,
                Stroke::solid(color, 1.0).faded(0.7),
                format!("{} p50", r.mode.label()),
            ),
        ] {
            // A gap in the data breaks the line.
            let mut segment: Vec<(f64, f64)> = Vec::new();
            for b in &r.delivery_series {
                if b.count == 0 {
                    svg.polyline(&segment, stroke);
                    segment.clear();
                    continue;
                }
                let v = if pick { b.p99 } else { b.p50 };
                let t = b.start_ms as f64 / 1000.0 + bucket_s / 2.0;
                segment.push((f.px(t), f.py(v as f64 / 1000.0)));
            }
            svg.polyline(&segment, stroke);
            legend.push((name, stroke));
        }
    }
    if stalls > 0 {
        legend.push(("machine or runtime stall > 20 ms".into(), stall));
    }
    if runs.iter().all(|r| r.delivery.is_none()) {
        empty(&mut svg, &f, "no event deliveries recorded");
    }
    f.legend(&mut svg, &legend);
    svg.finish()
}

/// Timer drift: the distribution of each battle-room client's clock error
/// (its estimate of origin time minus the origin's clock), as a share of
/// readings per bin, runs overlaid; below the axis, one tick per client per
/// battle where its countdown reached zero, relative to `ends_at`.
pub fn timer_drift(scenario: &str, seed: u64, runs: &[RunFigures]) -> String {
    let mut svg = Svg::new(WIDTH, HEIGHT);
    heading(
        &mut svg,
        &format!("Timer drift — scenario {scenario}, seed {seed}"),
        "Client clock estimate − origin clock, read every 500 ms during battles. Ticks under the axis: where each countdown hit zero vs ends_at.",
    );
    let mut values: Vec<i64> = Vec::new();
    for r in runs {
        values.extend(&r.clock_errors);
        values.extend(&r.countdown_errors);
    }
    if values.is_empty() {
        let f = frame(
            Scale::Linear {
                min: -1.0,
                max: 1.0,
            },
            Scale::Linear {
                min: 0.0,
                max: 100.0,
            },
        );
        f.axes(&mut svg, "clock error (ms)", "share of readings (%)");
        empty(&mut svg, &f, "no battle in this run: no timer to measure");
        return svg.finish();
    }
    const BINS: usize = 40;
    let reach = crate::scenario::verdict::stats::Histogram::centred(&values, BINS);
    let lo = reach.lo as f64 / 1000.0;
    let width_ms = reach.width as f64 / 1000.0;
    let hi = lo + width_ms * BINS as f64;
    let hists: Vec<(Mode, crate::scenario::verdict::stats::Histogram)> = runs
        .iter()
        .map(|r| {
            (
                r.mode,
                crate::scenario::verdict::stats::Histogram::new(
                    &r.clock_errors,
                    reach.lo,
                    reach.lo + reach.width * BINS as i64,
                    BINS,
                ),
            )
        })
        .collect();
    let top = hists
        .iter()
        .flat_map(|(_, h)| {
            let total = h.total().max(1) as f64;
            h.counts.iter().map(move |c| *c as f64 * 100.0 / total)
        })
        .fold(1.0f64, f64::max);
    let f = frame(
        Scale::Linear { min: lo, max: hi },
        Scale::Linear {
            min: 0.0,
            max: top * 1.1,
        },
    );
    f.axes(
        &mut svg,
        "error (ms): positive = client clock ahead / countdown late",
        "share of readings (%)",
    );
    let mut legend = Vec::new();
    for (k, (mode, h)) in hists.iter().enumerate() {
        let color = mode_color(*mode);
        let total = h.total().max(1) as f64;
        let bar = f.width / BINS as f64;
        let runs_n = hists.len().max(1) as f64;
        for (i, c) in h.counts.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let x = f.px(lo + width_ms * i as f64) + bar * k as f64 / runs_n;
            let y = f.py(*c as f64 * 100.0 / total);
            svg.rect(x, y, bar / runs_n - 1.0, f.bottom() - y, color, 0.75);
        }
        let r = &runs[k];
        let clock = r
            .clock_abs
            .map_or("no readings".into(), |s| format!("|err| p99 {}", ms(s.p99)));
        legend.push((
            format!("{} clock ({} readings, {clock})", mode.label(), h.total()),
            Stroke::solid(color, 6.0).faded(0.75),
        ));
        // Countdown ticks, one row per run.
        let y0 = f.bottom() + 22.0 + 9.0 * k as f64;
        for e in &r.countdown_errors {
            let x = f.px(*e as f64 / 1000.0);
            svg.line(x, y0, x, y0 + 7.0, Stroke::solid(color, 1.0));
        }
        if let Some(s) = r.countdown_abs {
            legend.push((
                format!(
                    "{} countdown zero vs ends_at (n={}, |err| p99 {})",
                    mode.label(),
                    s.count,
                    ms(s.p99)
                ),
                Stroke::solid(color, 1.0),
            ));
        }
    }
    f.legend(&mut svg, &legend);
    svg.finish()
}

/// Milliseconds from µs, with a sensible number of decimals.
pub fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::report::svg::well_formed;
    use crate::scenario::run::record::Marker;
    use crate::scenario::verdict::analysis::{ClassFigures, Outcomes, RunFigures, CLASSES};
    use crate::scenario::verdict::stats::{buckets, cdf, Summary};

    fn figures(mode: Mode, scale: u64) -> RunFigures {
        let mut lat: Vec<u64> = (1..=2_000).map(|i| 20_000 + i * 10 * scale).collect();
        lat.sort_unstable();
        let ack = CLASSES
            .iter()
            .map(|&(class, label)| ClassFigures {
                class,
                label,
                summary: Summary::of_sorted(&lat),
                cdf: cdf(&lat, 200),
            })
            .collect();
        let series: Vec<(u64, u64)> = (0..10_000).map(|t| (t, 30_000 + (t % 7) * 1_000)).collect();
        RunFigures {
            mode,
            clients: 10,
            wall_s: 12.0,
            setup_s: 1.0,
            duration_us: 10_000_000,
            ack,
            outcomes: Outcomes::default(),
            delivery: Summary::of(&mut series.iter().map(|s| s.1).collect::<Vec<_>>()),
            delivery_by_class: Vec::new(),
            delivery_series: buckets(&series, 500, 10_000),
            lagged: 0,
            clock_errors: (-50..50).map(|e| e * 20 * scale as i64).collect(),
            clock_abs: Summary::of(&mut (0..50).map(|e| e * 20).collect::<Vec<_>>()),
            countdown_errors: vec![-300, 0, 250],
            countdown_abs: Summary::of(&mut [300, 0, 250]),
            countdown_missing: 0,
            battles: 1,
            recoveries: Vec::new(),
            stalls: Vec::new(),
            markers: vec![
                Marker {
                    t_us: 4_000_000,
                    step: 0,
                    kind: Kind::Failure,
                    label: "relay a killed".into(),
                    extra_path_us: 0,
                },
                Marker {
                    t_us: 6_000_000,
                    step: 1,
                    kind: Kind::Heal,
                    label: "a & b <back>".into(),
                    extra_path_us: 0,
                },
            ],
            client_stats: client_sdk::Stats::default(),
            per_client: Vec::new(),
            links: Vec::new(),
            link_stats: Vec::new(),
            origin_estimate_steps: Vec::new(),
            cluster: None,
            checks: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_charts_are_well_formed_and_complete() {
        let runs = [
            figures(Mode::DatagramFirst, 1),
            figures(Mode::StreamOnly, 3),
        ];
        let cdf = ack_cdf("lossy", 42, &runs);
        well_formed(&cdf).expect("CDF is well-formed");
        assert!(cdf.contains("seed 42") && cdf.contains("lossy"));
        // Four classes × two runs, one line each.
        assert_eq!(cdf.matches("<polyline").count(), 8);
        assert_eq!(
            cdf.matches("stroke-dasharray=\"7 4\"").count(),
            4 + 4,
            "lines + legend"
        );

        let over_time = delivery_over_time("lossy", 42, &runs);
        well_formed(&over_time).expect("delivery chart is well-formed");
        assert!(over_time.contains("relay a killed"));
        assert!(over_time.contains("a &amp; b &lt;back&gt;"));
        assert_eq!(
            over_time.matches("<polyline").count(),
            4,
            "p50 and p99 per run"
        );
        assert!(over_time.contains("stroke=\"#d62728\""), "the failure line");

        let drift = timer_drift("lossy", 42, &runs);
        well_formed(&drift).expect("drift chart is well-formed");
        assert!(drift.matches("<rect").count() > 40, "bars");
        assert!(drift.contains("countdown zero vs ends_at"));
    }

    #[test]
    fn empty_runs_still_draw() {
        let mut r = figures(Mode::DatagramFirst, 1);
        r.clock_errors.clear();
        r.countdown_errors.clear();
        for c in &mut r.ack {
            c.summary = None;
            c.cdf.clear();
        }
        r.delivery_series.clear();
        r.delivery = None;
        let runs = [r];
        for doc in [
            ack_cdf("x", 1, &runs),
            delivery_over_time("x", 1, &runs),
            timer_drift("x", 1, &runs),
        ] {
            well_formed(&doc).expect("well-formed");
        }
        assert!(timer_drift("x", 1, &runs).contains("no battle"));
    }
}
