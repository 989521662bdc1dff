use crate::class::Class;
use crate::id::{ActionId, BattleId, ChallengeId, GiftId, Seq, UserId};
use crate::time::ServerTime;
use serde::{Deserialize, Serialize};

use super::action::SeatMode;
use super::state::{Battle, BattleResult, Challenge, PkInvite};

/// One entry of a room's ordered log, written only by the origin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Event {
    /// Position in the room's log.
    pub seq: Seq,
    /// Origin time at which it happened.
    pub at: ServerTime,
    /// The action that caused it; `None` for timers and presence.
    pub cause: Option<ActionId>,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// Priority class (for send queues).
    pub fn class(&self) -> Class {
        self.kind.class()
    }
}

/// Why a PK invitation ended without a battle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum PkInviteEnd {
    /// The invited host said no.
    Rejected,
    /// The inviting host withdrew it.
    Cancelled,
    /// Nobody answered in time.
    Expired,
}

/// Why a seat invitation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum InviteEnd {
    /// The user accepted (a `SeatTaken` follows).
    Accepted,
    /// The user declined.
    Declined,
    /// The host withdrew it.
    Cancelled,
    /// Nobody answered in time.
    Expired,
    /// The user got a seat another way.
    Seated,
}

/// Why a seat application ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum ApplicationEnd {
    /// The host approved (a `SeatTaken` follows).
    Approved,
    /// The host denied it.
    Denied,
    /// The applicant withdrew it.
    Withdrawn,
    /// The applicant got a seat another way.
    Seated,
}

/// Why a guest left a seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum SeatLeaveReason {
    /// The guest left.
    Left,
    /// The host removed the guest.
    Kicked,
    /// The guest stayed disconnected past the hold grace.
    Released,
}

/// What happened. Scores and counters carry totals, not only deltas, so a
/// client that joins late reads them straight off any event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum EventKind {
    /// The room's first event: it gets `seats` seats.
    Opened {
        /// Number of co-host seats.
        seats: u8,
    },
    /// A gift, and the totals it moved.
    Gift {
        /// Sender.
        from: UserId,
        /// Catalogue item.
        gift: GiftId,
        /// How many.
        count: u32,
        /// Catalogue value × count.
        value: u64,
        /// The room's all-time gift value after this gift.
        room_total: u64,
        /// Set when the gift counted in a battle: the battle and both scores after it.
        pk: Option<(BattleId, [u64; 2])>,
    },
    /// A comment.
    Chat {
        /// Author.
        from: UserId,
        /// Text.
        text: String,
    },
    /// Likes, and the room's total after them.
    Likes {
        /// Who liked.
        from: UserId,
        /// How many likes this event adds.
        count: u32,
        /// The room's all-time likes after them.
        total: u64,
    },
    /// A PK invitation is pending (seen by both rooms).
    PkInvited(PkInvite),
    /// A PK invitation ended without a battle.
    PkInviteClosed {
        /// The invitation.
        battle: BattleId,
        /// Why.
        reason: PkInviteEnd,
    },
    /// A battle started (seen by both rooms).
    PkStarted(Battle),
    /// The other room's gift moved the scores.
    PkScore {
        /// The battle.
        battle: BattleId,
        /// Both scores after the gift.
        scores: [u64; 2],
    },
    /// The bell: the battle's `ends_at` passed; the grace began.
    PkBell {
        /// The battle.
        battle: BattleId,
    },
    /// The battle is decided.
    PkSettled {
        /// The result.
        result: BattleResult,
        /// End of the punishment phase (the battle closes then).
        punishment_until: ServerTime,
    },
    /// The battle is over and gone from the room.
    PkClosed {
        /// The battle.
        battle: BattleId,
    },
    /// The seat mode changed.
    SeatModeSet {
        /// The new mode.
        mode: SeatMode,
    },
    /// The host invited a user to a seat.
    SeatInvited {
        /// Who.
        user: UserId,
        /// Which seat, if any.
        seat: Option<u8>,
        /// When it lapses.
        expires_at: ServerTime,
    },
    /// A seat invitation ended.
    SeatInviteClosed {
        /// Who was invited.
        user: UserId,
        /// Why it ended.
        reason: InviteEnd,
    },
    /// A viewer applied for a seat.
    SeatApplied {
        /// The applicant.
        user: UserId,
    },
    /// A seat application ended.
    SeatApplicationClosed {
        /// The applicant.
        user: UserId,
        /// Why it ended.
        reason: ApplicationEnd,
    },
    /// A user sat down.
    SeatTaken {
        /// Seat index.
        seat: u8,
        /// Who.
        user: UserId,
    },
    /// A user left a seat.
    SeatLeft {
        /// Seat index.
        seat: u8,
        /// Who.
        user: UserId,
        /// Why.
        reason: SeatLeaveReason,
    },
    /// A seat was muted or unmuted.
    SeatMuted {
        /// Seat index.
        seat: u8,
        /// The new mute state.
        mute: super::state::Mute,
    },
    /// A seat was locked or unlocked.
    SeatLocked {
        /// Seat index.
        seat: u8,
        /// The new lock state.
        locked: bool,
    },
    /// A seated guest disconnected; the seat is held.
    SeatAway {
        /// Seat index.
        seat: u8,
        /// The guest.
        user: UserId,
    },
    /// A held guest came back.
    SeatBack {
        /// Seat index.
        seat: u8,
        /// The guest.
        user: UserId,
    },
    /// A timed engagement event started.
    ChallengeStarted(Challenge),
    /// A challenge moved towards its goal.
    ChallengeProgress {
        /// The challenge.
        id: ChallengeId,
        /// Progress after the change (a total).
        progress: u64,
    },
    /// A challenge ended: reached (as soon as it is) or failed (at its deadline).
    ChallengeEnded {
        /// The challenge.
        id: ChallengeId,
        /// Whether the goal was reached.
        success: bool,
        /// Final progress.
        progress: u64,
    },
}

impl EventKind {
    /// Priority class (for send queues).
    pub fn class(&self) -> Class {
        match self {
            EventKind::Gift { .. } | EventKind::PkScore { .. } => Class::Gift,
            EventKind::Chat { .. } => Class::Chat,
            EventKind::Likes { .. } => Class::Ambient,
            _ => Class::Authority,
        }
    }

    /// The battle this event belongs to, if any.
    pub fn battle_id(&self) -> Option<BattleId> {
        match self {
            EventKind::PkInvited(i) => Some(i.battle),
            EventKind::PkStarted(b) => Some(b.id),
            EventKind::PkInviteClosed { battle, .. }
            | EventKind::PkScore { battle, .. }
            | EventKind::PkBell { battle }
            | EventKind::PkClosed { battle } => Some(*battle),
            EventKind::PkSettled { result, .. } => Some(result.battle),
            EventKind::Gift { pk, .. } => pk.map(|(b, _)| b),
            _ => None,
        }
    }
}
