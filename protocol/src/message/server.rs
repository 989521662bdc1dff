use serde::{Deserialize, Serialize};

use crate::class::Class;
use crate::id::{ActionId, RoomId, Seq, SessionId};
use crate::room::{Event, Outcome, Reason, RoomState};
use crate::time::ServerTime;

use super::error::ErrorCode;

/// The relay's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Welcome {
    /// The session, as accepted.
    pub session: SessionId,
    /// The relay's name (for logs and reports).
    pub relay: String,
    /// The relay's region.
    pub region: String,
    /// Whether the relay can reach the origin right now.
    pub upstream: bool,
}

/// Relay → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum ServerMsg {
    /// The session is open.
    Welcome(Welcome),
    /// The whole state of a room (on a stream).
    Snapshot {
        /// The room.
        room: RoomId,
        /// Its state at `state.seq`.
        state: Box<RoomState>,
    },
    /// Events of a room, in seq order, consecutive.
    Events {
        /// The room.
        room: RoomId,
        /// The events.
        events: Vec<Event>,
    },
    /// The latest seq of a room, sent when it is quiet so that a lost last
    /// event is noticed.
    Head {
        /// The room.
        room: RoomId,
        /// Its latest seq.
        seq: Seq,
    },
    /// A join was refused.
    JoinFailed {
        /// The room.
        room: RoomId,
        /// Why (`NoGrant`, typically).
        reason: Reason,
    },
    /// The authoritative outcome of an action.
    Ack {
        /// The action.
        id: ActionId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Answer to `Ping`.
    Pong {
        /// From the ping.
        nonce: u64,
        /// The relay's estimate of origin time when it answered.
        origin_time: ServerTime,
    },
    /// This relay is going away: move to one of `alternatives` now.
    GoAway {
        /// Other relays' addresses (`host:port`), best first.
        alternatives: Vec<String>,
    },
    /// Whether the relay can reach the origin. While it cannot, actions wait:
    /// nothing is acked until the origin has committed it.
    Upstream {
        /// Reachable or not.
        connected: bool,
    },
    /// The action was not forwarded: its sender (this user, across all of
    /// its connections) is over its rate. Not an outcome: nothing happened;
    /// send the same action (same id) again, no sooner than `retry_after_ms`.
    Throttled {
        /// The action.
        id: ActionId,
        /// How long to wait before sending it again, milliseconds.
        retry_after_ms: u32,
    },
    /// A fatal error; the relay closes the connection after it.
    Error {
        /// Machine-readable code (also the QUIC close code).
        code: ErrorCode,
        /// For humans.
        message: String,
    },
    /// The origin lost its link to the relay named `relay` (sent to the
    /// standby connections of the sessions live there, see
    /// [`super::ClientMsg::Standby`]): resume on this connection now.
    RelayGone {
        /// The lost relay's name.
        relay: String,
    },
}

impl ServerMsg {
    /// Priority class.
    pub fn class(&self) -> Class {
        match self {
            ServerMsg::Events { events, .. } => {
                // A batch is as urgent as its most urgent event.
                (events.iter().map(Event::class).min()).unwrap_or(Class::Ambient)
            }
            ServerMsg::Head { .. } => Class::Ambient,
            _ => Class::Session,
        }
    }
}
