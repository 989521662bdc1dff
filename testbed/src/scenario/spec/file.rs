//! The scenario file exactly as written: serde reads the TOML into these
//! structs (an unknown key is an error naming it); nothing is checked yet.

use serde::Deserialize;

use crate::impair::LinkProfile;
use crate::scenario::spec::gate::Gate;
use crate::scenario::spec::types::PathKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScenarioFile {
    pub(super) name: Option<String>,
    #[serde(default = "one_u64")]
    pub(super) seed: u64,
    pub(super) duration_s: f64,
    #[serde(default)]
    pub(super) cross_region_rtt_ms: f64,
    #[serde(default)]
    pub(super) rules: RulesFile,
    #[serde(default)]
    pub(super) region: Vec<RegionFile>,
    #[serde(default)]
    pub(super) room: Vec<RoomFile>,
    #[serde(default)]
    pub(super) viewers: Vec<ViewersFile>,
    #[serde(default)]
    pub(super) cohosts: Vec<CohostsFile>,
    #[serde(default)]
    pub(super) step: Vec<StepFile>,
    #[serde(default)]
    pub(super) gates: GatesFile,
    pub(super) cluster: Option<ClusterFile>,
}

/// `[cluster]`: origin nodes on a NATS cluster instead of one origin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    #[serde(default = "three")]
    pub(super) nodes: usize,
    #[serde(default = "three")]
    pub(super) nats_servers: usize,
    pub(super) replicas: Option<usize>,
    pub(super) shards: Option<u32>,
    pub(super) lease_ttl_ms: Option<u64>,
}

fn three() -> usize {
    3
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
pub(super) struct RulesFile {
    pub(super) pk_grace_ms: Option<u64>,
    pub(super) pk_punishment_ms: Option<u64>,
    pub(super) seats: Option<u8>,
    pub(super) seat_hold_ms: Option<u64>,
    pub(super) max_stamp_age_ms: Option<u64>,
}

/// `[gates]`: one optional key per [`Gate`] (see [`Gate::key`]).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct GatesFile {
    pub(super) gift_ack_p99_ms: Option<f64>,
    pub(super) chat_ack_p99_ms: Option<f64>,
    pub(super) authority_ack_p99_ms: Option<f64>,
    pub(super) delivery_p99_ms: Option<f64>,
    pub(super) timer_drift_p99_ms: Option<f64>,
    pub(super) start_success_min: Option<f64>,
    pub(super) recovery_p99_s: Option<f64>,
    pub(super) room_resume_p99_s: Option<f64>,
}

impl GatesFile {
    pub(super) fn get(&self, gate: Gate) -> Option<f64> {
        match gate {
            Gate::GiftAckP99Ms => self.gift_ack_p99_ms,
            Gate::ChatAckP99Ms => self.chat_ack_p99_ms,
            Gate::AuthorityAckP99Ms => self.authority_ack_p99_ms,
            Gate::DeliveryP99Ms => self.delivery_p99_ms,
            Gate::TimerDriftP99Ms => self.timer_drift_p99_ms,
            Gate::StartSuccessMin => self.start_success_min,
            Gate::RecoveryP99S => self.recovery_p99_s,
            Gate::RoomResumeP99S => self.room_resume_p99_s,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegionFile {
    pub(super) name: String,
    pub(super) client_rtt_ms: f64,
    #[serde(default)]
    pub(super) origin_rtt_ms: f64,
    #[serde(default)]
    pub(super) clients: LinkProfile,
    #[serde(default)]
    pub(super) origin: LinkProfile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomFile {
    pub(super) id: u64,
    pub(super) host_region: String,
    /// This many rooms, ids `id`, `id + 1`, ...
    #[serde(default = "one_u64")]
    pub(super) count: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ViewersFile {
    pub(super) room: u64,
    /// The group is repeated in this many rooms, `room`, `room + 1`, ...
    #[serde(default = "one_u64")]
    pub(super) room_count: u64,
    pub(super) region: String,
    pub(super) count: u32,
    #[serde(default)]
    pub(super) gifts_per_s: f64,
    pub(super) gift_mix: Option<Vec<GiftMixFile>>,
    #[serde(default)]
    pub(super) chats_per_s: f64,
    #[serde(default)]
    pub(super) likes_per_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GiftMixFile {
    pub(super) gift: u32,
    #[serde(default = "one_u32")]
    pub(super) weight: u32,
    #[serde(default = "one_u32")]
    pub(super) count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CohostsFile {
    pub(super) room: u64,
    pub(super) region: String,
    pub(super) count: u32,
    #[serde(default = "default_sit")]
    pub(super) sit_s: f64,
    #[serde(default = "default_stand")]
    pub(super) stand_s: f64,
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
pub(super) struct StepFile {
    pub(super) at_s: f64,
    pub(super) pk: Option<PkFile>,
    pub(super) gift_burst: Option<GiftBurstFile>,
    pub(super) impair: Option<ImpairFile>,
    pub(super) kill_relay: Option<String>,
    pub(super) drain_relay: Option<String>,
    pub(super) restart_origin: Option<RestartFile>,
    pub(super) partition: Option<OutageFile>,
    pub(super) blackhole: Option<OutageFile>,
    pub(super) kill_origin_node: Option<NodeFile>,
    pub(super) drain_origin_node: Option<NodeFile>,
    pub(super) partition_origin_node: Option<NodeFile>,
    pub(super) kill_nats_server: Option<usize>,
}

/// An origin node, by index or as the owner of a room at the time; a
/// length for a partition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeFile {
    pub(super) node: Option<usize>,
    pub(super) owner_of: Option<u64>,
    pub(super) for_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PkFile {
    pub(super) rooms: [u64; 2],
    pub(super) duration_s: u32,
    /// This many battles at once: `rooms[0] + 2k` against `rooms[1] + 2k`.
    #[serde(default = "one_u32")]
    pub(super) pairs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GiftBurstFile {
    pub(super) room: u64,
    pub(super) gifts: u32,
    #[serde(default = "one_f64")]
    pub(super) within_s: f64,
    #[serde(default = "one_u32")]
    pub(super) gift: u32,
    #[serde(default = "one_u32")]
    pub(super) count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImpairFile {
    pub(super) region: String,
    pub(super) path: PathKind,
    #[serde(default)]
    pub(super) profile: LinkProfile,
    pub(super) for_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestartFile {
    #[serde(default = "one_f64")]
    pub(super) down_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutageFile {
    pub(super) region: String,
    pub(super) for_s: f64,
}

// ---------------------------------------------------------------------------
