//! From the file to the checked scenario: one conversion per section
//! (`[rules]`, `[[region]]`, `[[room]]`, `[[viewers]]`, `[[cohosts]]`,
//! `[[step]]`, `[gates]`), each checking its ranges and resolving its
//! names to indices through [`Refs`], then the checks that span sections
//! (a relay removed once, origin restarts that do not overlap, gates with
//! something to measure). Errors name the section and the key.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{GiftId, RoomId};

use crate::scenario::spec::cluster::{self as cluster_check, ClusterRefs};
use crate::scenario::spec::error::{invalid, ScenarioError};
use crate::scenario::spec::file::{
    CohostsFile, GatesFile, GiftMixFile, RegionFile, RoomFile, RulesFile, ScenarioFile, StepFile,
    ViewersFile,
};
use crate::scenario::spec::gate::{Gate, Limit};
use crate::scenario::spec::types::{
    CohostGroup, GiftChoice, Region, RoomSpec, Rules, Scenario, Step, StepAction, Traffic,
    ViewerGroup,
};

/// Longest scenario accepted, in seconds.
const MAX_DURATION_S: f64 = 600.0;
/// Most clients in one scenario (this runs on one machine).
const MAX_CLIENTS: u32 = 2_000;
/// Most actions per second one simulated client may be asked for.
const MAX_RATE: f64 = 50.0;
/// Longest base RTT accepted, in milliseconds.
const MAX_RTT_MS: f64 = 10_000.0;

/// The whole file, section by section, in the order errors are reported.
pub(super) fn scenario(f: ScenarioFile, default_name: &str) -> Result<Scenario, ScenarioError> {
    let name = f.name.unwrap_or_else(|| default_name.to_owned());
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(invalid(format!(
            "name `{name}`: use letters, digits, `-`, `_` or `.` (it names the output directory)"
        )));
    }
    if !(f.duration_s > 0.0 && f.duration_s <= MAX_DURATION_S) {
        return Err(invalid(format!(
            "duration_s must be in (0, {MAX_DURATION_S}], got {}",
            f.duration_s
        )));
    }
    if !(0.0..=MAX_RTT_MS).contains(&f.cross_region_rtt_ms) {
        return Err(invalid(format!(
            "cross_region_rtt_ms must be in [0, {MAX_RTT_MS}], got {}",
            f.cross_region_rtt_ms
        )));
    }
    let rules = Rules::from(f.rules);
    if rules.seats == 0 && !f.cohosts.is_empty() {
        return Err(invalid("rules.seats is 0 but there are co-hosts"));
    }
    let cluster = f.cluster.map(cluster_check::spec).transpose()?;
    let regions = regions(f.region)?;
    let mut refs = Refs {
        cluster: cluster.as_ref().map(ClusterRefs::of),
        regions: regions.iter().map(|r| r.name.clone()).collect(),
        rooms: Vec::new(),
        viewed: Vec::new(),
        catalogue: rules.catalogue(),
        max_count: origin::rules::Config::default().max_gift_count,
        duration_s: f.duration_s,
    };
    let rooms = rooms(f.room, &refs)?;
    refs.rooms = rooms.iter().map(|r| r.id).collect();
    let viewers = each(f.viewers, |i, v| v.resolve(&format!("viewers[{i}]"), &refs))?;
    let viewers: Vec<ViewerGroup> = viewers.into_iter().flatten().collect();
    refs.viewed = viewers.iter().map(|v| v.room).collect();
    let cohosts = each(f.cohosts, |i, c| c.resolve(&format!("cohosts[{i}]"), &refs))?;
    let steps: Vec<Step> = each(f.step, |i, s| s.resolve(i, &refs))?
        .into_iter()
        .flatten()
        .collect();
    relays(&steps, &regions)?;
    origin_restarts(&steps)?;
    cluster_check::steps(&steps, cluster.as_ref())?;
    let gates = f.gates.resolve(&steps, &viewers, &cohosts)?;

    let s = Scenario {
        name,
        seed: f.seed,
        duration: secs(f.duration_s),
        cross_region_rtt_ms: f.cross_region_rtt_ms,
        rules,
        regions,
        rooms,
        viewers,
        cohosts,
        steps,
        gates,
        cluster,
    };
    if s.client_count() > MAX_CLIENTS {
        return Err(invalid(format!(
            "{} clients is more than this testbed runs on one machine ({MAX_CLIENTS})",
            s.client_count()
        )));
    }
    Ok(s)
}

/// Convert each entry of an array section (`[[viewers]]`, ...) with its
/// index; the first error stops.
fn each<F, T>(
    files: Vec<F>,
    convert: impl Fn(usize, F) -> Result<T, ScenarioError>,
) -> Result<Vec<T>, ScenarioError> {
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| convert(i, f))
        .collect()
}

/// What a section may refer to: region names, room ids, the catalogue.
struct Refs {
    /// The cluster's sizes, when there is one.
    cluster: Option<ClusterRefs>,
    /// Region names, by index.
    regions: Vec<String>,
    /// Room ids (filled once `[[room]]` is checked).
    rooms: Vec<RoomId>,
    /// Rooms that have viewers (filled once `[[viewers]]` is checked).
    viewed: Vec<RoomId>,
    /// The gift catalogue.
    catalogue: BTreeMap<GiftId, u64>,
    /// Most items in one gift action.
    max_count: u32,
    /// The run's length, s.
    duration_s: f64,
}

impl Refs {
    fn region(&self, at: &str, name: &str) -> Result<usize, ScenarioError> {
        self.regions.iter().position(|n| n == name).ok_or_else(|| {
            invalid(format!(
                "{at}: no region named `{name}` (regions: {})",
                self.regions.join(", ")
            ))
        })
    }

    fn room(&self, at: &str, id: u64) -> Result<RoomId, ScenarioError> {
        if self.rooms.iter().any(|r| r.0 == id) {
            return Ok(RoomId(id));
        }
        let ids: Vec<String> = self.rooms.iter().map(|r| r.0.to_string()).collect();
        Err(invalid(format!(
            "{at}: no room with id {id} (rooms: {})",
            ids.join(", ")
        )))
    }

    fn gift(&self, at: &str, gift: u32) -> Result<GiftId, ScenarioError> {
        let g = GiftId(gift);
        if self.catalogue.contains_key(&g) {
            return Ok(g);
        }
        let known: Vec<String> = self.catalogue.keys().map(|g| g.0.to_string()).collect();
        Err(invalid(format!(
            "{at}: gift {gift} is not in the catalogue (gifts: {})",
            known.join(", ")
        )))
    }
}

impl From<RulesFile> for Rules {
    fn from(r: RulesFile) -> Rules {
        let defaults = origin::rules::Config::default();
        Rules {
            pk_grace: ms(r.pk_grace_ms.unwrap_or(1_000)),
            pk_punishment: ms(r.pk_punishment_ms.unwrap_or(1_000)),
            seats: r.seats.unwrap_or(defaults.seats),
            seat_hold: r.seat_hold_ms.map_or(defaults.seat_hold, ms),
            max_stamp_age: r.max_stamp_age_ms.map_or(defaults.max_stamp_age, ms),
        }
    }
}

/// One region on its own; the error says what is wrong, without where.
impl TryFrom<RegionFile> for Region {
    type Error = String;

    fn try_from(r: RegionFile) -> Result<Region, String> {
        for (key, v) in [
            ("client_rtt_ms", r.client_rtt_ms),
            ("origin_rtt_ms", r.origin_rtt_ms),
        ] {
            if !(0.0..=MAX_RTT_MS).contains(&v) {
                return Err(format!("{key} must be in [0, {MAX_RTT_MS}], got {v}"));
            }
        }
        r.clients.validate().map_err(|e| format!("clients: {e}"))?;
        r.origin.validate().map_err(|e| format!("origin: {e}"))?;
        Ok(Region {
            name: r.name,
            client_rtt_ms: r.client_rtt_ms,
            origin_rtt_ms: r.origin_rtt_ms,
            clients: r.clients,
            origin: r.origin,
        })
    }
}

/// `[[region]]`: at least one, names unique.
fn regions(files: Vec<RegionFile>) -> Result<Vec<Region>, ScenarioError> {
    if files.is_empty() {
        return Err(invalid("at least one [[region]] is needed"));
    }
    let mut regions: Vec<Region> = Vec::new();
    for (i, r) in files.into_iter().enumerate() {
        let at = format!("region[{i}] `{}`", r.name);
        if r.name.is_empty() || regions.iter().any(|x| x.name == r.name) {
            return Err(invalid(format!("{at}: names must be unique and not empty")));
        }
        regions.push(Region::try_from(r).map_err(|e| invalid(format!("{at}: {e}")))?);
    }
    Ok(regions)
}

/// `[[room]]`: at least one, ids unique and above 0, hosts in a region.
fn rooms(files: Vec<RoomFile>, refs: &Refs) -> Result<Vec<RoomSpec>, ScenarioError> {
    if files.is_empty() {
        return Err(invalid("at least one [[room]] is needed"));
    }
    let mut rooms: Vec<RoomSpec> = Vec::new();
    for (i, r) in files.iter().enumerate() {
        let at = format!("room[{i}] (id {})", r.id);
        if r.count == 0 || r.count > u64::from(MAX_CLIENTS) {
            return Err(invalid(format!(
                "{at}: count must be in [1, {MAX_CLIENTS}]"
            )));
        }
        let host_region = refs.region(&at, &r.host_region)?;
        for id in r.id..r.id.saturating_add(r.count) {
            if id == 0 || rooms.iter().any(|x| x.id.0 == id) {
                return Err(invalid(format!(
                    "{at}: ids must be unique and above 0 (room {id})"
                )));
            }
            rooms.push(RoomSpec {
                id: RoomId(id),
                host_region,
            });
        }
    }
    Ok(rooms)
}

impl ViewersFile {
    /// The group, once per room of its `room_count`.
    fn resolve(self, at: &str, refs: &Refs) -> Result<Vec<ViewerGroup>, ScenarioError> {
        if self.room_count == 0 {
            return Err(invalid(format!("{at}: room_count must be at least 1")));
        }
        let first = self.one(at, refs)?;
        (0..self.room_count)
            .map(|k| {
                let room = refs.room(at, first.room.0.saturating_add(k))?;
                Ok(ViewerGroup {
                    room,
                    ..first.clone()
                })
            })
            .collect()
    }

    fn one(&self, at: &str, refs: &Refs) -> Result<ViewerGroup, ScenarioError> {
        if self.count == 0 {
            return Err(invalid(format!("{at}: count must be at least 1")));
        }
        for (key, rate) in [
            ("gifts_per_s", self.gifts_per_s),
            ("chats_per_s", self.chats_per_s),
            ("likes_per_s", self.likes_per_s),
        ] {
            if !(0.0..=MAX_RATE).contains(&rate) {
                return Err(invalid(format!(
                    "{at}: {key} must be in [0, {MAX_RATE}], got {rate}"
                )));
            }
        }
        let gift_mix = match &self.gift_mix {
            Some(mix) if mix.is_empty() => {
                return Err(invalid(format!("{at}: gift_mix is empty")));
            }
            Some(mix) => each(mix.iter().collect(), |k, m| {
                m.resolve(&format!("{at}.gift_mix[{k}]"), refs)
            })?,
            None => default_mix(),
        };
        Ok(ViewerGroup {
            room: refs.room(at, self.room)?,
            region: refs.region(at, &self.region)?,
            count: self.count,
            gifts_per_s: self.gifts_per_s,
            gift_mix,
            chats_per_s: self.chats_per_s,
            likes_per_s: self.likes_per_s,
        })
    }
}

impl GiftMixFile {
    fn resolve(&self, at: &str, refs: &Refs) -> Result<GiftChoice, ScenarioError> {
        let max_count = refs.max_count;
        if self.weight == 0 || self.count == 0 || self.count > max_count {
            return Err(invalid(format!(
                "{at}: weight must be at least 1 and count in [1, {max_count}]"
            )));
        }
        Ok(GiftChoice {
            gift: refs.gift(at, self.gift)?,
            weight: self.weight,
            count: self.count,
        })
    }
}

impl CohostsFile {
    fn resolve(self, at: &str, refs: &Refs) -> Result<CohostGroup, ScenarioError> {
        if self.count == 0 {
            return Err(invalid(format!("{at}: count must be at least 1")));
        }
        let fits = |s: f64| s > 0.0 && s <= MAX_DURATION_S;
        if !(fits(self.sit_s) && fits(self.stand_s)) {
            return Err(invalid(format!(
                "{at}: sit_s and stand_s must be in (0, {MAX_DURATION_S}]"
            )));
        }
        Ok(CohostGroup {
            room: refs.room(at, self.room)?,
            region: refs.region(at, &self.region)?,
            count: self.count,
            sit: secs(self.sit_s),
            stand: secs(self.stand_s),
        })
    }
}

impl StepFile {
    /// Step `i`: its time in the run and exactly one action (a `pk` with
    /// `pairs` is that many steps, one battle each).
    fn resolve(self, i: usize, refs: &Refs) -> Result<Vec<Step>, ScenarioError> {
        let at = format!("step[{i}] (at_s = {})", self.at_s);
        let end = refs.duration_s;
        if !(self.at_s >= 0.0 && self.at_s <= end) {
            return Err(invalid(format!(
                "{at}: at_s must be in [0, duration_s = {end}]"
            )));
        }
        let start = self.at_s;
        let fits = |what: &str, len: f64| -> Result<Duration, ScenarioError> {
            if !(len > 0.0 && start + len <= end) {
                return Err(invalid(format!(
                    "{at}: {what} must be above 0 and end by duration_s = {end} (at_s + {what} = {})",
                    start + len
                )));
            }
            Ok(secs(len))
        };
        let pairs = self.pk.as_ref().map_or(1, |p| p.pairs);
        let mut actions = self.actions(&at, refs, &fits)?;
        let action = match actions.len() {
            1 => actions.remove(0),
            0 => {
                return Err(invalid(format!(
                    "{at}: no action; give one of pk, gift_burst, impair, kill_relay, \
                     drain_relay, restart_origin, partition, blackhole, kill_origin_node, \
                     drain_origin_node, partition_origin_node, kill_nats_server"
                )))
            }
            _ => {
                let keys: Vec<&str> = actions.iter().map(StepAction::key).collect();
                return Err(invalid(format!(
                    "{at}: one action per step, got {}",
                    keys.join(" and ")
                )));
            }
        };
        let at_s = secs(start);
        if let StepAction::Traffic(Traffic::Pk {
            rooms,
            duration_secs,
        }) = action
        {
            let lookup = |at: &str, id: u64| refs.room(at, id);
            return cluster_check::pairs(&at, &lookup, rooms, duration_secs, pairs).map(|v| {
                v.into_iter()
                    .map(|action| Step { at: at_s, action })
                    .collect()
            });
        }
        Ok(vec![Step { at: at_s, action }])
    }

    /// Every action the step gives (one, if the file is right), checked.
    fn actions(
        self,
        at: &str,
        refs: &Refs,
        fits: &dyn Fn(&str, f64) -> Result<Duration, ScenarioError>,
    ) -> Result<Vec<StepAction>, ScenarioError> {
        let max_count = refs.max_count;
        let mut actions = Vec::new();
        if let Some(p) = self.pk {
            let a = refs.room(at, p.rooms[0])?;
            let b = refs.room(at, p.rooms[1])?;
            if a == b {
                return Err(invalid(format!("{at}: pk needs two different rooms")));
            }
            fits("pk.duration_s", f64::from(p.duration_s))?;
            actions.push(StepAction::Traffic(Traffic::Pk {
                rooms: [a, b],
                duration_secs: p.duration_s,
            }));
        }
        if let Some(g) = self.gift_burst {
            let room = refs.room(at, g.room)?;
            if !refs.viewed.contains(&room) {
                return Err(invalid(format!(
                    "{at}: gift_burst in room {} needs viewers of that room to send it",
                    g.room
                )));
            }
            if g.gifts == 0 || g.gifts > 100_000 || g.count == 0 || g.count > max_count {
                return Err(invalid(format!(
                    "{at}: gift_burst.gifts must be in [1, 100000] and count in [1, {max_count}]"
                )));
            }
            actions.push(StepAction::Traffic(Traffic::GiftBurst {
                room,
                gifts: g.gifts,
                within: fits("gift_burst.within_s", g.within_s)?,
                gift: refs.gift(at, g.gift)?,
                count: g.count,
            }));
        }
        if let Some(imp) = self.impair {
            imp.profile
                .validate()
                .map_err(|e| invalid(format!("{at}: impair.profile: {e}")))?;
            actions.push(StepAction::Impair {
                region: refs.region(at, &imp.region)?,
                path: imp.path,
                profile: Box::new(imp.profile),
                for_: imp.for_s.map(|d| fits("impair.for_s", d)).transpose()?,
            });
        }
        if let Some(r) = self.kill_relay {
            let region = refs.region(at, &r)?;
            actions.push(StepAction::KillRelay { region });
        }
        if let Some(r) = self.drain_relay {
            let region = refs.region(at, &r)?;
            actions.push(StepAction::DrainRelay { region });
        }
        if let Some(r) = self.restart_origin {
            let down = if r.down_s == 0.0 {
                Duration::ZERO
            } else {
                fits("restart_origin.down_s", r.down_s)?
            };
            actions.push(StepAction::RestartOrigin { down });
        }
        if let Some(o) = self.partition {
            actions.push(StepAction::Partition {
                region: refs.region(at, &o.region)?,
                for_: fits("partition.for_s", o.for_s)?,
            });
        }
        if let Some(o) = self.blackhole {
            actions.push(StepAction::Blackhole {
                region: refs.region(at, &o.region)?,
                for_: fits("blackhole.for_s", o.for_s)?,
            });
        }
        cluster_check::actions(
            cluster_check::ClusterSteps {
                kill_origin_node: self.kill_origin_node,
                drain_origin_node: self.drain_origin_node,
                partition_origin_node: self.partition_origin_node,
                kill_nats_server: self.kill_nats_server,
            },
            at,
            refs.cluster,
            &|at: &str, id: u64| refs.room(at, id),
            fits,
            &mut actions,
        )?;
        Ok(actions)
    }
}

/// A relay is removed (killed or drained) at most once, never the last one
/// standing, and no step touches it afterwards.
fn relays(steps: &[Step], regions: &[Region]) -> Result<(), ScenarioError> {
    let mut order: Vec<&Step> = steps.iter().collect();
    order.sort_by_key(|s| s.at);
    let mut gone: BTreeMap<usize, Duration> = BTreeMap::new();
    for s in order {
        let region = match &s.action {
            StepAction::KillRelay { region }
            | StepAction::DrainRelay { region }
            | StepAction::Partition { region, .. }
            | StepAction::Blackhole { region, .. } => *region,
            _ => continue,
        };
        let name = &regions[region].name;
        if let Some(t) = gone.get(&region) {
            return Err(invalid(format!(
                "{} at {:.1} s: relay {name} is already gone (removed at {:.1} s)",
                s.action.key(),
                s.at.as_secs_f64(),
                t.as_secs_f64()
            )));
        }
        if matches!(
            s.action,
            StepAction::KillRelay { .. } | StepAction::DrainRelay { .. }
        ) {
            if gone.len() + 1 >= regions.len() {
                return Err(invalid(format!(
                    "{} at {:.1} s: relay {name} is the last one standing; its clients would have nowhere to go",
                    s.action.key(),
                    s.at.as_secs_f64()
                )));
            }
            gone.insert(region, s.at);
        }
    }
    Ok(())
}

/// Origin restarts do not overlap.
fn origin_restarts(steps: &[Step]) -> Result<(), ScenarioError> {
    let mut downs: Vec<(Duration, Duration)> = steps
        .iter()
        .filter_map(|s| match s.action {
            StepAction::RestartOrigin { down } => Some((s.at, s.at + down)),
            _ => None,
        })
        .collect();
    downs.sort();
    for w in downs.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(invalid(format!(
                "restart_origin at {:.1} s begins before the one at {:.1} s is back",
                w[1].0.as_secs_f64(),
                w[0].0.as_secs_f64()
            )));
        }
    }
    Ok(())
}

impl GatesFile {
    /// `[gates]`: each limit is a number in its range, and the scenario
    /// makes samples of its figure (a gate on a figure the run cannot
    /// measure would always be breached).
    fn resolve(
        &self,
        steps: &[Step],
        viewers: &[ViewerGroup],
        cohosts: &[CohostGroup],
    ) -> Result<Vec<Limit>, ScenarioError> {
        let has = |f: fn(&StepAction) -> bool| steps.iter().any(|s| f(&s.action));
        let pk = has(|a| matches!(a, StepAction::Traffic(Traffic::Pk { .. })));
        let failure = has(|a| {
            matches!(
                a,
                StepAction::KillRelay { .. }
                    | StepAction::DrainRelay { .. }
                    | StepAction::RestartOrigin { .. }
                    | StepAction::Partition { .. }
                    | StepAction::Blackhole { .. }
            ) || a.is_cluster()
        });
        let node_failure = has(|a| {
            matches!(
                a,
                StepAction::KillOriginNode { .. }
                    | StepAction::DrainOriginNode { .. }
                    | StepAction::PartitionOriginNode { .. }
            )
        });
        let gifts = viewers.iter().any(|v| v.gifts_per_s > 0.0)
            || has(|a| matches!(a, StepAction::Traffic(Traffic::GiftBurst { .. })));
        let chats = viewers.iter().any(|v| v.chats_per_s > 0.0);
        let mut limits = Vec::new();
        for gate in Gate::ALL {
            let Some(value) = self.get(gate) else {
                continue;
            };
            let key = gate.key();
            let ok = match gate {
                Gate::StartSuccessMin => (0.0..=1.0).contains(&value),
                _ => value.is_finite() && value > 0.0,
            };
            if !ok {
                let range = match gate {
                    Gate::StartSuccessMin => "in [0, 1]",
                    _ => "a number above 0",
                };
                return Err(invalid(format!("gates.{key} must be {range}, got {value}")));
            }
            let needs = match gate {
                Gate::GiftAckP99Ms if !gifts => {
                    Some("viewers with gifts_per_s or a gift_burst step")
                }
                Gate::ChatAckP99Ms if !chats => Some("viewers with chats_per_s"),
                Gate::AuthorityAckP99Ms if !pk && cohosts.is_empty() => {
                    Some("a pk step or co-hosts")
                }
                Gate::TimerDriftP99Ms | Gate::StartSuccessMin if !pk => Some("a pk step"),
                Gate::RecoveryP99S if !failure => {
                    Some("a kill_relay, drain_relay, restart_origin, partition or blackhole step")
                }
                Gate::RoomResumeP99S if !node_failure => {
                    Some("a kill_origin_node, drain_origin_node or partition_origin_node step")
                }
                _ => None,
            };
            if let Some(needs) = needs {
                return Err(invalid(format!(
                    "gates.{key}: the scenario measures nothing for it; it needs {needs}"
                )));
            }
            limits.push(Limit { gate, value });
        }
        Ok(limits)
    }
}

/// Roses mostly, some hearts, the odd rocket.
pub(super) fn default_mix() -> Vec<GiftChoice> {
    [(1, 6), (2, 3), (3, 1)]
        .into_iter()
        .map(|(g, w)| GiftChoice {
            gift: GiftId(g),
            weight: w,
            count: 1,
        })
        .collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
