//! The hub's state: its settings, what it keeps per room, per client and
//! per waiting action, and the accessors the driver and tests read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use protocol::message::{ActionMsg, Actor, UpMsg};
use protocol::{ActionId, RoomId, RoomState, Seq, SessionId, UserId};

use crate::cache::RoomCache;
use crate::metrics::Metrics;

use super::out::{ClientId, Out, Output};

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events kept per room.
    pub ring: usize,
    /// Resend an action to the origin when its ack is this late.
    pub resend_after: Duration,
    /// Rooms that changed within this long get periodic heads.
    pub head_window: Duration,
    /// How often those heads go.
    pub head_every: Duration,
    /// Rooms one client may follow at once.
    pub rooms_per_client: usize,
    /// Actions of one client waiting for the origin.
    pub pending_per_client: usize,
    /// Actions waiting for the origin on the whole relay.
    pub pending_total: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ring: 2048,
            resend_after: Duration::from_millis(1_500),
            head_window: Duration::from_secs(3),
            head_every: Duration::from_millis(200),
            rooms_per_client: 16,
            pending_per_client: 256,
            pending_total: 65_536,
        }
    }
}

pub(super) struct Room {
    pub(super) cache: Option<RoomCache>,
    pub(super) clients: BTreeSet<ClientId>,
    /// Clients that joined before the cache existed, with their `since`.
    pub(super) waiting: Vec<(ClientId, Option<Seq>)>,
    /// Local connections per user, for presence.
    pub(super) users: BTreeMap<UserId, usize>,
    pub(super) changed_at: Instant,
    /// A `Subscribe { since, history }` is due on the link.
    pub(super) subscribe: Option<(Option<Seq>, Option<Seq>)>,
    /// Whether the origin has been told of the subscription on this link.
    pub(super) told_subscribed: bool,
    /// The users the origin has been told are present, on this link.
    pub(super) told_present: BTreeSet<UserId>,
}

impl Room {
    pub(super) fn new(now: Instant) -> Room {
        Room {
            cache: None,
            clients: BTreeSet::new(),
            waiting: Vec::new(),
            users: BTreeMap::new(),
            changed_at: now,
            subscribe: None,
            told_subscribed: false,
            told_present: BTreeSet::new(),
        }
    }
}

pub(super) struct Client {
    pub(super) session: SessionId,
    pub(super) user: UserId,
    pub(super) rooms: BTreeSet<RoomId>,
    /// When each room was last repaired for this client.
    pub(super) resynced: BTreeMap<RoomId, Instant>,
    /// Its actions waiting for the origin.
    pub(super) pending: BTreeSet<(UserId, ActionId)>,
    /// When this connection is a session's warm standby: the name of the
    /// relay the session is live on (told `RelayGone` when the origin
    /// loses it).
    pub(super) standby_for: Option<String>,
}

/// Least time between two repairs of one room for one client.
pub(super) const RESYNC_EVERY: Duration = Duration::from_millis(20);

/// Retry hint for an action refused because too many wait already (ms).
pub(super) const THROTTLE_FULL_MS: u32 = 200;

pub(super) struct Pending {
    pub(super) client: ClientId,
    pub(super) via_stream: bool,
    pub(super) actor: Actor,
    pub(super) msg: ActionMsg,
    /// When it reached the relay, for `ringside_action_ack_seconds`.
    pub(super) arrived: Instant,
    /// When it last went upstream; `None`: not yet.
    pub(super) sent_at: Option<Instant>,
    /// Waiting in the upstream queue.
    pub(super) queued: bool,
}

/// The relay's state.
pub struct Hub {
    pub(super) settings: Settings,
    pub(super) rooms: BTreeMap<RoomId, Room>,
    pub(super) clients: BTreeMap<ClientId, Client>,
    /// A session id is unique per user only: keyed by both, so another user
    /// presenting the same id can neither take a session over nor pre-empt
    /// one of its actions.
    pub(super) sessions: BTreeMap<(UserId, SessionId), ClientId>,
    pub(super) pending: BTreeMap<(UserId, ActionId), Pending>,
    pub(super) upstream: bool,
    pub(super) out: VecDeque<Output>,
    /// Rooms whose subscription or presence the origin must be told about.
    pub(super) dirty: BTreeSet<RoomId>,
    /// Rooms no client follows any more, with the users the origin still
    /// thinks present: they go offline, then the room is unsubscribed.
    pub(super) gone: BTreeMap<RoomId, BTreeSet<UserId>>,
    /// Actions to send upstream, in order.
    pub(super) actions: VecDeque<(UserId, ActionId)>,
    /// Membership messages staged for the link (counted as told already),
    /// sent before anything else; at most one room's worth at a time.
    pub(super) staged: VecDeque<UpMsg>,
    /// When the next round of heads is due (see `timers.rs`).
    pub(super) heads_at: Option<Instant>,
    /// When a room's cache last changed (any room's).
    pub(super) last_change: Option<Instant>,
    /// No action's ack is overdue before this (a lower bound: it may be
    /// earlier than the first real resend, never later).
    pub(super) resend_at: Option<Instant>,
    /// What the operator sees (atomic counters; they decide nothing).
    pub(super) metrics: Metrics,
}

impl Hub {
    /// An empty hub, upstream down.
    pub fn new(settings: Settings) -> Hub {
        Hub::with_metrics(settings, Metrics::default())
    }

    /// An empty hub that counts into `metrics`.
    pub fn with_metrics(settings: Settings, metrics: Metrics) -> Hub {
        Hub {
            metrics,
            settings,
            rooms: BTreeMap::new(),
            clients: BTreeMap::new(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            upstream: false,
            out: VecDeque::new(),
            dirty: BTreeSet::new(),
            gone: BTreeMap::new(),
            actions: VecDeque::new(),
            staged: VecDeque::new(),
            heads_at: None,
            last_change: None,
            resend_at: None,
        }
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The next output to deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether the origin is reachable.
    pub fn upstream(&self) -> bool {
        self.upstream
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Actions waiting for the origin.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The cached state of a room.
    pub fn room_state(&self, room: RoomId) -> Option<&RoomState> {
        self.rooms.get(&room)?.cache.as_ref().map(RoomCache::state)
    }

    pub(super) fn send_to(&mut self, client: ClientId, out: Out) {
        self.out.push_back(Output::Client(client, out));
    }
}
