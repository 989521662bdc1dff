//! The timeline: a scenario's steps expanded into instantaneous entries and
//! put in the order they are played.
//!
//! A step with a length becomes two entries: a partition for 3 s is a cut
//! at `at` and a heal at `at + 3 s`; an origin restart is a crash and a
//! start; an impairment `for_s` is a change and a revert. Entries play in
//! time order; entries at the same time play in file order, a step's end
//! before a later step's start (the sort is stable over entries generated
//! step by step).
//!
//! Each entry carries its step's own [`StepAction`] (the type the file is
//! parsed into) and which [`Edge`] of it to play; [`Entry::path_change`]
//! says what it does to the links.
//!
//! Pure: the driver asks [`Timeline::poll_timeout`] when the next entry is
//! due and takes due entries with [`Timeline::poll_due`].

use std::time::Duration;

use crate::scenario::run::paths::{describe, PathChange};
use crate::scenario::spec::{Edge, PathKind, Scenario, Step, StepAction};

/// Whether an entry breaks something, mends it, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A failure: recovery is measured from here.
    Failure,
    /// The end of a failure with a length (heal, origin back, path back).
    Heal,
    /// An impairment change (marked on the charts, no recovery measured).
    Change,
    /// Traffic: a battle or a gift burst.
    Traffic,
}

/// One instantaneous thing to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When, from the start of the run.
    pub at: Duration,
    /// The step (index in the file) it comes from.
    pub step: usize,
    /// Failure, heal, change or traffic.
    pub kind: Kind,
    /// The step's action, as the file gave it.
    pub action: StepAction,
    /// Which end of the step this entry plays.
    pub edge: Edge,
    /// A short description for reports ("relay eu-west killed").
    pub label: String,
}

/// The entries of a scenario in play order, and which have been played.
#[derive(Debug, Clone)]
pub struct Timeline {
    entries: Vec<Entry>,
    next: usize,
}

impl Timeline {
    /// Expand and order a scenario's steps.
    pub fn new(s: &Scenario) -> Timeline {
        let mut entries: Vec<Entry> = s
            .steps
            .iter()
            .enumerate()
            .flat_map(|(step, st)| expand(s, step, st))
            .collect();
        // Stable: equal times keep generation (file) order.
        entries.sort_by_key(|e| e.at);
        Timeline { entries, next: 0 }
    }

    /// Every entry, in play order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// When the next entry is due, if any is left.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.entries.get(self.next).map(|e| e.at)
    }

    /// The entries due at `now` that have not been taken yet, in order.
    pub fn poll_due(&mut self, now: Duration) -> Vec<Entry> {
        let start = self.next;
        while self.entries.get(self.next).is_some_and(|e| e.at <= now) {
            self.next += 1;
        }
        self.entries[start..self.next].to_vec()
    }

    /// Whether every entry has been taken.
    pub fn is_done(&self) -> bool {
        self.next == self.entries.len()
    }
}

impl Entry {
    /// The link change this entry makes, if any.
    pub fn path_change(&self) -> Option<PathChange> {
        PathChange::of(self.step, &self.action, self.edge)
    }
}

/// The entries of step number `step`: its begin, and its end if it has a
/// length.
fn expand(s: &Scenario, step: usize, st: &Step) -> Vec<Entry> {
    let region = |r: &usize| &s.regions[*r].name;
    let entry = |at: Duration, kind: Kind, edge: Edge, label: String| Entry {
        at,
        step,
        kind,
        action: st.action.clone(),
        edge,
        label,
    };
    let begin = |kind: Kind, label: String| entry(st.at, kind, Edge::Begin, label);
    let end =
        |after: Duration, kind: Kind, label: String| entry(st.at + after, kind, Edge::End, label);
    match &st.action {
        StepAction::Traffic(t) => vec![begin(Kind::Traffic, t.label())],
        StepAction::Impair {
            region: r,
            path,
            profile,
            for_,
        } => {
            let what = match path {
                PathKind::Clients => format!("{} clients", region(r)),
                PathKind::Origin => format!("{}-origin", region(r)),
            };
            let mut v = vec![begin(
                Kind::Change,
                format!("{what}: {}", describe(profile)),
            )];
            if let Some(d) = for_ {
                v.push(end(*d, Kind::Change, format!("{what}: back")));
            }
            v
        }
        StepAction::KillRelay { region: r } => {
            vec![begin(Kind::Failure, format!("relay {} killed", region(r)))]
        }
        StepAction::DrainRelay { region: r } => {
            vec![begin(Kind::Failure, format!("relay {} drained", region(r)))]
        }
        StepAction::RestartOrigin { down } => vec![
            begin(Kind::Failure, "origin crashed".into()),
            end(*down, Kind::Heal, "origin restarted".into()),
        ],
        StepAction::Partition { region: r, for_ } => vec![
            begin(
                Kind::Failure,
                format!("relay {} cut from the origin", region(r)),
            ),
            end(
                *for_,
                Kind::Heal,
                format!("relay {} partition healed", region(r)),
            ),
        ],
        StepAction::Blackhole { region: r, for_ } => vec![
            begin(Kind::Failure, format!("region {} blackholed", region(r))),
            end(
                *for_,
                Kind::Heal,
                format!("region {} reachable again", region(r)),
            ),
        ],
        StepAction::KillOriginNode { node } => {
            vec![begin(Kind::Failure, format!("{} killed", node.label()))]
        }
        StepAction::DrainOriginNode { node } => {
            vec![begin(Kind::Failure, format!("{} drained", node.label()))]
        }
        StepAction::PartitionOriginNode { node, for_ } => vec![
            begin(Kind::Failure, format!("{} cut from NATS", node.label())),
            end(
                *for_,
                Kind::Heal,
                format!("{} reaches NATS again", node.label()),
            ),
        ],
        StepAction::KillNatsServer { server } => {
            vec![begin(
                Kind::Failure,
                format!("NATS server n{server} killed"),
            )]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(steps: &str) -> Scenario {
        let text = format!(
            r#"
            duration_s = 30
            [[region]]
            name = "a"
            client_rtt_ms = 10
            [[region]]
            name = "b"
            client_rtt_ms = 10
            [[room]]
            id = 1
            host_region = "a"
            [[room]]
            id = 2
            host_region = "b"
            [[viewers]]
            room = 1
            region = "a"
            count = 1
            {steps}
            "#
        );
        Scenario::from_toml(&text, "t").expect("valid")
    }

    #[test]
    fn steps_expand_and_play_in_time_order() {
        let s = scenario(
            r#"
            [[step]]
            at_s = 10
            partition = { region = "a", for_s = 3 }
            [[step]]
            at_s = 2
            pk = { rooms = [1, 2], duration_s = 5 }
            [[step]]
            at_s = 13
            kill_relay = "b"
            [[step]]
            at_s = 5
            restart_origin = { down_s = 0.5 }
            "#,
        );
        let mut t = Timeline::new(&s);
        let order: Vec<(u128, usize, Kind)> = t
            .entries()
            .iter()
            .map(|e| (e.at.as_millis(), e.step, e.kind))
            .collect();
        assert_eq!(
            order,
            vec![
                (2_000, 1, Kind::Traffic),
                (5_000, 3, Kind::Failure),
                (5_500, 3, Kind::Heal),
                (10_000, 0, Kind::Failure),
                // The heal (step 0) before the kill (step 2): file order.
                (13_000, 0, Kind::Heal),
                (13_000, 2, Kind::Failure),
            ]
        );
        assert_eq!(t.poll_timeout(), Some(Duration::from_secs(2)));
        assert!(t.poll_due(Duration::from_millis(1_999)).is_empty());
        let due = t.poll_due(Duration::from_millis(5_200));
        assert_eq!(due.len(), 2);
        assert!(matches!(
            (&due[1].action, due[1].edge),
            (StepAction::RestartOrigin { .. }, Edge::Begin)
        ));
        assert_eq!(t.poll_timeout(), Some(Duration::from_millis(5_500)));
        let due = t.poll_due(Duration::from_secs(60));
        assert_eq!(due.len(), 4);
        assert_eq!(due[2].label, "relay a partition healed");
        assert!(t.is_done());
        assert_eq!(t.poll_timeout(), None);
        assert!(t.poll_due(Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn an_impairment_for_a_while_reverts() {
        let s = scenario(
            r#"
            [[step]]
            at_s = 4
            impair = { region = "b", path = "origin", for_s = 2, profile = { loss = 0.1 } }
            "#,
        );
        let t = Timeline::new(&s);
        let e = t.entries();
        assert_eq!(e.len(), 2);
        assert!(matches!(
            e[0].path_change(),
            Some(PathChange::Impair {
                step: 0,
                region: 1,
                path: PathKind::Origin,
                ..
            })
        ));
        assert_eq!(e[0].label, "b-origin: loss 10%");
        assert_eq!(e[1].at, Duration::from_secs(6));
        assert_eq!(e[1].path_change(), Some(PathChange::Revert { step: 0 }));
    }
}
