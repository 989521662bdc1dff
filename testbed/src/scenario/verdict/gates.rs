//! Release gates: limits a scenario puts on its own figures (`[gates]` in
//! the file), and the verdict of a run against them. Pure.
//!
//! A gate is a figure the run already measures and a limit: an upper one
//! for latencies ([`Bound::AtMost`]), a lower one for the battle start
//! success rate ([`Bound::AtLeast`]). [`judge`] turns the measured
//! [`Figures`] and the limits into one [`Verdict`] per gate. A gate whose
//! figure the run could not measure (no sample of it) is breached: a
//! release gate that cannot be checked does not pass.

use serde::{Serialize, Serializer};

use crate::scenario::spec::gate::{Bound, Gate, Limit};
use crate::scenario::verdict::analysis::{Recovery, RunFigures};
use crate::scenario::verdict::stats::quantile;

/// The figures gates judge, as one run measured them; `None` when the run
/// has no sample of a figure. [`Figures::recovery_p99_s`] is infinite when
/// the p99 client never resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// See [`Gate::GiftAckP99Ms`].
    pub gift_ack_p99_ms: Option<f64>,
    /// See [`Gate::ChatAckP99Ms`].
    pub chat_ack_p99_ms: Option<f64>,
    /// See [`Gate::AuthorityAckP99Ms`].
    pub authority_ack_p99_ms: Option<f64>,
    /// See [`Gate::DeliveryP99Ms`].
    pub delivery_p99_ms: Option<f64>,
    /// See [`Gate::TimerDriftP99Ms`].
    pub timer_drift_p99_ms: Option<f64>,
    /// See [`Gate::StartSuccessMin`].
    pub start_success: Option<f64>,
    /// See [`Gate::RecoveryP99S`].
    pub recovery_p99_s: Option<f64>,
    /// See [`Gate::RoomResumeP99S`].
    pub room_resume_p99_s: Option<f64>,
}

impl Figures {
    /// The figure a gate judges.
    pub fn get(&self, gate: Gate) -> Option<f64> {
        match gate {
            Gate::GiftAckP99Ms => self.gift_ack_p99_ms,
            Gate::ChatAckP99Ms => self.chat_ack_p99_ms,
            Gate::AuthorityAckP99Ms => self.authority_ack_p99_ms,
            Gate::DeliveryP99Ms => self.delivery_p99_ms,
            Gate::TimerDriftP99Ms => self.timer_drift_p99_ms,
            Gate::StartSuccessMin => self.start_success,
            Gate::RecoveryP99S => self.recovery_p99_s,
            Gate::RoomResumeP99S => self.room_resume_p99_s,
        }
    }

    /// The figures of a run whose timeline asked for `battles_asked`
    /// battles.
    pub fn of(run: &RunFigures, battles_asked: usize) -> Figures {
        let ms = |us: u64| us as f64 / 1000.0;
        let ack = |class| run.class(class).and_then(|c| c.summary).map(|s| ms(s.p99));
        Figures {
            gift_ack_p99_ms: ack(protocol::Class::Gift),
            chat_ack_p99_ms: ack(protocol::Class::Chat),
            authority_ack_p99_ms: ack(protocol::Class::Authority),
            delivery_p99_ms: run.delivery.map(|s| ms(s.p99)),
            timer_drift_p99_ms: run.clock_abs.map(|s| ms(s.p99)),
            start_success: (battles_asked > 0)
                .then(|| run.battles.min(battles_asked) as f64 / battles_asked as f64),
            recovery_p99_s: recovery_p99_s(&run.recoveries),
            room_resume_p99_s: (run.cluster.as_ref()).and_then(|c| c.room_resume_p99_s()),
        }
    }
}

/// p99 over every affected client of every failure of the time from the
/// failure to the client resumed, s; a client never resumed counts as
/// infinitely late. `None` when no failure affected a client.
pub fn recovery_p99_s(recoveries: &[Recovery]) -> Option<f64> {
    let mut samples: Vec<u64> = recoveries
        .iter()
        .flat_map(|r| {
            r.resume_us
                .iter()
                .copied()
                .chain(std::iter::repeat_n(u64::MAX, r.unresumed))
        })
        .collect();
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(match quantile(&samples, 0.99) {
        u64::MAX => f64::INFINITY,
        us => us as f64 / 1e6,
    })
}

/// One gate judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    /// The gate (serialised as its key).
    pub gate: Gate,
    /// Which side of the limit passes.
    pub bound: Bound,
    /// The limit.
    pub limit: f64,
    /// What the run measured: `null` when it has no sample, `"never"` when
    /// infinite (a client never resumed).
    #[serde(serialize_with = "measured_json")]
    pub measured: Option<f64>,
    /// Whether the figure was measured and is on the right side of the limit.
    pub pass: bool,
}

fn measured_json<S: Serializer>(m: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        None => s.serialize_none(),
        Some(v) if v.is_infinite() => s.serialize_str("never"),
        Some(v) => s.serialize_f64(*v),
    }
}

impl Verdict {
    /// The measured figure with its unit, for people.
    pub fn measured_text(&self) -> String {
        match self.measured {
            None => "not measured".into(),
            Some(v) if v.is_infinite() => "never".into(),
            Some(v) => {
                // Three significant digits or so: 121 ms, 62.3 ms, 0.214 s.
                let decimals = match v.abs() {
                    a if a >= 100.0 => 0,
                    a if a >= 10.0 => 1,
                    a if a >= 1.0 => 2,
                    _ => 3,
                };
                unit_after(trim(format!("{v:.decimals$}")), self.gate.unit())
            }
        }
    }

    /// The limit with its side and unit, for people: `≤ 200 ms`.
    pub fn limit_text(&self) -> String {
        format!(
            "{} {}",
            self.bound.symbol(),
            with_unit(self.limit, self.gate.unit())
        )
    }

    /// One line naming the gate, what was measured and the limit.
    pub fn line(&self) -> String {
        format!(
            "{}: measured {}, limit {}",
            self.gate.key(),
            self.measured_text(),
            self.limit_text()
        )
    }
}

fn with_unit(v: f64, unit: &str) -> String {
    // Enough digits for 0.001 ms and for a ratio.
    unit_after(trim(format!("{v:.3}")), unit)
}

/// Without trailing zeros after a decimal point.
fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn unit_after(s: String, unit: &str) -> String {
    if unit.is_empty() {
        s
    } else {
        format!("{s} {unit}")
    }
}

/// The verdict of every limit, in the limits' order.
pub fn judge(figures: &Figures, limits: &[Limit]) -> Vec<Verdict> {
    limits
        .iter()
        .map(|l| {
            let bound = l.gate.bound();
            let measured = figures.get(l.gate);
            let pass = measured.is_some_and(|m| match bound {
                Bound::AtMost => m <= l.value,
                Bound::AtLeast => m >= l.value,
            });
            Verdict {
                gate: l.gate,
                bound,
                limit: l.value,
                measured,
                pass,
            }
        })
        .collect()
}

/// The gates of a report: which run they judged and the verdicts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// The run judged (its mode's label); `None` when the scenario has
    /// gates but that run was not played (`--baseline-only`).
    pub run: Option<&'static str>,
    /// One per gate, in the order [`Gate::ALL`] lists them.
    pub verdicts: Vec<Verdict>,
    /// Whether every gate passed.
    pub ok: bool,
}

impl Judgement {
    /// Judge `figures` of the run labelled `run` against `limits`.
    pub fn new(run: &'static str, figures: &Figures, limits: &[Limit]) -> Judgement {
        let verdicts = judge(figures, limits);
        let ok = verdicts.iter().all(|v| v.pass);
        Judgement {
            run: Some(run),
            verdicts,
            ok,
        }
    }

    /// The gates declared but not judged (their run was not played).
    pub fn not_judged() -> Judgement {
        Judgement {
            run: None,
            verdicts: Vec::new(),
            ok: true,
        }
    }

    /// The breached gates, one line each.
    pub fn breaches(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(Verdict::line)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(gate: Gate, value: f64) -> Limit {
        Limit { gate, value }
    }

    fn figures() -> Figures {
        Figures {
            gift_ack_p99_ms: Some(48.0),
            chat_ack_p99_ms: Some(52.5),
            authority_ack_p99_ms: Some(60.0),
            delivery_p99_ms: Some(80.0),
            timer_drift_p99_ms: Some(3.2),
            start_success: Some(1.0),
            recovery_p99_s: Some(1.4),
            room_resume_p99_s: None,
        }
    }

    #[test]
    fn upper_limits_pass_at_or_under_and_fail_over() {
        let v = judge(
            &figures(),
            &[
                limit(Gate::GiftAckP99Ms, 48.0),
                limit(Gate::DeliveryP99Ms, 79.9),
                limit(Gate::RecoveryP99S, 3.0),
            ],
        );
        assert_eq!(
            v.iter().map(|v| v.pass).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert_eq!(v[1].gate, Gate::DeliveryP99Ms);
        assert_eq!(v[1].measured, Some(80.0));
        assert_eq!(v[1].bound, Bound::AtMost);
    }

    #[test]
    fn the_start_success_rate_is_a_lower_limit() {
        let mut f = figures();
        f.start_success = Some(0.5);
        let v = judge(
            &f,
            &[
                limit(Gate::StartSuccessMin, 0.5),
                limit(Gate::StartSuccessMin, 0.99),
            ],
        );
        assert_eq!((v[0].pass, v[1].pass), (true, false));
        assert_eq!(v[1].bound, Bound::AtLeast);
        assert_eq!(v[1].limit_text(), "≥ 0.99");
    }

    #[test]
    fn a_figure_not_measured_breaches_its_gate() {
        let f = Figures {
            chat_ack_p99_ms: None,
            ..figures()
        };
        let v = judge(&f, &[limit(Gate::ChatAckP99Ms, 1e9)]);
        assert!(!v[0].pass);
        assert_eq!(v[0].measured_text(), "not measured");
        let j = Judgement::new("datagram-first", &f, &[limit(Gate::ChatAckP99Ms, 1e9)]);
        assert!(!j.ok);
        assert_eq!(
            j.breaches(),
            ["chat_ack_p99_ms: measured not measured, limit ≤ 1000000000 ms"]
        );
    }

    #[test]
    fn an_impossible_gate_is_breached_and_named() {
        let j = Judgement::new(
            "datagram-first",
            &figures(),
            &[
                limit(Gate::GiftAckP99Ms, 0.001),
                limit(Gate::TimerDriftP99Ms, 10.0),
            ],
        );
        assert!(!j.ok);
        assert_eq!(
            j.breaches(),
            ["gift_ack_p99_ms: measured 48 ms, limit ≤ 0.001 ms"]
        );
        assert!(Judgement::new("x", &figures(), &[]).ok);
        assert!(Judgement::not_judged().ok);
    }

    #[test]
    fn recovery_counts_each_client_and_a_client_never_resumed_is_never() {
        let rec = |resume_us: Vec<u64>, unresumed: usize| Recovery {
            label: "relay killed".into(),
            at_us: 0,
            heal_us: None,
            window_end_us: 10_000_000,
            affected: resume_us.len() + unresumed,
            rebuilt: 0,
            unresumed,
            resumed_us: None,
            threshold_us: None,
            allowance_us: 0,
            delivery_back_us: None,
            resume_us,
        };
        assert_eq!(recovery_p99_s(&[]), None);
        assert_eq!(recovery_p99_s(&[rec(Vec::new(), 0)]), None);
        // 200 clients over two failures: the p99 is the 198th fastest.
        let fast: Vec<u64> = (1..=100).map(|i| i * 10_000).collect();
        let slow: Vec<u64> = (1..=100).map(|i| 2_000_000 + i * 10_000).collect();
        assert_eq!(
            recovery_p99_s(&[rec(fast.clone(), 0), rec(slow, 0)]),
            Some(2.98)
        );
        // One client in 100 never resumed: still under the p99...
        assert_eq!(recovery_p99_s(&[rec(fast[..99].to_vec(), 1)]), Some(0.99));
        // ...two are over it.
        let never = recovery_p99_s(&[rec(fast[..98].to_vec(), 2)]);
        assert_eq!(never, Some(f64::INFINITY));
        let v = judge(
            &Figures {
                recovery_p99_s: never,
                ..figures()
            },
            &[limit(Gate::RecoveryP99S, 60.0)],
        );
        assert!(!v[0].pass);
        assert_eq!(v[0].measured_text(), "never");
    }

    #[test]
    fn verdicts_serialise_with_their_keys() {
        let v = judge(
            &Figures {
                recovery_p99_s: Some(f64::INFINITY),
                delivery_p99_ms: None,
                ..figures()
            },
            &[
                limit(Gate::StartSuccessMin, 1.0),
                limit(Gate::RecoveryP99S, 2.0),
                limit(Gate::DeliveryP99Ms, 2.0),
            ],
        );
        let json = serde_json::to_value(v).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!([
                {"gate": "start_success_min", "bound": "at_least", "limit": 1.0,
                 "measured": 1.0, "pass": true},
                {"gate": "recovery_p99_s", "bound": "at_most", "limit": 2.0,
                 "measured": "never", "pass": false},
                {"gate": "delivery_p99_ms", "bound": "at_most", "limit": 2.0,
                 "measured": null, "pass": false},
            ])
        );
    }

    #[test]
    fn figures_print_with_about_three_digits() {
        let text = |gate, m| {
            judge(
                &Figures {
                    gift_ack_p99_ms: m,
                    recovery_p99_s: m,
                    start_success: m,
                    ..figures()
                },
                &[limit(gate, 0.001)],
            )[0]
            .measured_text()
        };
        assert_eq!(text(Gate::GiftAckP99Ms, Some(120.82)), "121 ms");
        assert_eq!(text(Gate::GiftAckP99Ms, Some(62.257)), "62.3 ms");
        assert_eq!(text(Gate::GiftAckP99Ms, Some(100.0)), "100 ms");
        assert_eq!(text(Gate::RecoveryP99S, Some(0.2144)), "0.214 s");
        assert_eq!(text(Gate::StartSuccessMin, Some(1.0)), "1");
        assert_eq!(text(Gate::StartSuccessMin, Some(0.5)), "0.5");
    }

    #[test]
    fn keys_are_distinct_and_units_match_their_names() {
        for g in Gate::ALL {
            let k = g.key();
            assert_eq!(Gate::ALL.iter().filter(|x| x.key() == k).count(), 1);
            match g.unit() {
                "" => assert!(k.ends_with("_min"), "{k}"),
                unit => assert!(k.ends_with(&format!("_{unit}")), "{k}"),
            }
        }
    }
}
