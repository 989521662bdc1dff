//! Each figure of the bench beside its goal (issue 11's targets), with the
//! NATS peer's figure beside Ringside's where it has one. Rows whose run
//! was skipped are left out; goals for a smaller audience than the
//! target's are scaled where the figure scales (idle CPU), and said so.

use serde::Serialize;

use super::nats::NatsOutcome;
use super::run::Report;
use super::stats::fmt_us;

/// One figure and its goal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// What is measured.
    pub figure: String,
    /// Ringside's figure, formatted.
    pub value: String,
    /// The peer's figure in the same run, formatted (when it has one).
    pub peer: Option<String>,
    /// The goal.
    pub goal: String,
    /// Whether the goal is met (`None`: no goal to meet, or nothing to
    /// compare with).
    pub met: Option<bool>,
}

fn row(figure: String, value: String, goal: impl Into<String>, met: Option<bool>) -> Target {
    Target {
        figure,
        value,
        peer: None,
        goal: goal.into(),
        met,
    }
}

fn p50_p99(p50: f64, p99: f64) -> String {
    format!("p50 {} p99 {}", fmt_us(p50), fmt_us(p99))
}

/// The targets this report has figures for, in the order.
pub fn targets(r: &Report) -> Vec<Target> {
    let a = &r.audience;
    let nats = match &a.nats {
        Some(NatsOutcome::Ran(n)) => Some(n),
        _ => None,
    };
    let mut out = Vec::new();
    if let Some(f) = a.fanout.first() {
        let shape = format!("{} receivers × {}/s", f.audience, f.rate);
        let o = &f.origin_delivery;
        let mut t = row(
            format!("fan-out, {shape}: origin stamp → client saw it"),
            p50_p99(o.p50_us, o.p99_us),
            match nats {
                Some(_) => "p99 ≤ NATS p99, same run (stretch ≤ 0.5×)".to_string(),
                None => "p99 ≤ NATS p99 (add --peer nats)".to_string(),
            },
            nats.map(|n| o.count > 0 && o.p99_us <= n.delivery.p99_us),
        );
        t.peer = nats.map(|n| {
            format!(
                "{} (publish → subscriber)",
                p50_p99(n.delivery.p50_us, n.delivery.p99_us)
            )
        });
        out.push(t);
        out.push(row(
            format!("fan-out, {shape}: gift sent → client saw it"),
            p50_p99(f.delivery.p50_us, f.delivery.p99_us),
            "shown (includes the origin's rules and WAL fsync)",
            None,
        ));
        if let Some(us) = f.relay_us_per_delivery {
            let mut t = row(
                format!("relay CPU per delivery, {shape}"),
                format!("{us:.2} µs"),
                "≤ 2 µs (≥ 500k deliveries/s per core)",
                Some(us <= 2.0),
            );
            t.peer = nats.map(|n| format!("{:.2} µs (nats-server)", n.server_us_per_delivery));
            out.push(t);
        }
        if let (Some(relay), Some(clients)) = (f.relay_us_per_delivery, f.clients_us_per_delivery) {
            out.push(row(
                format!("load generator CPU per delivery, {shape}"),
                format!("{clients:.2} µs"),
                format!("< the relay's ({relay:.2} µs)"),
                Some(clients < relay),
            ));
        }
    }
    if let Some(b) = &a.bursts {
        let l = &b.last_client;
        out.push(row(
            format!("one gift to {} clients: send → last client", b.audience),
            format!(
                "p50 {} ({} of {} gifts complete)",
                fmt_us(l.p50_us),
                b.complete,
                b.gifts
            ),
            "p50 ≤ 10 ms (1,000 clients)",
            (l.count > 0).then_some(l.p50_us <= 10_000.0),
        ));
    }
    if let Some(m) = &a.memory {
        let marginal = m
            .marginal_kib
            .map(|k| format!("; one more: {k:.1} KiB"))
            .unwrap_or_default();
        out.push(row(
            format!("relay RSS per connected client ({} clients)", m.clients),
            format!("{:.1} KiB{marginal}", m.per_client_kib),
            "≤ 48 KiB (10,000 clients)",
            (m.clients > 0).then_some(m.per_client_kib <= 48.0),
        ));
    }
    if let Some(i) = &a.idle {
        // The goal is for 10,000: a smaller audience gets its share.
        let goal = 0.1 * i.clients as f64 / 10_000.0;
        out.push(row(
            format!("{} idle clients, relay CPU", i.clients),
            format!(
                "{:.3} core ({:.0} UDP datagrams/s sent, machine-wide)",
                i.relay_cores, i.datagrams_per_s
            ),
            if i.clients == 10_000 {
                "≤ 0.1 core for all 10,000".to_string()
            } else {
                format!("≤ 0.1 core for 10,000 (≤ {goal:.4} for {})", i.clients)
            },
            (i.clients > 0).then_some(i.relay_cores <= goal),
        ));
        out.push(row(
            format!("{} idle clients, load generator CPU", i.clients),
            format!("{:.3} core", i.clients_cores),
            format!("< the relay's ({:.3} core)", i.relay_cores),
            Some(i.clients_cores < i.relay_cores),
        ));
    }
    if let Some(t) = ack_row(r) {
        out.push(t);
    }
    out
}

/// The SDK's gift ack beside its floor: two quinn echoes (client ↔ relay,
/// relay ↔ origin) and one fdatasync.
fn ack_row(r: &Report) -> Option<Target> {
    let get = |key: &str| {
        r.rows
            .iter()
            .find(|row| row.key == key && row.summary.count > 0)
    };
    let ack = get("sdk_ack")?;
    let (echo, fsync) = (get("quinn_echo")?, get("fdatasync")?);
    let floor = 2.0 * echo.summary.p50_us + fsync.summary.p50_us;
    let ratio = ack.summary.p50_us / floor.max(0.001);
    // An ack faster than its floor means the probe's fdatasync (a growing
    // file's) cost more than the log's: the floor says nothing then.
    let meaningful = ack.summary.p50_us >= fsync.summary.p50_us;
    Some(row(
        "SDK gift ack (p50 over its floor: 2 quinn echoes + fdatasync)".into(),
        format!(
            "{ratio:.2}× ({}, floor {}; p99 {}){}",
            fmt_us(ack.summary.p50_us),
            fmt_us(floor),
            fmt_us(ack.summary.p99_us),
            if meaningful {
                ""
            } else {
                "; below the probe's fdatasync alone: the floor is not comparable"
            }
        ),
        "p50 ≤ 1.2× the floor (idle machine)",
        meaningful.then_some(ratio <= 1.2),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::audience::AudienceReport;
    use crate::bench::fanout::FanoutReport;
    use crate::bench::nats::NatsReport;
    use crate::bench::stages::IdleReport;
    use crate::bench::stats::Summary;

    fn summary(p50: f64, p99: f64) -> Summary {
        Summary {
            count: 10,
            p50_us: p50,
            p99_us: p99,
            ..Summary::default()
        }
    }

    #[test]
    fn each_figure_is_set_against_its_goal_and_the_peer() {
        let r = Report {
            audience: AudienceReport {
                fanout: vec![FanoutReport {
                    audience: 100,
                    rate: 1000.0,
                    origin_delivery: summary(400.0, 1_200.0),
                    delivery: summary(1_500.0, 5_000.0),
                    relay_us_per_delivery: Some(3.0),
                    clients_us_per_delivery: Some(2.0),
                    ..FanoutReport::default()
                }],
                nats: Some(NatsOutcome::Ran(NatsReport {
                    delivery: summary(500.0, 1_600.0),
                    server_us_per_delivery: 5.0,
                    ..NatsReport::default()
                })),
                idle: Some(IdleReport {
                    clients: 1_000,
                    relay_cores: 0.02,
                    clients_cores: 0.01,
                    ..IdleReport::default()
                }),
                ..AudienceReport::default()
            },
            ..Report::default()
        };
        let t = targets(&r);
        let find = |s: &str| t.iter().find(|t| t.figure.contains(s)).expect(s);
        let fan = find("origin stamp");
        assert_eq!(fan.met, Some(true), "1.2 ms ≤ NATS's 1.6 ms");
        assert!(
            fan.peer.as_deref().is_some_and(|p| p.contains("1.60 ms")),
            "{fan:?}"
        );
        assert_eq!(
            find("relay CPU per delivery").met,
            Some(false),
            "3 µs > 2 µs"
        );
        assert_eq!(find("load generator CPU per delivery").met, Some(true));
        // 1,000 idle clients get a tenth of the 10,000 goal: 0.01 core.
        assert_eq!(find("idle clients, relay").met, Some(false));
        assert!(
            t.iter().all(|t| !t.figure.contains("SDK gift ack")),
            "no ack rows ran"
        );
    }
}
