//! The scenario file: what a scenario says, parsed and checked.
//!
//! Two steps ("parse, don't validate"): serde reads the TOML into `*File`
//! structs that mirror the text exactly (an unknown key is an error naming
//! it), then [`Scenario::from_toml`] checks every range and cross-reference
//! and builds a [`Scenario`] whose fields can be trusted: regions and rooms
//! exist, times fall inside the run, a relay is not killed twice, gifts are
//! in the catalogue. Pure code: no IO apart from [`Scenario::load`] reading
//! the file.
//!
//! The format is documented key by key in `testbed/README.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::Figment;
use protocol::{GiftId, RoomId};
use serde::Deserialize;

use crate::impair::LinkProfile;
use crate::scenario::verdict::gates::{Gate, Limit};

/// Longest scenario accepted, in seconds.
const MAX_DURATION_S: f64 = 600.0;
/// Most clients in one scenario (this runs on one machine).
const MAX_CLIENTS: u32 = 2_000;
/// Most actions per second one simulated client may be asked for.
const MAX_RATE: f64 = 50.0;
/// Longest base RTT accepted, in milliseconds.
const MAX_RTT_MS: f64 = 10_000.0;

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The TOML does not have the scenario's shape (a typo, a wrong type).
    #[error("{0}")]
    Parse(Box<figment::Error>),
    /// The TOML parsed but says something impossible.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------
// The file, exactly as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    #[serde(default = "one_u64")]
    seed: u64,
    duration_s: f64,
    #[serde(default)]
    cross_region_rtt_ms: f64,
    #[serde(default)]
    rules: RulesFile,
    #[serde(default)]
    region: Vec<RegionFile>,
    #[serde(default)]
    room: Vec<RoomFile>,
    #[serde(default)]
    viewers: Vec<ViewersFile>,
    #[serde(default)]
    cohosts: Vec<CohostsFile>,
    #[serde(default)]
    step: Vec<StepFile>,
    #[serde(default)]
    gates: GatesFile,
}

fn one_u64() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RulesFile {
    pk_grace_ms: Option<u64>,
    pk_punishment_ms: Option<u64>,
    seats: Option<u8>,
    seat_hold_ms: Option<u64>,
    max_stamp_age_ms: Option<u64>,
}

/// `[gates]`: one optional key per [`Gate`] (see [`Gate::key`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GatesFile {
    gift_ack_p99_ms: Option<f64>,
    chat_ack_p99_ms: Option<f64>,
    authority_ack_p99_ms: Option<f64>,
    delivery_p99_ms: Option<f64>,
    timer_drift_p99_ms: Option<f64>,
    start_success_min: Option<f64>,
    recovery_p99_s: Option<f64>,
}

impl GatesFile {
    fn get(&self, gate: Gate) -> Option<f64> {
        match gate {
            Gate::GiftAckP99Ms => self.gift_ack_p99_ms,
            Gate::ChatAckP99Ms => self.chat_ack_p99_ms,
            Gate::AuthorityAckP99Ms => self.authority_ack_p99_ms,
            Gate::DeliveryP99Ms => self.delivery_p99_ms,
            Gate::TimerDriftP99Ms => self.timer_drift_p99_ms,
            Gate::StartSuccessMin => self.start_success_min,
            Gate::RecoveryP99S => self.recovery_p99_s,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    name: String,
    client_rtt_ms: f64,
    #[serde(default)]
    origin_rtt_ms: f64,
    #[serde(default)]
    clients: LinkProfile,
    #[serde(default)]
    origin: LinkProfile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomFile {
    id: u64,
    host_region: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewersFile {
    room: u64,
    region: String,
    count: u32,
    #[serde(default)]
    gifts_per_s: f64,
    gift_mix: Option<Vec<GiftMixFile>>,
    #[serde(default)]
    chats_per_s: f64,
    #[serde(default)]
    likes_per_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GiftMixFile {
    gift: u32,
    #[serde(default = "one_u32")]
    weight: u32,
    #[serde(default = "one_u32")]
    count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CohostsFile {
    room: u64,
    region: String,
    count: u32,
    #[serde(default = "default_sit")]
    sit_s: f64,
    #[serde(default = "default_stand")]
    stand_s: f64,
}

fn default_sit() -> f64 {
    5.0
}
fn default_stand() -> f64 {
    2.0
}

/// One `[[step]]`: a time and exactly one of the actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    at_s: f64,
    pk: Option<PkFile>,
    gift_burst: Option<GiftBurstFile>,
    impair: Option<ImpairFile>,
    kill_relay: Option<String>,
    drain_relay: Option<String>,
    restart_origin: Option<RestartFile>,
    partition: Option<OutageFile>,
    blackhole: Option<OutageFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PkFile {
    rooms: [u64; 2],
    duration_s: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GiftBurstFile {
    room: u64,
    gifts: u32,
    #[serde(default = "one_f64")]
    within_s: f64,
    #[serde(default = "one_u32")]
    gift: u32,
    #[serde(default = "one_u32")]
    count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImpairFile {
    region: String,
    path: PathKind,
    #[serde(default)]
    profile: LinkProfile,
    for_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartFile {
    #[serde(default = "one_f64")]
    down_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageFile {
    region: String,
    for_s: f64,
}

// ---------------------------------------------------------------------------
// The checked scenario.

/// A checked scenario: everything a run needs, cross-references resolved to
/// indices.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name: in reports, file names and the default output directory.
    pub name: String,
    /// Seed of every random decision (impairments and client behaviour).
    pub seed: u64,
    /// How long clients act; the timeline runs inside it.
    pub duration: Duration,
    /// Extra round trip when a client uses another region's relay, ms.
    pub cross_region_rtt_ms: f64,
    /// The origin's room rules.
    pub rules: Rules,
    /// Regions, one relay each; indices are region ids.
    pub regions: Vec<Region>,
    /// Rooms, each with a host.
    pub rooms: Vec<RoomSpec>,
    /// Groups of viewers (who may gift, chat and like).
    pub viewers: Vec<ViewerGroup>,
    /// Groups of co-hosts (who take seats and leave them).
    pub cohosts: Vec<CohostGroup>,
    /// The timeline, in file order (see [`crate::scenario::run::timeline`] for play order).
    pub steps: Vec<Step>,
    /// Release gates (`[gates]`), in [`Gate::ALL`] order; empty when none.
    pub gates: Vec<Limit>,
}

/// The rule knobs a scenario may change; everything else is the origin's
/// default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Settlement grace after a battle's bell.
    pub pk_grace: Duration,
    /// Punishment phase after settlement.
    pub pk_punishment: Duration,
    /// Co-host seats per room.
    pub seats: u8,
    /// How long a disconnected guest's seat is held.
    pub seat_hold: Duration,
    /// Oldest sender stamp the origin trusts.
    pub max_stamp_age: Duration,
}

impl Rules {
    /// The origin's rules configuration for this scenario.
    pub fn origin_config(&self) -> origin::rules::Config {
        origin::rules::Config {
            pk_min_duration: Duration::from_secs(1),
            pk_grace: self.pk_grace,
            pk_punishment: self.pk_punishment,
            seats: self.seats,
            seat_hold: self.seat_hold,
            max_stamp_age: self.max_stamp_age,
            ..origin::rules::Config::default()
        }
    }

    /// The gift catalogue (id → value of one item).
    pub fn catalogue(&self) -> BTreeMap<GiftId, u64> {
        origin::rules::default_catalogue()
    }
}

/// A region: one relay, its clients' path to it and its path to the origin.
#[derive(Debug, Clone)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Base round trip between its clients and its relay, ms.
    pub client_rtt_ms: f64,
    /// Base round trip between its relay and the origin, ms.
    pub origin_rtt_ms: f64,
    /// Impairment of its clients' paths (on top of the base RTT).
    pub clients: LinkProfile,
    /// Impairment of its relay's path to the origin (on top of the base RTT).
    pub origin: LinkProfile,
}

/// A room and where its host is.
#[derive(Debug, Clone)]
pub struct RoomSpec {
    /// The room.
    pub id: RoomId,
    /// Region of the host's client.
    pub host_region: usize,
}

/// One gift of a viewer group's mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftChoice {
    /// Catalogue item.
    pub gift: GiftId,
    /// Relative weight in the mix.
    pub weight: u32,
    /// Items per gift action.
    pub count: u32,
}

/// A group of viewers of one room in one region.
#[derive(Debug, Clone)]
pub struct ViewerGroup {
    /// The room they watch.
    pub room: RoomId,
    /// Where they connect from.
    pub region: usize,
    /// How many.
    pub count: u32,
    /// Gift actions per second, per viewer (Poisson).
    pub gifts_per_s: f64,
    /// What they gift.
    pub gift_mix: Vec<GiftChoice>,
    /// Chat messages per second, per viewer (Poisson).
    pub chats_per_s: f64,
    /// Like actions per second, per viewer (Poisson).
    pub likes_per_s: f64,
}

/// A group of co-hosts: they take a free seat, sit, leave, and start again.
#[derive(Debug, Clone)]
pub struct CohostGroup {
    /// The room.
    pub room: RoomId,
    /// Where they connect from.
    pub region: usize,
    /// How many.
    pub count: u32,
    /// Mean time seated.
    pub sit: Duration,
    /// Mean time between leaving and trying again.
    pub stand: Duration,
}

/// Which path of a region an `impair` step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// The paths of the region's clients (to every relay).
    Clients,
    /// The path between the region's relay and the origin.
    Origin,
}

/// One timeline step.
#[derive(Debug, Clone)]
pub struct Step {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: StepAction,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepAction {
    /// A battle or a gift burst (played as it is by the timeline).
    Traffic(Traffic),
    /// Replace a path's impairment (the base RTT stays), for a while or
    /// for good.
    Impair {
        /// The region.
        region: usize,
        /// Its clients' paths or its relay's path to the origin.
        path: PathKind,
        /// The new impairment.
        profile: Box<LinkProfile>,
        /// Put back the previous impairment after this long.
        for_: Option<Duration>,
    },
    /// Crash a relay (no goodbye; clients notice by their idle timeout).
    KillRelay {
        /// Its region.
        region: usize,
    },
    /// Drain a relay: its clients are told to move, then it stops.
    DrainRelay {
        /// Its region.
        region: usize,
    },
    /// Crash the origin and start it again from its log after `down`.
    RestartOrigin {
        /// How long it stays down.
        down: Duration,
    },
    /// Cut the path between a relay and the origin (packets dropped both
    /// ways) for a while.
    Partition {
        /// The relay's region.
        region: usize,
        /// For how long.
        for_: Duration,
    },
    /// Make a relay unreachable from every client (packets dropped both
    /// ways) for a while.
    Blackhole {
        /// The relay's region.
        region: usize,
        /// For how long.
        for_: Duration,
    },
}

/// Traffic a step starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// The host of `rooms[0]` invites `rooms[1]`, whose host accepts.
    Pk {
        /// Inviter, invitee.
        rooms: [RoomId; 2],
        /// Battle length in seconds.
        duration_secs: u32,
    },
    /// `gifts` extra gift actions spread over the room's viewers, evenly
    /// over `within`.
    GiftBurst {
        /// The room.
        room: RoomId,
        /// How many gift actions.
        gifts: u32,
        /// Over how long.
        within: Duration,
        /// Which gift.
        gift: GiftId,
        /// Items per action.
        count: u32,
    },
}

impl Traffic {
    /// A short description for reports.
    pub fn label(&self) -> String {
        match self {
            Traffic::Pk {
                rooms,
                duration_secs,
            } => format!("PK {} vs {} ({duration_secs} s)", rooms[0].0, rooms[1].0),
            Traffic::GiftBurst {
                room,
                gifts,
                within,
                ..
            } => format!(
                "{gifts} gifts to room {} in {:.1} s",
                room.0,
                within.as_secs_f64()
            ),
        }
    }
}

impl StepAction {
    /// The key of the action in the file.
    pub fn key(&self) -> &'static str {
        match self {
            StepAction::Traffic(Traffic::Pk { .. }) => "pk",
            StepAction::Traffic(Traffic::GiftBurst { .. }) => "gift_burst",
            StepAction::Impair { .. } => "impair",
            StepAction::KillRelay { .. } => "kill_relay",
            StepAction::DrainRelay { .. } => "drain_relay",
            StepAction::RestartOrigin { .. } => "restart_origin",
            StepAction::Partition { .. } => "partition",
            StepAction::Blackhole { .. } => "blackhole",
        }
    }
}

impl Scenario {
    /// Read and check a scenario file; its name defaults to the file name
    /// without `.toml`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ScenarioError::Read {
                path: path.display().to_string(),
                source,
            });
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".into());
        // From the file, so that errors name it.
        extract(Figment::from(Toml::file_exact(path)), &stem)
    }

    /// Parse and check scenario TOML; `default_name` is used when the file
    /// has no `name`.
    pub fn from_toml(text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        extract(Figment::from(Toml::string(text)), default_name)
    }

    /// Every client of the run: hosts, viewers and co-hosts.
    pub fn client_count(&self) -> u32 {
        let v: u32 = self.viewers.iter().map(|g| g.count).sum();
        let c: u32 = self.cohosts.iter().map(|g| g.count).sum();
        self.rooms.len() as u32 + v + c
    }

    /// Battles the timeline asks for (its `pk` steps).
    pub fn battles_asked(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.action, StepAction::Traffic(Traffic::Pk { .. })))
            .count()
    }

    /// The index of a room in [`Scenario::rooms`].
    pub fn room_index(&self, room: RoomId) -> Option<usize> {
        self.rooms.iter().position(|r| r.id == room)
    }
}

fn extract(figment: Figment, default_name: &str) -> Result<Scenario, ScenarioError> {
    let file: ScenarioFile = figment
        .extract()
        .map_err(|e| ScenarioError::Parse(Box::new(e)))?;
    check(file, default_name)
}

fn check(f: ScenarioFile, default_name: &str) -> Result<Scenario, ScenarioError> {
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
    let duration = secs(f.duration_s);
    if !(0.0..=MAX_RTT_MS).contains(&f.cross_region_rtt_ms) {
        return Err(invalid(format!(
            "cross_region_rtt_ms must be in [0, {MAX_RTT_MS}], got {}",
            f.cross_region_rtt_ms
        )));
    }
    let defaults = origin::rules::Config::default();
    let rules = Rules {
        pk_grace: ms(f.rules.pk_grace_ms.unwrap_or(1_000)),
        pk_punishment: ms(f.rules.pk_punishment_ms.unwrap_or(1_000)),
        seats: f.rules.seats.unwrap_or(defaults.seats),
        seat_hold: f.rules.seat_hold_ms.map_or(defaults.seat_hold, ms),
        max_stamp_age: f.rules.max_stamp_age_ms.map_or(defaults.max_stamp_age, ms),
    };
    if rules.seats == 0 && !f.cohosts.is_empty() {
        return Err(invalid("rules.seats is 0 but there are co-hosts"));
    }
    let catalogue = rules.catalogue();

    // Regions.
    if f.region.is_empty() {
        return Err(invalid("at least one [[region]] is needed"));
    }
    let mut regions = Vec::new();
    for (i, r) in f.region.into_iter().enumerate() {
        let at = format!("region[{i}] `{}`", r.name);
        if r.name.is_empty() || regions.iter().any(|x: &Region| x.name == r.name) {
            return Err(invalid(format!("{at}: names must be unique and not empty")));
        }
        for (key, v) in [
            ("client_rtt_ms", r.client_rtt_ms),
            ("origin_rtt_ms", r.origin_rtt_ms),
        ] {
            if !(0.0..=MAX_RTT_MS).contains(&v) {
                return Err(invalid(format!(
                    "{at}: {key} must be in [0, {MAX_RTT_MS}], got {v}"
                )));
            }
        }
        r.clients
            .validate()
            .map_err(|e| invalid(format!("{at}: clients: {e}")))?;
        r.origin
            .validate()
            .map_err(|e| invalid(format!("{at}: origin: {e}")))?;
        regions.push(Region {
            name: r.name,
            client_rtt_ms: r.client_rtt_ms,
            origin_rtt_ms: r.origin_rtt_ms,
            clients: r.clients,
            origin: r.origin,
        });
    }
    let names: Vec<&str> = regions.iter().map(|r| r.name.as_str()).collect();
    let region_of = |at: &str, name: &str| -> Result<usize, ScenarioError> {
        names.iter().position(|n| *n == name).ok_or_else(|| {
            invalid(format!(
                "{at}: no region named `{name}` (regions: {})",
                names.join(", ")
            ))
        })
    };

    // Rooms.
    if f.room.is_empty() {
        return Err(invalid("at least one [[room]] is needed"));
    }
    let mut rooms: Vec<RoomSpec> = Vec::new();
    for (i, r) in f.room.iter().enumerate() {
        let at = format!("room[{i}] (id {})", r.id);
        if r.id == 0 || rooms.iter().any(|x| x.id.0 == r.id) {
            return Err(invalid(format!("{at}: ids must be unique and above 0")));
        }
        rooms.push(RoomSpec {
            id: RoomId(r.id),
            host_region: region_of(&at, &r.host_region)?,
        });
    }
    let ids: Vec<String> = rooms.iter().map(|r| r.id.0.to_string()).collect();
    let room_of = |at: &str, id: u64| -> Result<RoomId, ScenarioError> {
        if rooms.iter().any(|r| r.id.0 == id) {
            Ok(RoomId(id))
        } else {
            Err(invalid(format!(
                "{at}: no room with id {id} (rooms: {})",
                ids.join(", ")
            )))
        }
    };
    let gift_of = |at: &str, gift: u32| -> Result<GiftId, ScenarioError> {
        let g = GiftId(gift);
        if catalogue.contains_key(&g) {
            Ok(g)
        } else {
            let known: Vec<String> = catalogue.keys().map(|g| g.0.to_string()).collect();
            Err(invalid(format!(
                "{at}: gift {gift} is not in the catalogue (gifts: {})",
                known.join(", ")
            )))
        }
    };
    let max_count = origin::rules::Config::default().max_gift_count;

    // Clients.
    let mut viewers = Vec::new();
    for (i, v) in f.viewers.into_iter().enumerate() {
        let at = format!("viewers[{i}]");
        if v.count == 0 {
            return Err(invalid(format!("{at}: count must be at least 1")));
        }
        for (key, rate) in [
            ("gifts_per_s", v.gifts_per_s),
            ("chats_per_s", v.chats_per_s),
            ("likes_per_s", v.likes_per_s),
        ] {
            if !(0.0..=MAX_RATE).contains(&rate) {
                return Err(invalid(format!(
                    "{at}: {key} must be in [0, {MAX_RATE}], got {rate}"
                )));
            }
        }
        let mix = match v.gift_mix {
            Some(mix) => {
                if mix.is_empty() {
                    return Err(invalid(format!("{at}: gift_mix is empty")));
                }
                let mut out = Vec::new();
                for (k, m) in mix.into_iter().enumerate() {
                    let at = format!("{at}.gift_mix[{k}]");
                    if m.weight == 0 || m.count == 0 || m.count > max_count {
                        return Err(invalid(format!(
                            "{at}: weight must be at least 1 and count in [1, {max_count}]"
                        )));
                    }
                    out.push(GiftChoice {
                        gift: gift_of(&at, m.gift)?,
                        weight: m.weight,
                        count: m.count,
                    });
                }
                out
            }
            None => default_mix(),
        };
        viewers.push(ViewerGroup {
            room: room_of(&at, v.room)?,
            region: region_of(&at, &v.region)?,
            count: v.count,
            gifts_per_s: v.gifts_per_s,
            gift_mix: mix,
            chats_per_s: v.chats_per_s,
            likes_per_s: v.likes_per_s,
        });
    }
    let mut cohosts = Vec::new();
    for (i, c) in f.cohosts.into_iter().enumerate() {
        let at = format!("cohosts[{i}]");
        if c.count == 0 {
            return Err(invalid(format!("{at}: count must be at least 1")));
        }
        if !(c.sit_s > 0.0
            && c.sit_s <= MAX_DURATION_S
            && c.stand_s > 0.0
            && c.stand_s <= MAX_DURATION_S)
        {
            return Err(invalid(format!(
                "{at}: sit_s and stand_s must be in (0, {MAX_DURATION_S}]"
            )));
        }
        cohosts.push(CohostGroup {
            room: room_of(&at, c.room)?,
            region: region_of(&at, &c.region)?,
            count: c.count,
            sit: secs(c.sit_s),
            stand: secs(c.stand_s),
        });
    }

    // Steps.
    let mut steps = Vec::new();
    for (i, s) in f.step.into_iter().enumerate() {
        let at = format!("step[{i}] (at_s = {})", s.at_s);
        if !(s.at_s >= 0.0 && s.at_s <= f.duration_s) {
            return Err(invalid(format!(
                "{at}: at_s must be in [0, duration_s = {}]",
                f.duration_s
            )));
        }
        let fits = |what: &str, len: f64| -> Result<Duration, ScenarioError> {
            if !(len > 0.0 && s.at_s + len <= f.duration_s) {
                return Err(invalid(format!(
                    "{at}: {what} must be above 0 and end by duration_s = {} (at_s + {what} = {})",
                    f.duration_s,
                    s.at_s + len
                )));
            }
            Ok(secs(len))
        };
        let mut actions = Vec::new();
        if let Some(p) = s.pk {
            let a = room_of(&at, p.rooms[0])?;
            let b = room_of(&at, p.rooms[1])?;
            if a == b {
                return Err(invalid(format!("{at}: pk needs two different rooms")));
            }
            fits("pk.duration_s", f64::from(p.duration_s))?;
            actions.push(StepAction::Traffic(Traffic::Pk {
                rooms: [a, b],
                duration_secs: p.duration_s,
            }));
        }
        if let Some(g) = s.gift_burst {
            let room = room_of(&at, g.room)?;
            if !viewers.iter().any(|v| v.room == room) {
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
                gift: gift_of(&at, g.gift)?,
                count: g.count,
            }));
        }
        if let Some(imp) = s.impair {
            imp.profile
                .validate()
                .map_err(|e| invalid(format!("{at}: impair.profile: {e}")))?;
            actions.push(StepAction::Impair {
                region: region_of(&at, &imp.region)?,
                path: imp.path,
                profile: Box::new(imp.profile),
                for_: imp.for_s.map(|d| fits("impair.for_s", d)).transpose()?,
            });
        }
        if let Some(r) = s.kill_relay {
            actions.push(StepAction::KillRelay {
                region: region_of(&at, &r)?,
            });
        }
        if let Some(r) = s.drain_relay {
            actions.push(StepAction::DrainRelay {
                region: region_of(&at, &r)?,
            });
        }
        if let Some(r) = s.restart_origin {
            let down = if r.down_s == 0.0 {
                Duration::ZERO
            } else {
                fits("restart_origin.down_s", r.down_s)?
            };
            actions.push(StepAction::RestartOrigin { down });
        }
        if let Some(o) = s.partition {
            actions.push(StepAction::Partition {
                region: region_of(&at, &o.region)?,
                for_: fits("partition.for_s", o.for_s)?,
            });
        }
        if let Some(o) = s.blackhole {
            actions.push(StepAction::Blackhole {
                region: region_of(&at, &o.region)?,
                for_: fits("blackhole.for_s", o.for_s)?,
            });
        }
        let action = match actions.len() {
            1 => actions.remove(0),
            0 => {
                return Err(invalid(format!(
                    "{at}: no action; give one of pk, gift_burst, impair, kill_relay, \
                     drain_relay, restart_origin, partition, blackhole"
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
        steps.push(Step {
            at: secs(s.at_s),
            action,
        });
    }
    check_relays(&steps, &regions)?;
    check_origin(&steps)?;
    let gates = check_gates(&f.gates, &steps, &viewers, &cohosts)?;

    let s = Scenario {
        name,
        seed: f.seed,
        duration,
        cross_region_rtt_ms: f.cross_region_rtt_ms,
        rules,
        regions,
        rooms,
        viewers,
        cohosts,
        steps,
        gates,
    };
    if s.client_count() > MAX_CLIENTS {
        return Err(invalid(format!(
            "{} clients is more than this testbed runs on one machine ({MAX_CLIENTS})",
            s.client_count()
        )));
    }
    Ok(s)
}

/// A relay is removed (killed or drained) at most once, never the last one
/// standing, and no step touches it afterwards.
fn check_relays(steps: &[Step], regions: &[Region]) -> Result<(), ScenarioError> {
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

/// Each gate's limit is a number in its range, and the scenario makes
/// samples of its figure (a gate on a figure the run cannot measure would
/// always be breached).
fn check_gates(
    g: &GatesFile,
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
        )
    });
    let gifts = viewers.iter().any(|v| v.gifts_per_s > 0.0)
        || has(|a| matches!(a, StepAction::Traffic(Traffic::GiftBurst { .. })));
    let chats = viewers.iter().any(|v| v.chats_per_s > 0.0);
    let mut limits = Vec::new();
    for gate in Gate::ALL {
        let Some(value) = g.get(gate) else { continue };
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
            Gate::GiftAckP99Ms if !gifts => Some("viewers with gifts_per_s or a gift_burst step"),
            Gate::ChatAckP99Ms if !chats => Some("viewers with chats_per_s"),
            Gate::AuthorityAckP99Ms if !pk && cohosts.is_empty() => Some("a pk step or co-hosts"),
            Gate::TimerDriftP99Ms | Gate::StartSuccessMin if !pk => Some("a pk step"),
            Gate::RecoveryP99S if !failure => {
                Some("a kill_relay, drain_relay, restart_origin, partition or blackhole step")
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

/// Origin restarts do not overlap.
fn check_origin(steps: &[Step]) -> Result<(), ScenarioError> {
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

/// Roses mostly, some hearts, the odd rocket.
fn default_mix() -> Vec<GiftChoice> {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        seed = 7
        duration_s = 20
        [[region]]
        name = "eu"
        client_rtt_ms = 40
        origin_rtt_ms = 10
        clients = { loss = 0.05 }
        [[region]]
        name = "us"
        client_rtt_ms = 30
        [[room]]
        id = 1
        host_region = "eu"
        [[room]]
        id = 2
        host_region = "us"
        [[viewers]]
        room = 1
        region = "eu"
        count = 5
        gifts_per_s = 1
        gift_mix = [{ gift = 3, weight = 2, count = 2 }]
        [[cohosts]]
        room = 2
        region = "us"
        count = 2
        [[step]]
        at_s = 2
        pk = { rooms = [1, 2], duration_s = 10 }
        [[step]]
        at_s = 5
        kill_relay = "eu"
        [[step]]
        at_s = 6
        [step.impair]
        region = "us"
        path = "clients"
        for_s = 3
        [step.impair.profile]
        loss = 0.1
        [step.impair.profile.down]
        delay_ms = 5
    "#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml(text, "test")
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn a_full_scenario_parses() {
        let s = parse(GOOD).expect("parses");
        assert_eq!(s.name, "test");
        assert_eq!(s.seed, 7);
        assert_eq!(s.regions.len(), 2);
        assert_eq!(s.regions[0].clients.up.loss, 0.05);
        assert_eq!(s.viewers[0].gift_mix[0].count, 2);
        assert_eq!(s.client_count(), 2 + 5 + 2);
        assert_eq!(s.steps.len(), 3);
        match &s.steps[2].action {
            StepAction::Impair {
                region,
                path,
                profile,
                for_,
            } => {
                assert_eq!((*region, *path), (1, PathKind::Clients));
                assert_eq!(profile.up.loss, 0.1);
                assert_eq!(profile.down.delay_ms, 5.0);
                assert_eq!(*for_, Some(Duration::from_secs(3)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typos_name_the_key() {
        let e = err(&GOOD.replace("gifts_per_s", "gift_per_s"));
        assert!(e.contains("gift_per_s"), "{e}");
        let e = err(&GOOD.replace("kill_relay", "kil_relay"));
        assert!(e.contains("kil_relay"), "{e}");
        let e = err(&GOOD.replace("clients = { loss", "clients = { los"));
        assert!(e.contains("los"), "{e}");
    }

    #[test]
    fn bad_references_say_what_exists() {
        let e = err(&GOOD.replace(r#"kill_relay = "eu""#, r#"kill_relay = "asia""#));
        assert!(e.contains("asia") && e.contains("eu, us"), "{e}");
        let e = err(&GOOD.replace("rooms = [1, 2]", "rooms = [1, 3]"));
        assert!(e.contains("no room with id 3"), "{e}");
        let e = err(&GOOD.replace("gift = 3,", "gift = 99,"));
        assert!(e.contains("catalogue"), "{e}");
    }

    #[test]
    fn times_must_fit_the_run() {
        let e = err(&GOOD.replace("duration_s = 10", "duration_s = 30"));
        assert!(e.contains("pk.duration_s"), "{e}");
        let e = err(&GOOD.replace("at_s = 5", "at_s = 25"));
        assert!(e.contains("at_s must be in"), "{e}");
    }

    #[test]
    fn one_action_per_step() {
        let e = err(&GOOD.replace(
            r#"kill_relay = "eu""#,
            "kill_relay = \"eu\"\ndrain_relay = \"us\"",
        ));
        assert!(e.contains("kill_relay and drain_relay"), "{e}");
        let e = err(&GOOD.replace(r#"kill_relay = "eu""#, ""));
        assert!(e.contains("no action"), "{e}");
    }

    #[test]
    fn the_last_relay_is_never_removed() {
        let e = err(&GOOD.replace(
            "[[step]]\n        at_s = 6",
            "[[step]]\n        at_s = 7\n        drain_relay = \"us\"\n        [[step]]\n        at_s = 6",
        ));
        assert!(e.contains("last one standing"), "{e}");
        let e = err(&GOOD.replace(
            "[[step]]\n        at_s = 6",
            "[[step]]\n        at_s = 7\n        blackhole = { region = \"eu\", for_s = 1 }\n        [[step]]\n        at_s = 6",
        ));
        assert!(e.contains("already gone"), "{e}");
    }

    #[test]
    fn gates_parse_in_a_fixed_order() {
        let s = parse(&format!(
            "{GOOD}\n        [gates]\n        recovery_p99_s = 4\n        gift_ack_p99_ms = 250.5\n        start_success_min = 1\n"
        ))
        .expect("parses");
        assert_eq!(
            s.gates,
            [
                Limit {
                    gate: Gate::GiftAckP99Ms,
                    value: 250.5
                },
                Limit {
                    gate: Gate::StartSuccessMin,
                    value: 1.0
                },
                Limit {
                    gate: Gate::RecoveryP99S,
                    value: 4.0
                },
            ]
        );
        assert_eq!(s.battles_asked(), 1);
        assert!(parse(GOOD).expect("parses").gates.is_empty());
    }

    #[test]
    fn bad_gates_are_refused_by_name() {
        let with = |gates: &str| err(&format!("{GOOD}\n[gates]\n{gates}\n"));
        let e = with("gift_ack_p99 = 100");
        assert!(e.contains("gift_ack_p99"), "{e}");
        let e = with("delivery_p99_ms = \"fast\"");
        assert!(e.contains("delivery_p99_ms"), "{e}");
        let e = with("delivery_p99_ms = 0");
        assert!(
            e.contains("gates.delivery_p99_ms must be a number above 0"),
            "{e}"
        );
        let e = with("start_success_min = 1.5");
        assert!(
            e.contains("gates.start_success_min must be in [0, 1]"),
            "{e}"
        );
        // A gate the scenario has no sample for.
        let e = with("chat_ack_p99_ms = 100");
        assert!(
            e.contains("gates.chat_ack_p99_ms") && e.contains("chats_per_s"),
            "{e}"
        );
        let no_pk = GOOD.replace(
            "pk = { rooms = [1, 2], duration_s = 10 }",
            "gift_burst = { room = 1, gifts = 10 }",
        );
        let e = err(&format!("{no_pk}\n[gates]\ntimer_drift_p99_ms = 10\n"));
        assert!(
            e.contains("gates.timer_drift_p99_ms") && e.contains("a pk step"),
            "{e}"
        );
    }

    #[test]
    fn defaults_fill_in() {
        let s = parse(
            r#"
            duration_s = 5
            [[region]]
            name = "a"
            client_rtt_ms = 10
            [[room]]
            id = 1
            host_region = "a"
            [[viewers]]
            room = 1
            region = "a"
            count = 1
            "#,
        )
        .expect("parses");
        assert_eq!(s.seed, 1);
        assert_eq!(s.viewers[0].gift_mix, default_mix());
        assert_eq!(s.rules.pk_grace, Duration::from_secs(1));
        assert!(s.steps.is_empty());
    }
}
