use serde::{Deserialize, Serialize};
use std::fmt;

use crate::id::Seq;

/// The authoritative outcome of one action. A repeat of an action id gets the
/// very same outcome back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Outcome {
    /// Applied; `seq` is the last event it produced in the actor's room.
    Applied {
        /// Sequence number of the action's last event in its room.
        seq: Seq,
    },
    /// Refused; nothing changed.
    Rejected {
        /// Why.
        reason: Reason,
    },
}

impl Outcome {
    /// Whether the action took effect.
    pub fn is_applied(self) -> bool {
        matches!(self, Outcome::Applied { .. })
    }
}

/// Why an action was refused. Stable codes: clients branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Reason {
    /// The actor's role may not do this.
    NotAllowed,
    /// An argument is out of range (count 0, empty chat, bad duration…).
    BadArgument,
    /// The gift id is not in the catalogue.
    UnknownGift,
    /// The chat text is longer than allowed.
    TooLong,
    /// A PK invite to the room itself.
    SameRoom,
    /// A room involved already has a battle or a pending invite.
    Busy,
    /// There is no such pending invitation.
    NoInvite,
    /// The invitation or window has already expired.
    Expired,
    /// There is no such battle in this room.
    NoBattle,
    /// The battle is past the point where this is possible.
    BattleOver,
    /// The seat index does not exist.
    NoSuchSeat,
    /// The seat already has someone on it.
    SeatTaken,
    /// The seat is locked.
    SeatLocked,
    /// Every seat is taken or locked.
    SeatsFull,
    /// The user already sits on a seat.
    AlreadySeated,
    /// The user does not sit on a seat.
    NotSeated,
    /// The seat mode does not allow this (take in apply mode, for example).
    WrongMode,
    /// There is no such application.
    NoApplication,
    /// Too many pending applications or invitations.
    TooMany,
    /// A challenge is already running.
    ChallengeRunning,
    /// The action id is older than the session's remembered window: the
    /// origin cannot tell whether it was applied.
    Stale,
    /// The relay refused it: the token does not grant this room.
    NoGrant,
    /// The origin's rules hit an inconsistency (a bug); nothing changed.
    Internal,
    /// The room does not exist, and only its host (or an operator) may open
    /// it: nothing was created.
    NoRoom,
    /// The origin holds as many live rooms as it is configured for: a new
    /// room cannot be opened now. Nothing was created; try again later.
    Capacity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
