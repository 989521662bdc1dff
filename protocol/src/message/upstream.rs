use serde::{Deserialize, Serialize};

use crate::class::Class;
use crate::id::{RoomId, Seq, UserId};
use crate::room::Grant;

use super::client::ActionMsg;

/// Who performs an action, as the relay verified it from the user's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Actor {
    /// The user.
    pub user: UserId,
    /// What its token grants in the action's room.
    pub grant: Grant,
}

/// Relay → origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum UpMsg {
    /// First message: the relay proves it belongs to the deployment.
    Hello {
        /// [`super::PROTOCOL_VERSION`].
        version: u16,
        /// The relay's name.
        relay: String,
        /// Proof of membership (a token signed with the cluster secret).
        proof: Vec<u8>,
    },
    /// Send this room's events from `since` on (or a snapshot), and keep sending.
    Subscribe {
        /// The room.
        room: RoomId,
        /// The relay's last seq for it, if it has one.
        since: Option<Seq>,
        /// With a snapshot, also send the recent events after this seq (a
        /// relay with a cold cache serving a client that resumes from it).
        history: Option<Seq>,
    },
    /// Stop sending this room.
    Unsubscribe {
        /// The room.
        room: RoomId,
    },
    /// A client's action.
    Action {
        /// Who, as verified by the relay.
        actor: Actor,
        /// The action.
        msg: ActionMsg,
    },
    /// A user connected to or disconnected from this relay in a room.
    Presence {
        /// The room.
        room: RoomId,
        /// The user.
        user: UserId,
        /// Connected or not.
        online: bool,
    },
    /// Clock exchange.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
}

impl UpMsg {
    /// Priority class.
    pub fn class(&self) -> Class {
        match self {
            UpMsg::Action { msg, .. } => msg.action.class(),
            UpMsg::Presence { .. } => Class::Ambient,
            _ => Class::Session,
        }
    }
}
