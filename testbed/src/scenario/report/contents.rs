//! What a report holds: the scenario's setup and timeline, each run's
//! figures, and the release gates' verdicts.

use crate::scenario::report::tail::TailGoal;
use crate::scenario::run::paths::describe;
use crate::scenario::run::record::Mode;
use crate::scenario::run::timeline::Timeline;
use crate::scenario::spec::Scenario;
use crate::scenario::verdict::analysis::RunFigures;
use crate::scenario::verdict::gates::{Figures, Judgement};

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
    /// The round trip the gift ack tail is shown in multiples of, and the
    /// goals for it; `None` where they do not apply (see
    /// [`crate::scenario::report::tail`]).
    pub tail: Option<TailGoal>,
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
            tail: TailGoal::of(s),
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
}
