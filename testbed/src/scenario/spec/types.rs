//! The checked scenario: everything a run needs, cross-references resolved
//! to indices. Built only from a checked file ([`Scenario::from_toml`]).

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::{GiftId, RoomId};
use serde::Deserialize;

use crate::impair::LinkProfile;
use crate::scenario::spec::gate::Limit;

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
    /// Release gates (`[gates]`), in [`Gate::ALL`](crate::scenario::spec::Gate::ALL) order; empty
    /// when none.
    pub gates: Vec<Limit>,
    /// `[cluster]`: origin nodes on a NATS cluster; `None`: one origin.
    pub cluster: Option<crate::cluster::ClusterSpec>,
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

/// One timeline step: parsed from the file as it is, and played as it is
/// (the timeline plays each [`Edge`] of it at its time).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: StepAction,
}

/// Which end of a step is played: a step with a length (a partition for
/// 3 s, an origin restart, an impairment `for_s`) ends as well as begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The step starts (the failure, the change, the traffic).
    Begin,
    /// The step's length is over (heal, origin back, path back).
    End,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
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
    /// Cluster mode: crash an origin node (no goodbye; its lease expires
    /// and the other nodes take its rooms).
    KillOriginNode {
        /// Which.
        node: NodeRef,
    },
    /// Cluster mode: stop an origin node gracefully (it hands its rooms
    /// over first).
    DrainOriginNode {
        /// Which.
        node: NodeRef,
    },
    /// Cluster mode: cut an origin node off every NATS server for a while
    /// (relays still reach it).
    PartitionOriginNode {
        /// Which.
        node: NodeRef,
        /// For how long.
        for_: Duration,
    },
    /// Cluster mode: SIGKILL a NATS server (for good).
    KillNatsServer {
        /// Its index, from 0.
        server: usize,
    },
}

/// Which origin node a cluster step acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// Node number `i` (`node-<i>`), from 0.
    Index(usize),
    /// Whichever node serves this room when the step plays.
    OwnerOf(RoomId),
}

impl NodeRef {
    /// For labels: "node 1", "the owner of room 7".
    pub fn label(self) -> String {
        match self {
            NodeRef::Index(i) => format!("origin node-{i}"),
            NodeRef::OwnerOf(r) => format!("the origin node of room {}", r.0),
        }
    }
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
            StepAction::KillOriginNode { .. } => "kill_origin_node",
            StepAction::DrainOriginNode { .. } => "drain_origin_node",
            StepAction::PartitionOriginNode { .. } => "partition_origin_node",
            StepAction::KillNatsServer { .. } => "kill_nats_server",
        }
    }

    /// Whether it is a cluster-mode failure (needs `[cluster]`).
    pub fn is_cluster(&self) -> bool {
        matches!(
            self,
            StepAction::KillOriginNode { .. }
                | StepAction::DrainOriginNode { .. }
                | StepAction::PartitionOriginNode { .. }
                | StepAction::KillNatsServer { .. }
        )
    }
}
