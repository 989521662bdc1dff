//! What a run records as it happens, and the [`Recorder`] the run's tasks
//! share to record it.
//!
//! No tokio here: the recorder is a handful of `std` mutexes held for a push
//! each, so any task (or thread) can record. Times are microseconds (or
//! milliseconds where noted) since the start of the run — the moment every
//! client has joined and the timeline begins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use client_sdk::{Acked, ClientEvent, Continuity};
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

/// An action sent and not yet resolved.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Which client.
    pub client: u32,
    /// The room.
    pub room: RoomId,
    /// The action's class.
    pub class: Class,
    /// The action's name.
    pub name: &'static str,
    /// When sent, µs.
    pub sent_us: u64,
    /// The gift, for gifts.
    pub gift: Option<GiftSent>,
}

/// Most recent ack latencies kept for the progress line.
const RECENT: usize = 2_000;

#[derive(Debug, Default)]
struct TrackerInner {
    next: u64,
    pending: HashMap<u64, Pending>,
    done: Vec<ActionRecord>,
    recent: VecDeque<u64>,
    acked: u64,
    closed: bool,
}

/// Every action from send to outcome: what resolved, and what never did.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<TrackerInner>,
}

impl Tracker {
    /// A new, empty tracker.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    fn lock(&self) -> MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An action is sent; returns its token for [`Tracker::end`].
    pub fn begin(&self, p: Pending) -> u64 {
        let mut t = self.lock();
        t.next += 1;
        let token = t.next;
        t.pending.insert(token, p);
        token
    }

    /// The action of `token` resolved with `r`. Ignored once the tracker is
    /// [finished](Tracker::finish).
    pub fn end(&self, token: u64, r: &Result<Acked, client_sdk::Error>) {
        let mut t = self.lock();
        if t.closed {
            return;
        }
        let Some(p) = t.pending.remove(&token) else {
            return;
        };
        let (result, latency_us) = match r {
            Ok(a) => (
                match a.outcome {
                    client_sdk::Outcome::Applied { seq } => ActionResult::Applied { id: a.id, seq },
                    client_sdk::Outcome::Rejected { reason } => {
                        ActionResult::Rejected { id: a.id, reason }
                    }
                    client_sdk::Outcome::Unknown => ActionResult::Rejected {
                        id: a.id,
                        reason: Reason::Stale,
                    },
                },
                micros(a.latency),
            ),
            Err(client_sdk::Error::Busy { .. }) => (ActionResult::Busy, 0),
            Err(e) => (ActionResult::Failed(e.to_string()), 0),
        };
        if latency_us > 0 {
            t.acked += 1;
            if t.recent.len() == RECENT {
                t.recent.pop_front();
            }
            t.recent.push_back(latency_us);
        }
        t.done.push(ActionRecord {
            client: p.client,
            room: p.room,
            class: p.class,
            name: p.name,
            sent_us: p.sent_us,
            latency_us,
            result,
            gift: p.gift,
        });
    }

    /// Actions sent and not resolved yet.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Actions acked so far.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// p99 of the most recent ack latencies, µs.
    pub fn recent_p99(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.lock().recent.iter().copied().collect();
        v.sort_unstable();
        (!v.is_empty()).then(|| crate::scenario::verdict::stats::quantile(&v, 0.99))
    }

    /// Every action: resolved ones, and the rest as `Unresolved`. Later
    /// resolutions are ignored.
    pub fn finish(&self) -> Vec<ActionRecord> {
        let mut t = self.lock();
        t.closed = true;
        let mut pending: Vec<(u64, Pending)> = t.pending.drain().collect();
        pending.sort_by_key(|(token, _)| *token);
        let mut out = std::mem::take(&mut t.done);
        out.extend(pending.into_iter().map(|(_, p)| ActionRecord {
            client: p.client,
            room: p.room,
            class: p.class,
            name: p.name,
            sent_us: p.sent_us,
            latency_us: 0,
            result: ActionResult::Unresolved,
            gift: p.gift,
        }));
        out.sort_by_key(|a| a.sent_us);
        out
    }
}

/// Everything the run's tasks record into, shared behind an `Arc`.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    clock: RwLock<RefClock>,
    /// Actions from send to outcome.
    pub tracker: Tracker,
    seen: Mutex<SeenEvents>,
    conns: Mutex<Vec<ConnRecord>>,
    readings: Mutex<Vec<ClockReading>>,
    countdowns: Mutex<Vec<Countdown>>,
    battles: Mutex<Vec<BattleRecord>>,
    markers: Mutex<Vec<Marker>>,
    stalls: Mutex<Vec<Stall>>,
    notes: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// A recorder whose time zero is `start`, with the origin's clock.
    pub fn new(start: Instant, clock: RefClock) -> Recorder {
        Recorder {
            start,
            clock: RwLock::new(clock),
            tracker: Tracker::new(),
            seen: Mutex::default(),
            conns: Mutex::default(),
            readings: Mutex::default(),
            countdowns: Mutex::default(),
            battles: Mutex::default(),
            markers: Mutex::default(),
            stalls: Mutex::default(),
            notes: Mutex::default(),
        }
    }

    /// Time zero of the run.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// µs since time zero (0 before it).
    pub fn elapsed_us(&self) -> u64 {
        micros(self.start.elapsed())
    }

    /// The origin's clock.
    pub fn clock(&self) -> RefClock {
        *self.clock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Origin time now.
    pub fn origin_now(&self) -> ServerTime {
        self.clock().now()
    }

    /// Re-anchor the origin's clock (after a restart); returns how far the
    /// new origin's clock is from the old one's continuation, µs.
    pub fn reanchor(&self, clock: RefClock) -> i64 {
        let mut c = self.clock.write().unwrap_or_else(PoisonError::into_inner);
        let step = clock.now().diff_micros(c.now());
        *c = clock;
        step
    }

    /// The run time (µs) at which the origin's clock reads `t`.
    pub fn run_us(&self, t: ServerTime) -> u64 {
        let i = self.clock().instant(t);
        micros(i.saturating_duration_since(self.start))
    }

    /// A client received an event (its delivery is recorded by the caller).
    pub fn saw(&self, room: RoomId, e: &Event) {
        lock(&self.seen).handle(room, e);
    }

    /// A client's connection changed.
    pub fn conn(&self, client: u32, event: ConnEvent) {
        let t_us = self.elapsed_us();
        lock(&self.conns).push(ConnRecord {
            t_us,
            client,
            event,
        });
    }

    /// A clock reading.
    pub fn reading(&self, client: u32, error_us: i64) {
        let t_ms = (self.elapsed_us() / 1000) as u32;
        lock(&self.readings).push(ClockReading {
            t_ms,
            client,
            error_us,
        });
    }

    /// A countdown result.
    pub fn countdown(&self, c: Countdown) {
        lock(&self.countdowns).push(c);
    }

    /// A battle started.
    pub fn battle(&self, b: BattleRecord) {
        lock(&self.battles).push(b);
    }

    /// The battles started so far.
    pub fn battles(&self) -> Vec<BattleRecord> {
        lock(&self.battles).clone()
    }

    /// A timeline entry was played.
    pub fn marker(&self, m: Marker) {
        lock(&self.markers).push(m);
    }

    /// A sleep of `asked` that took `took`: recorded as a stall when it
    /// woke more than [`STALL_MS`] late.
    pub fn woke(&self, kind: StallKind, asked: Duration, took: Duration) {
        let late = took.saturating_sub(asked);
        if late > Duration::from_millis(STALL_MS) {
            let t_ms = (self.elapsed_us() / 1000) as u32;
            lock(&self.stalls).push(Stall {
                t_ms,
                late_ms: late.as_millis() as u32,
                kind,
            });
        }
    }

    /// Something worth telling in the report that is not a figure.
    pub fn note(&self, s: impl Into<String>) {
        lock(&self.notes).push(s.into());
    }

    /// Everything recorded, the tracker finished.
    pub fn take(&self) -> Recorded {
        Recorded {
            actions: self.tracker.finish(),
            seen: std::mem::take(&mut *lock(&self.seen)),
            conns: std::mem::take(&mut *lock(&self.conns)),
            readings: std::mem::take(&mut *lock(&self.readings)),
            countdowns: std::mem::take(&mut *lock(&self.countdowns)),
            battles: std::mem::take(&mut *lock(&self.battles)),
            markers: std::mem::take(&mut *lock(&self.markers)),
            stalls: std::mem::take(&mut *lock(&self.stalls)),
            notes: std::mem::take(&mut *lock(&self.notes)),
        }
    }
}

/// What a [`Recorder`] held at the end.
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
    pub origin_clock_steps: Vec<i64>,
}

/// A duration in whole microseconds (saturating).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::SessionId;

    fn pending(name: &'static str, sent_us: u64) -> Pending {
        Pending {
            client: 1,
            room: RoomId(1),
            class: Class::Gift,
            name,
            sent_us,
            gift: None,
        }
    }

    #[test]
    fn the_tracker_knows_what_never_resolved() {
        let t = Tracker::new();
        let a = t.begin(pending("a", 1));
        let b = t.begin(pending("b", 2));
        let c = t.begin(pending("c", 3));
        let id = ActionId {
            session: SessionId(9),
            n: 1,
        };
        t.end(
            a,
            &Ok(Acked {
                id,
                outcome: client_sdk::Outcome::Applied { seq: Seq(4) },
                latency: Duration::from_millis(3),
            }),
        );
        t.end(c, &Err(client_sdk::Error::Busy { id }));
        assert_eq!((t.in_flight(), t.acked()), (1, 1));
        assert_eq!(t.recent_p99(), Some(3_000));
        let all = t.finish();
        // A resolution after the end does not count.
        t.end(b, &Err(client_sdk::Error::Closed));
        let names: Vec<(&str, &ActionResult)> = all.iter().map(|a| (a.name, &a.result)).collect();
        assert_eq!(
            names,
            vec![
                ("a", &ActionResult::Applied { id, seq: Seq(4) }),
                ("b", &ActionResult::Unresolved),
                ("c", &ActionResult::Busy),
            ]
        );
    }

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
