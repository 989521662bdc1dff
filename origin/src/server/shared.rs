//! What the origin's tasks share: the messages between them ([`Input`] from
//! relay links to the authority task, [`Item`] from the authority task to
//! the commit thread and the publisher), where unloaded rooms are found
//! again ([`Store`]), and what every relay link holds ([`Shared`]).
//! (Kept apart from `mod.rs` so that the tasks depend on it, not on their
//! parent.)

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use net::token::TokenKey;
use protocol::message::{ActionMsg, Actor, UpMsg};
use protocol::{ActionId, Outcome, RoomId, RoomState, Seq, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rules::Record;
use crate::wal::{Archives, WalError};

/// Rooms unloaded whose archive the commit thread has not written yet: a
/// reload finds them here first, then in the archive directory.
pub(crate) type InFlight = Arc<std::sync::Mutex<std::collections::BTreeMap<RoomId, RoomState>>>;

/// Where unloaded rooms are found again.
#[derive(Clone)]
pub(crate) struct Store {
    pub archives: Archives,
    pub inflight: InFlight,
}

impl Store {
    /// An unloaded room's state, if it has one.
    pub(crate) fn load(&self, room: RoomId) -> Result<Option<RoomState>, WalError> {
        let pending = match self.inflight.lock() {
            Ok(map) => map.get(&room).cloned(),
            // A panic elsewhere while holding the lock: the map itself is
            // still a valid map (every change is one insert or remove).
            Err(poisoned) => poisoned.into_inner().get(&room).cloned(),
        };
        match pending {
            Some(state) => Ok(Some(state)),
            None => self.archives.read(room),
        }
    }
}

/// A relay connection's number, for routing within the origin.
pub(crate) type RelayId = u64;

/// From relay links to the authority task.
pub(crate) enum Input {
    /// A relay connected; `out` carries encoded frames to it.
    RelayUp {
        relay: RelayId,
        /// Its name (from its hello), as its clients know it.
        name: String,
        out: mpsc::Sender<Bytes>,
        conn: quinn::Connection,
    },
    /// A message from a relay (never `Hello` or `Ping`: the link handles those).
    Up { relay: RelayId, msg: UpMsg },
    /// A relay's connection ended; `lost` when it went silent (timed out or
    /// reset: the relay died or is cut off), not closed. `name` is the
    /// relay's (the publisher may have let go of the link already).
    RelayGone {
        relay: RelayId,
        name: String,
        lost: bool,
    },
    /// What is the committed state of a room?
    Query {
        room: RoomId,
        reply: oneshot::Sender<Option<RoomState>>,
    },
    /// An operator opens a room (in process: tools, topologies, tests).
    Open {
        room: RoomId,
        reply: oneshot::Sender<bool>,
    },
}

/// From the authority task, through the commit thread, to the publisher.
pub(crate) enum Item {
    /// Make durable, then publish its events and send its ack to `reply`.
    Record {
        record: Record,
        reply: Option<RelayId>,
    },
    /// Answer a repeated or unanswerable action (nothing to store).
    Answer {
        relay: RelayId,
        user: UserId,
        id: ActionId,
        outcome: Outcome,
    },
    /// The user is over the origin's rate: the action was not decided.
    Throttled {
        relay: RelayId,
        user: UserId,
        id: ActionId,
        retry_after_ms: u32,
    },
    /// A room left the rules' memory: archive it (after syncing every
    /// record before it), then let the publisher forget it.
    Unload(RoomState),
    /// After its archive is written: the publisher forgets the room.
    Unloaded(RoomId),
    /// A room came back from its archive: the publisher serves it again.
    Load(RoomState),
    /// Start sending a room to a relay.
    Subscribe {
        relay: RelayId,
        room: RoomId,
        since: Option<Seq>,
        history: Option<Seq>,
    },
    /// Stop sending a room to a relay.
    Unsubscribe { relay: RelayId, room: RoomId },
    /// A relay connected.
    RelayUp {
        relay: RelayId,
        /// Its name, as its clients know it.
        name: String,
        out: mpsc::Sender<Bytes>,
        conn: quinn::Connection,
    },
    /// A relay left; `lost`: its link went silent (the other relays are
    /// told, so the standbys of its clients move them at once). The name
    /// travels with it: the publisher drops a link whose queue is closed
    /// before this arrives, and a dead relay's often is.
    RelayGone {
        relay: RelayId,
        name: String,
        lost: bool,
    },
    /// Cluster mode: the node won `room` (rebuilt from its log, `state`
    /// `None` if never opened): the publisher serves it afresh.
    Won {
        room: RoomId,
        state: Option<RoomState>,
    },
    /// Cluster mode: this node does not serve `room`. To `relay` only (an
    /// answer to its Subscribe), or (`None`) to every subscriber, after
    /// which the publisher forgets the room (lost, released, failed).
    Moved {
        room: RoomId,
        owner: Option<String>,
        relay: Option<RelayId>,
    },
    /// Cluster mode: an action handed back undecided, to send to `owner`.
    Redirect {
        relay: RelayId,
        actor: Actor,
        msg: ActionMsg,
        owner: Option<String>,
    },
    /// A checkpoint of the rules, covering every record before it.
    Checkpoint(Vec<u8>),
    /// Answer with a room's committed state (after everything before it).
    Query {
        room: RoomId,
        reply: oneshot::Sender<Option<RoomState>>,
    },
}

/// State shared by every relay link.
pub(crate) struct Shared {
    pub name: String,
    pub clock: Clock,
    pub cluster: TokenKey,
    pub inputs: mpsc::Sender<Input>,
    pub relay_queue: usize,
    pub next_relay: AtomicU64,
    pub metrics: Metrics,
}

/// A count as a gauge value.
pub(crate) fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
