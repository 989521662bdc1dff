use serde::{Deserialize, Serialize};

use crate::class::Class;
use crate::id::{ActionId, RoomId, UserId};
use crate::room::{Event, Outcome, RoomState};
use crate::time::ServerTime;

use super::client::ActionMsg;
use super::error::ErrorCode;
use super::upstream::Actor;

/// Origin → relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum DownMsg {
    /// The relay is accepted.
    Welcome {
        /// The origin's name.
        origin: String,
    },
    /// A room's whole state (answer to a subscribe that cannot be served by events).
    Snapshot {
        /// The room.
        room: RoomId,
        /// Its state.
        state: Box<RoomState>,
        /// The events that led up to it (consecutive, ending at
        /// `state.seq`), as far back as asked and available.
        recent: Vec<Event>,
    },
    /// Committed events of a subscribed room, consecutive.
    Events {
        /// The room.
        room: RoomId,
        /// The events.
        events: Vec<Event>,
    },
    /// The committed outcome of an action.
    Ack {
        /// Whose action (a session id is only unique per user).
        user: UserId,
        /// The action.
        id: ActionId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// The origin's backstop: this user is over its action rate across all
    /// relays, so the action was not decided. Nothing happened; the relay
    /// passes it on as [`super::ServerMsg::Throttled`].
    Throttled {
        /// Whose action.
        user: UserId,
        /// The action.
        id: ActionId,
        /// How long to wait before sending it again, milliseconds.
        retry_after_ms: u32,
    },
    /// Answer to `Ping`.
    Pong {
        /// From the ping.
        nonce: u64,
        /// Origin time when it answered.
        origin_time: ServerTime,
    },
    /// A fatal error; the origin closes the connection after it.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// For humans.
        message: String,
    },
    /// Cluster mode: this origin node does not serve `room` (an answer to
    /// a `Subscribe`, or sent to its subscribers when the node loses the
    /// room). `owner` is the node the placement names, if one is known
    /// alive; the relay subscribes there from its last seq.
    Moved {
        /// The room.
        room: RoomId,
        /// The node that should serve it (its `Welcome` name).
        owner: Option<String>,
    },
    /// Cluster mode: an action for a room this node does not serve, handed
    /// back undecided (nothing was applied or remembered): the relay sends
    /// it to `owner` (or holds it until the room has one).
    Redirect {
        /// The actor, as the relay verified it.
        actor: Actor,
        /// The action, unchanged.
        msg: ActionMsg,
        /// The node that should decide it (its `Welcome` name).
        owner: Option<String>,
    },
    /// The origin lost its link to another relay, the one named `relay`
    /// (its link went silent: the relay died or is cut off). Relays pass it
    /// on to the standby connections of the sessions live there.
    RelayGone {
        /// The lost relay's name.
        relay: String,
    },
    /// Cluster mode: this origin node has just won `rooms` (sent to every
    /// relay linked to it). A relay whose room waits for a node, or is
    /// routed to another, routes it here at once instead of waiting for
    /// its retry (a dead node's rooms resume as soon as they are won).
    Serving {
        /// The rooms won.
        rooms: Vec<RoomId>,
    },
}

impl DownMsg {
    /// Priority class.
    pub fn class(&self) -> Class {
        match self {
            DownMsg::Events { events, .. } => {
                (events.iter().map(Event::class).min()).unwrap_or(Class::Ambient)
            }
            _ => Class::Session,
        }
    }
}
