//! Which impaired links a scenario has, and what each one does at any moment.
//!
//! Links:
//!
//! - **client links**, one per (client region, relay region) pair: the path
//!   from the clients of one region to one relay. Every client of region `c`
//!   reaches relay `r` through link `c -> r`; each client has its own
//!   session on it, but the impairment is per link (a burst hits every
//!   client of the region at once, as on a shared access network). Its base
//!   RTT is the client region's `client_rtt_ms`, plus `cross_region_rtt_ms`
//!   when `c != r`; its impairment is the client region's.
//! - **origin links**, one per region: the path between its relay and the
//!   origin, with the region's `origin_rtt_ms` and `origin` impairment.
//!
//! A link's one-way delay is half its base RTT plus the profile's own
//! `delay_ms`. Blackholes and partitions set `blackhole.always` on top of
//! whatever impairment is in effect, so a change during an outage is kept
//! for when it ends.
//!
//! Pure: [`Paths::handle`] takes a change and says which links now need a
//! new profile; the driver pushes [`Paths::effective`] to them.

use std::collections::BTreeMap;

use crate::impair::{rng, LinkProfile, Profile};

use crate::scenario::spec::{Edge, PathKind, Scenario, StepAction};

/// One link of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkId {
    /// From the clients of region `from` to the relay of region `to`.
    Client {
        /// Client region.
        from: usize,
        /// Relay region.
        to: usize,
    },
    /// Between the relay of `region` and the origin.
    Origin {
        /// The relay's region.
        region: usize,
    },
}

/// A change to the links.
#[derive(Debug, Clone, PartialEq)]
pub enum PathChange {
    /// A region's client paths or origin path get a new impairment.
    Impair {
        /// The step that asks (so that its revert finds what to restore).
        step: usize,
        /// The region.
        region: usize,
        /// Which of its paths.
        path: PathKind,
        /// The new impairment (base RTT not included).
        profile: Box<LinkProfile>,
    },
    /// Put back what `Impair` of `step` replaced.
    Revert {
        /// The step.
        step: usize,
    },
    /// Every path to a region's relay goes dark, or comes back.
    RelayDark {
        /// The relay's region.
        region: usize,
        /// Dark or not.
        dark: bool,
    },
    /// A relay's path to the origin goes dark, or comes back.
    OriginDark {
        /// The relay's region.
        region: usize,
        /// Dark or not.
        dark: bool,
    },
}

impl PathChange {
    /// The link change the `edge` of step number `step` makes, if it
    /// changes links: an impairment and its revert, a partition's or a
    /// blackhole's start and end.
    pub fn of(step: usize, action: &StepAction, edge: Edge) -> Option<PathChange> {
        let begin = edge == Edge::Begin;
        match action {
            StepAction::Impair {
                region,
                path,
                profile,
                ..
            } => Some(if begin {
                PathChange::Impair {
                    step,
                    region: *region,
                    path: *path,
                    profile: profile.clone(),
                }
            } else {
                PathChange::Revert { step }
            }),
            StepAction::Partition { region, .. } => Some(PathChange::OriginDark {
                region: *region,
                dark: begin,
            }),
            StepAction::Blackhole { region, .. } => Some(PathChange::RelayDark {
                region: *region,
                dark: begin,
            }),
            StepAction::Traffic(_)
            | StepAction::KillRelay { .. }
            | StepAction::DrainRelay { .. }
            | StepAction::RestartOrigin { .. }
            | StepAction::KillOriginNode { .. }
            | StepAction::DrainOriginNode { .. }
            | StepAction::PartitionOriginNode { .. }
            | StepAction::KillNatsServer { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
struct RegionPaths {
    name: String,
    client_rtt_ms: f64,
    origin_rtt_ms: f64,
    clients: LinkProfile,
    origin: LinkProfile,
    relay_dark: bool,
    origin_dark: bool,
}

/// Every link's impairment, as the timeline changes it.
#[derive(Debug, Clone)]
pub struct Paths {
    regions: Vec<RegionPaths>,
    cross_rtt_ms: f64,
    /// What each `Impair` step replaced: (region, path, profile before).
    replaced: BTreeMap<usize, (usize, PathKind, LinkProfile)>,
}

impl Paths {
    /// The links of a scenario as its file sets them.
    pub fn new(s: &Scenario) -> Paths {
        Paths {
            regions: s
                .regions
                .iter()
                .map(|r| RegionPaths {
                    name: r.name.clone(),
                    client_rtt_ms: r.client_rtt_ms,
                    origin_rtt_ms: r.origin_rtt_ms,
                    clients: r.clients.clone(),
                    origin: r.origin.clone(),
                    relay_dark: false,
                    origin_dark: false,
                })
                .collect(),
            cross_rtt_ms: s.cross_region_rtt_ms,
            replaced: BTreeMap::new(),
        }
    }

    /// Every link: client links (each client region to each relay), then
    /// origin links.
    pub fn links(&self) -> Vec<LinkId> {
        let n = self.regions.len();
        let mut out = Vec::with_capacity(n * n + n);
        for from in 0..n {
            for to in 0..n {
                out.push(LinkId::Client { from, to });
            }
        }
        out.extend((0..n).map(|region| LinkId::Origin { region }));
        out
    }

    /// A link's name: in reports, and the source of its seed.
    pub fn name(&self, id: LinkId) -> String {
        match id {
            LinkId::Client { from, to } => format!(
                "clients {} -> relay {}",
                self.regions[from].name, self.regions[to].name
            ),
            LinkId::Origin { region } => {
                format!("relay {} -> origin", self.regions[region].name)
            }
        }
    }

    /// The seed of a link's engines: the scenario seed and the link's name,
    /// so the same scenario and seed replay the same decisions on every
    /// link, and adding a region does not change the others'.
    pub fn seed(&self, id: LinkId, scenario_seed: u64) -> u64 {
        rng::derive_seed(scenario_seed, fnv1a(self.name(id).as_bytes()))
    }

    /// What a link does now: base RTT, impairment, outage.
    pub fn effective(&self, id: LinkId) -> LinkProfile {
        let (mut p, rtt, dark) = match id {
            LinkId::Client { from, to } => {
                let c = &self.regions[from];
                let extra = if from == to { 0.0 } else { self.cross_rtt_ms };
                (
                    c.clients.clone(),
                    c.client_rtt_ms + extra,
                    self.regions[to].relay_dark,
                )
            }
            LinkId::Origin { region } => {
                let r = &self.regions[region];
                (r.origin.clone(), r.origin_rtt_ms, r.origin_dark)
            }
        };
        for d in [&mut p.up, &mut p.down] {
            d.delay_ms += rtt / 2.0;
            if dark {
                d.blackhole.always = true;
            }
        }
        p
    }

    /// Apply a change; returns the links whose profile changed.
    pub fn handle(&mut self, change: &PathChange) -> Vec<LinkId> {
        let n = self.regions.len();
        let touched = |region: usize, path: PathKind| -> Vec<LinkId> {
            match path {
                PathKind::Clients => (0..n)
                    .map(|to| LinkId::Client { from: region, to })
                    .collect(),
                PathKind::Origin => vec![LinkId::Origin { region }],
            }
        };
        match change {
            PathChange::Impair {
                step,
                region,
                path,
                profile,
            } => {
                let slot = self.slot(*region, *path);
                let before = std::mem::replace(slot, (**profile).clone());
                self.replaced.insert(*step, (*region, *path, before));
                touched(*region, *path)
            }
            PathChange::Revert { step } => match self.replaced.remove(step) {
                Some((region, path, before)) => {
                    *self.slot(region, path) = before;
                    touched(region, path)
                }
                None => Vec::new(),
            },
            PathChange::RelayDark { region, dark } => {
                self.regions[*region].relay_dark = *dark;
                (0..n)
                    .map(|from| LinkId::Client { from, to: *region })
                    .collect()
            }
            PathChange::OriginDark { region, dark } => {
                self.regions[*region].origin_dark = *dark;
                vec![LinkId::Origin { region: *region }]
            }
        }
    }

    fn slot(&mut self, region: usize, path: PathKind) -> &mut LinkProfile {
        let r = &mut self.regions[region];
        match path {
            PathKind::Clients => &mut r.clients,
            PathKind::Origin => &mut r.origin,
        }
    }
}

/// A one-line summary of what a profile does ("loss 5%, jitter ±10 ms"),
/// naming the direction when the two differ.
pub fn describe(p: &LinkProfile) -> String {
    if p.up == p.down {
        describe_one(&p.up)
    } else {
        format!("up {}; down {}", describe_one(&p.up), describe_one(&p.down))
    }
}

fn describe_one(p: &Profile) -> String {
    let d = Profile::default();
    let mut parts = Vec::new();
    if p.loss > 0.0 {
        parts.push(format!("loss {}%", pct(p.loss)));
    }
    if let Some(ge) = &p.burst {
        parts.push(format!(
            "bursty loss {}% (bursts of {:.1})",
            pct(ge.stationary_loss()),
            1.0 / ge.r.max(1e-9)
        ));
    }
    if p.delay_ms > 0.0 {
        parts.push(format!("+{} ms", p.delay_ms));
    }
    if p.jitter_ms > 0.0 {
        parts.push(format!("jitter {} ms", p.jitter_ms));
    }
    if p.reorder > 0.0 {
        parts.push(format!("reorder {}%", pct(p.reorder)));
    }
    if p.duplicate > 0.0 {
        parts.push(format!("duplicate {}%", pct(p.duplicate)));
    }
    if p.rate_bps > 0 {
        parts.push(format!("{} kbit/s", p.rate_bps / 1000));
    }
    if p.blackhole != d.blackhole {
        parts.push("blackhole".into());
    }
    if parts.is_empty() {
        "clean".into()
    } else {
        parts.join(", ")
    }
}

fn pct(p: f64) -> String {
    let s = format!("{:.2}", p * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// FNV-1a: a stable hash of a name (the std hasher is randomly keyed).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::from_toml(
            r#"
            duration_s = 10
            cross_region_rtt_ms = 60
            [[region]]
            name = "a"
            client_rtt_ms = 40
            origin_rtt_ms = 20
            clients = { loss = 0.05, delay_ms = 1 }
            [[region]]
            name = "b"
            client_rtt_ms = 10
            [[room]]
            id = 1
            host_region = "a"
            "#,
            "t",
        )
        .expect("valid")
    }

    #[test]
    fn base_rtt_is_split_over_both_directions() {
        let p = Paths::new(&scenario());
        assert_eq!(p.links().len(), 6);
        let own = p.effective(LinkId::Client { from: 0, to: 0 });
        assert_eq!((own.up.delay_ms, own.down.delay_ms), (21.0, 21.0));
        assert_eq!(own.up.loss, 0.05);
        // Region a's clients keep their access impairment on b's relay,
        // and pay the cross-region RTT.
        let cross = p.effective(LinkId::Client { from: 0, to: 1 });
        assert_eq!(cross.up.delay_ms, 1.0 + 50.0);
        assert_eq!(cross.up.loss, 0.05);
        let origin = p.effective(LinkId::Origin { region: 0 });
        assert_eq!(origin.down.delay_ms, 10.0);
        assert_eq!(
            p.name(LinkId::Client { from: 0, to: 1 }),
            "clients a -> relay b"
        );
    }

    #[test]
    fn seeds_differ_per_link_and_follow_the_scenario_seed() {
        let p = Paths::new(&scenario());
        let seeds: std::collections::BTreeSet<u64> =
            p.links().into_iter().map(|l| p.seed(l, 7)).collect();
        assert_eq!(seeds.len(), 6);
        let l = LinkId::Origin { region: 1 };
        assert_eq!(p.seed(l, 7), p.seed(l, 7));
        assert_ne!(p.seed(l, 7), p.seed(l, 8));
    }

    #[test]
    fn outages_sit_on_top_of_impairment_changes() {
        let mut p = Paths::new(&scenario());
        let touched = p.handle(&PathChange::RelayDark {
            region: 1,
            dark: true,
        });
        assert_eq!(
            touched,
            vec![
                LinkId::Client { from: 0, to: 1 },
                LinkId::Client { from: 1, to: 1 }
            ]
        );
        assert!(
            p.effective(LinkId::Client { from: 1, to: 1 })
                .up
                .blackhole
                .always
        );
        assert!(
            !p.effective(LinkId::Client { from: 1, to: 0 })
                .up
                .blackhole
                .always
        );
        // A change during the outage is kept for afterwards.
        let change = PathChange::Impair {
            step: 3,
            region: 1,
            path: PathKind::Clients,
            profile: Box::new(LinkProfile::symmetric(Profile {
                loss: 0.2,
                ..Profile::default()
            })),
        };
        assert_eq!(p.handle(&change).len(), 2);
        let l = LinkId::Client { from: 1, to: 1 };
        assert!(p.effective(l).down.blackhole.always);
        p.handle(&PathChange::RelayDark {
            region: 1,
            dark: false,
        });
        assert!(!p.effective(l).down.blackhole.always);
        assert_eq!(p.effective(l).down.loss, 0.2);
        p.handle(&PathChange::Revert { step: 3 });
        assert_eq!(p.effective(l).down.loss, 0.0);
        assert!(p.handle(&PathChange::Revert { step: 3 }).is_empty());
    }

    #[test]
    fn descriptions_are_short() {
        let p = LinkProfile::symmetric(Profile {
            loss: 0.05,
            jitter_ms: 10.0,
            ..Profile::default()
        });
        assert_eq!(describe(&p), "loss 5%, jitter 10 ms");
        assert_eq!(describe(&LinkProfile::default()), "clean");
    }
}
