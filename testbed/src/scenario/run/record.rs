//! What a run records as it happens: the evidence, as plain data (the
//! [`Recorder`](crate::scenario::run::recorder::Recorder) that collects it
//! lives next door).
//!
//! No tokio here. Times are microseconds (or
//! milliseconds where noted) since the start of the run — the moment every
//! client has joined and the timeline begins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use client_sdk::{ClientEvent, Continuity};
use protocol::{
    ActionId, BattleId, Class, Event, EventKind, GiftId, Reason, RoomId, RoomState, Seq, ServerTime,
};

use crate::link::LinkStats;

use serde::{Serialize, Serializer};

use crate::scenario::run::timeline::Kind;
use crate::scenario::verdict::stats::us_as_s;

/// How clients send: the design, or the baseline it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Datagrams first, the reliable stream as fallback (the SDK default).
    DatagramFirst,
    /// Everything on the reliable stream (`ClientBuilder::datagrams(false)`).
    StreamOnly,
}

impl Mode {
    /// Both, the design first.
    pub const BOTH: [Mode; 2] = [Mode::DatagramFirst, Mode::StreamOnly];

    /// Its name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Mode::DatagramFirst => "datagram-first",
            Mode::StreamOnly => "stream-only",
        }
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

fn ms32_as_s<S: Serializer>(ms: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(f64::from(*ms) / 1000.0)
}

/// A gift action's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiftSent {
    /// Catalogue item.
    pub gift: GiftId,
    /// Items.
    pub count: u32,
    /// Catalogue value × count.
    pub value: u64,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// The origin applied it; `seq` is its last event in the room.
    Applied {
        /// The action's id.
        id: ActionId,
        /// Its event's seq.
        seq: Seq,
    },
    /// The origin (or the relay) refused it.
    Rejected {
        /// The action's id.
        id: ActionId,
        /// Why.
        reason: Reason,
    },
    /// The SDK did not send it: too many actions in flight.
    Busy,
    /// The SDK failed it without an outcome (whether it applied is unknown).
    Failed(String),
    /// It had no outcome when the run ended.
    Unresolved,
}

/// One action and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// The client that sent it (index in the run's client list).
    pub client: u32,
    /// The room.
    pub room: RoomId,
    /// Its priority class.
    pub class: Class,
    /// Its name (`gift`, `seat_take`, ...).
    pub name: &'static str,
    /// When it was sent, µs.
    pub sent_us: u64,
    /// Call to ack (the SDK's `Acked::latency`), µs; 0 without an ack.
    pub latency_us: u64,
    /// The outcome.
    pub result: ActionResult,
    /// For a gift, what was sent.
    pub gift: Option<GiftSent>,
}

impl ActionRecord {
    /// Whether the origin applied it.
    pub fn applied(&self) -> bool {
        matches!(self.result, ActionResult::Applied { .. })
    }
}

/// One event reaching one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Which client received it.
    pub client: u32,
    /// When it arrived, ms.
    pub t_ms: u32,
    /// From the event's origin time (`Event::at`) to its arrival, measured
    /// on the origin's clock, µs.
    pub latency_us: u32,
    /// The event's class.
    pub class: Class,
}

/// What happened to a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    /// Its relay failed (`goaway: false`) or asked it to move.
    Moving {
        /// A goaway (drain) rather than a failure.
        goaway: bool,
    },
    /// Resumed on another relay.
    Reconnected {
        /// Rebuilt from a snapshot rather than gap-free.
        rebuilt: bool,
        /// The SDK's own measure, from noticing to resumed, µs.
        took_us: u64,
    },
    /// Its relay lost the origin.
    UpstreamDown,
    /// Its relay has the origin again.
    UpstreamUp,
    /// Its session was refused for good (nothing reconnects).
    Failed,
}

impl ConnEvent {
    /// From the SDK's event (`Connected` is not recorded).
    pub fn from_sdk(e: &ClientEvent) -> Option<ConnEvent> {
        Some(match e {
            ClientEvent::Connected { .. } => return None,
            ClientEvent::Moving { goaway, .. } => ConnEvent::Moving { goaway: *goaway },
            ClientEvent::Reconnected {
                continuity, took, ..
            } => ConnEvent::Reconnected {
                rebuilt: *continuity == Continuity::Rebuilt,
                took_us: micros(*took),
            },
            ClientEvent::Upstream { connected: true } => ConnEvent::UpstreamUp,
            ClientEvent::Upstream { connected: false } => ConnEvent::UpstreamDown,
            ClientEvent::Failed { .. } => ConnEvent::Failed,
        })
    }

    /// Whether this event starts a disruption.
    pub fn disrupts(self) -> bool {
        matches!(
            self,
            ConnEvent::Moving { .. } | ConnEvent::UpstreamDown | ConnEvent::Failed
        )
    }

    /// Whether this event ends one.
    pub fn resumes(self) -> bool {
        matches!(self, ConnEvent::Reconnected { .. } | ConnEvent::UpstreamUp)
    }
}

/// A connection event of one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRecord {
    /// When, µs.
    pub t_us: u64,
    /// Which client.
    pub client: u32,
    /// What.
    pub event: ConnEvent,
}

/// One reading of a client's clock estimate against the origin's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// When, ms.
    pub t_ms: u32,
    /// Which client.
    pub client: u32,
    /// `client.server_time() - origin now`, µs (positive: the client is ahead).
    pub error_us: i64,
}

/// Where one client's countdown to a battle's bell reached zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    /// The battle.
    pub battle: BattleId,
    /// Which client.
    pub client: u32,
    /// Origin time at which the client's countdown showed zero, minus
    /// `ends_at`, µs (positive: late); `None` if it never did (no clock).
    pub error_us: Option<i64>,
}

/// A battle the run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BattleRecord {
    /// Its id.
    pub id: BattleId,
    /// Inviter, invitee.
    pub rooms: [RoomId; 2],
    /// Its bell, origin time.
    pub ends_at: ServerTime,
    /// When it started running, µs.
    pub started_us: u64,
    /// When its bell rings, µs of the run.
    pub ends_us: u64,
}

/// Where a late timer was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StallKind {
    /// A plain thread: the machine (or the process) did not run it.
    Thread,
    /// A tokio task: the runtime's workers were busy or blocked.
    Runtime,
}

/// A 5 ms sleep that woke much later than asked: the machine or the
/// runtime stalled, and every latency measured then is inflated by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// When it woke, ms.
    #[serde(rename = "t_s", serialize_with = "ms32_as_s")]
    pub t_ms: u32,
    /// How late, ms.
    pub late_ms: u32,
    /// Thread or runtime.
    pub kind: StallKind,
}

/// Lateness above which a wake-up counts as a stall.
pub const STALL_MS: u64 = 20;

/// A timeline entry as played.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    /// When it was played, µs.
    #[serde(rename = "t_s", serialize_with = "us_as_s")]
    pub t_us: u64,
    /// Its step.
    #[serde(skip)]
    pub step: usize,
    /// Failure, heal, change or traffic.
    pub kind: Kind,
    /// What it was.
    #[serde(rename = "what")]
    pub label: String,
    /// For a failure that moves clients to another region's relay, the
    /// extra one-way base delay of their new path, µs.
    #[serde(skip)]
    pub extra_path_us: u64,
}

/// The union of every event any client received, by room and seq: the
/// evidence the invariants are checked against. Two clients receiving
/// different events at the same seq is recorded as a conflict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenEvents {
    /// Events by room and seq.
    pub rooms: BTreeMap<RoomId, BTreeMap<Seq, Event>>,
    /// Seqs at which two clients saw different events.
    pub conflicts: Vec<(RoomId, Seq)>,
}

impl SeenEvents {
    /// Adds an event one client received.
    pub fn handle(&mut self, room: RoomId, e: &Event) {
        let events = self.rooms.entry(room).or_default();
        match events.get(&e.seq) {
            Some(known) if known != e => {
                if !self.conflicts.contains(&(room, e.seq)) {
                    self.conflicts.push((room, e.seq));
                }
            }
            Some(_) => {}
            None => {
                events.insert(e.seq, e.clone());
            }
        }
    }

    /// The gift events of a room.
    pub fn gifts(&self, room: RoomId) -> impl Iterator<Item = &Event> {
        self.rooms
            .get(&room)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|e| matches!(e.kind, EventKind::Gift { .. }))
    }
}

/// The origin's clock, read from this process: the same formula as the
/// origin's (its start time plus the monotonic clock since), anchored by
/// one `Origin::now()` reading. It keeps running while the origin is down,
/// and is re-anchored when the origin restarts.
#[derive(Debug, Clone, Copy)]
pub struct RefClock {
    anchor: Instant,
    at: ServerTime,
}

impl RefClock {
    /// Anchored to an origin-time reading taken now.
    pub fn anchored(origin_now: ServerTime) -> RefClock {
        RefClock {
            anchor: Instant::now(),
            at: origin_now,
        }
    }

    /// Origin time now.
    pub fn now(&self) -> ServerTime {
        self.at_instant(Instant::now())
    }

    /// Origin time at a local instant.
    pub fn at_instant(&self, i: Instant) -> ServerTime {
        if i >= self.anchor {
            self.at + (i - self.anchor)
        } else {
            self.at.saturating_sub(self.anchor - i)
        }
    }

    /// The local instant at which origin time is `t`.
    pub fn instant(&self, t: ServerTime) -> Instant {
        let d = t.diff_micros(self.at);
        if d >= 0 {
            self.anchor + Duration::from_micros(d.unsigned_abs())
        } else {
            self.anchor
                .checked_sub(Duration::from_micros(d.unsigned_abs()))
                .unwrap_or(self.anchor)
        }
    }
}

/// What a [`Recorder`](crate::scenario::run::recorder::Recorder) held at
/// the end.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Every action.
    pub actions: Vec<ActionRecord>,
    /// Every event any client received.
    pub seen: SeenEvents,
    /// Connection events.
    pub conns: Vec<ConnRecord>,
    /// Clock readings of clients in battle rooms.
    pub readings: Vec<ClockReading>,
    /// Countdown results.
    pub countdowns: Vec<Countdown>,
    /// Battles started.
    pub battles: Vec<BattleRecord>,
    /// Timeline entries as played.
    pub markers: Vec<Marker>,
    /// Late wake-ups of the stall detectors.
    pub stalls: Vec<Stall>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// One client's room as it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorState {
    /// Which client.
    pub client: u32,
    /// Its mirrored state.
    pub state: RoomState,
}

/// One client at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    /// Its index.
    pub client: u32,
    /// Its user.
    pub user: protocol::UserId,
    /// Its room.
    pub room: RoomId,
    /// The region it connects from.
    pub region: String,
    /// `host`, `viewer` or `cohost`.
    pub role: &'static str,
    /// The relay it ended on.
    pub relay: Option<String>,
    /// The SDK's counters.
    pub stats: client_sdk::Stats,
}

/// Everything one run of a scenario produced.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Design or baseline.
    pub mode: Mode,
    /// The scenario's length.
    pub duration: Duration,
    /// Wall time of the whole run, setup and teardown included.
    pub wall: Duration,
    /// Wall time to start the topology and connect every client.
    pub setup: Duration,
    /// Clients in the run.
    pub clients: u32,
    /// What the tasks recorded.
    pub recorded: Recorded,
    /// Every event delivery to every client.
    pub deliveries: Vec<Delivery>,
    /// Events a client's watcher missed by lagging (not measured).
    pub lagged: u64,
    /// The origin's committed state of each room at the end.
    pub origin_rooms: BTreeMap<RoomId, RoomState>,
    /// Each client's mirror at the end.
    pub mirrors: Vec<MirrorState>,
    /// Why the clients did not all converge, if they did not.
    pub converge_error: Option<String>,
    /// The SDK's counters, summed over clients.
    pub client_stats: client_sdk::Stats,
    /// Each client at the end.
    pub per_client: Vec<ClientSummary>,
    /// Each link's counters at the end, by name.
    pub links: Vec<(String, LinkStats)>,
    /// How far a restarted origin's clock was from the old one's, µs.
    pub origin_estimate_steps: Vec<i64>,
    /// Cluster mode: what the room logs showed after the run.
    pub cluster: Option<crate::cluster::ClusterEvidence>,
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_events_flag_conflicts() {
        let e = |seq: u64, count: u32| Event {
            seq: Seq(seq),
            at: ServerTime(1),
            cause: None,
            kind: EventKind::Likes {
                from: protocol::UserId(1),
                count,
                total: u64::from(count),
            },
        };
        let mut s = SeenEvents::default();
        s.handle(RoomId(1), &e(1, 1));
        s.handle(RoomId(1), &e(1, 1));
        assert!(s.conflicts.is_empty());
        s.handle(RoomId(1), &e(1, 2));
        s.handle(RoomId(1), &e(1, 2));
        assert_eq!(s.conflicts, vec![(RoomId(1), Seq(1))]);
        assert_eq!(s.rooms[&RoomId(1)].len(), 1);
    }

    #[test]
    fn the_reference_clock_maps_both_ways() {
        let c = RefClock::anchored(ServerTime(1_000_000_000));
        let later = c.instant(ServerTime(1_000_500_000));
        assert_eq!(c.at_instant(later), ServerTime(1_000_500_000));
        assert!(c.now() >= ServerTime(1_000_000_000));
    }
}
