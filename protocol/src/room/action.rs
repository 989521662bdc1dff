use crate::class::Class;
use crate::id::{BattleId, GiftId, RoomId, UserId};
use serde::{Deserialize, Serialize};

/// Longest chat message, in bytes of UTF-8.
pub const MAX_CHAT_BYTES: usize = 500;

/// What a user's token grants in a room. Whether a user is a *seated guest*
/// is not a grant: it follows from the room's seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Grant {
    /// Watches, gifts, chats, likes; may apply for or take a seat.
    Viewer,
    /// Owns the room: PK battles, seats, challenges.
    Host,
    /// The platform's staff: may start challenges and moderate seats.
    Operator,
}

/// How a viewer gets onto a seat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum SeatMode {
    /// Any viewer may take a free, unlocked seat.
    FreeTake,
    /// Viewers apply; the host approves or denies. (Host invites work in both.)
    #[default]
    ApplyToTake,
}

/// The goal of a timed engagement event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Goal {
    /// Gifts worth at least this much (catalogue value × count) in the window.
    GiftValue(u64),
    /// At least this many gifts (counting `count`) in the window.
    GiftCount(u64),
    /// At least this many likes in the window.
    Likes(u64),
}

impl Goal {
    /// The target number.
    pub fn target(self) -> u64 {
        match self {
            Goal::GiftValue(n) | Goal::GiftCount(n) | Goal::Likes(n) => n,
        }
    }
}

/// Something a user asks a room to do. The origin decides; see its rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Action {
    /// Send `count` of catalogue item `gift` to the room's host.
    Gift {
        /// Catalogue item.
        gift: GiftId,
        /// How many (at least 1).
        count: u32,
    },
    /// Post a comment.
    Chat {
        /// At most [`MAX_CHAT_BYTES`].
        text: String,
    },
    /// Like the stream `count` times (the SDK coalesces taps).
    Like {
        /// At least 1.
        count: u32,
    },
    /// Host: invite the host of room `to` to a PK battle of `duration_secs`.
    PkInvite {
        /// The other room.
        to: RoomId,
        /// Battle length in seconds.
        duration_secs: u32,
    },
    /// Invited host: accept.
    PkAccept {
        /// The invitation's battle id.
        battle: BattleId,
    },
    /// Invited host: reject.
    PkReject {
        /// The invitation's battle id.
        battle: BattleId,
    },
    /// Inviting host: withdraw the invitation.
    PkCancel {
        /// The invitation's battle id.
        battle: BattleId,
    },
    /// Either host: give up a running battle; the other side wins.
    PkForfeit {
        /// The battle.
        battle: BattleId,
    },
    /// Host: change how viewers get seats.
    SeatMode {
        /// The new mode.
        mode: SeatMode,
    },
    /// Host: invite a user to a seat (a given one, or the first free).
    SeatInvite {
        /// Who.
        user: UserId,
        /// Which seat, if it matters.
        seat: Option<u8>,
    },
    /// Host: withdraw a seat invitation.
    SeatCancelInvite {
        /// Who was invited.
        user: UserId,
    },
    /// Invited user: accept and sit down.
    SeatAccept,
    /// Invited user: decline.
    SeatDecline,
    /// Viewer: ask the host for a seat.
    SeatApply,
    /// Applicant: withdraw the application.
    SeatWithdraw,
    /// Host: approve an application; the user takes the first free seat.
    SeatApprove {
        /// The applicant.
        user: UserId,
    },
    /// Host: deny an application.
    SeatDeny {
        /// The applicant.
        user: UserId,
    },
    /// Viewer (free-take mode): sit on a seat.
    SeatTake {
        /// Which seat.
        seat: u8,
    },
    /// Host: remove whoever sits on a seat.
    SeatKick {
        /// Which seat.
        seat: u8,
    },
    /// Host (any seat) or guest (own seat): mute or unmute.
    SeatMute {
        /// Which seat.
        seat: u8,
        /// Mute (true) or unmute (false).
        muted: bool,
    },
    /// Host: lock an empty seat, or unlock a locked one.
    SeatLock {
        /// Which seat.
        seat: u8,
        /// Lock (true) or unlock (false).
        locked: bool,
    },
    /// Guest: leave the seat.
    SeatLeave,
    /// Host or operator: start a timed engagement event.
    ChallengeStart {
        /// What the room must reach.
        goal: Goal,
        /// How long the room has, in seconds.
        window_secs: u32,
    },
}

impl Action {
    /// The priority class of this action and its ack.
    pub fn class(&self) -> Class {
        match self {
            Action::Gift { .. } => Class::Gift,
            Action::Chat { .. } => Class::Chat,
            Action::Like { .. } => Class::Ambient,
            _ => Class::Authority,
        }
    }

    /// A short name for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Gift { .. } => "gift",
            Action::Chat { .. } => "chat",
            Action::Like { .. } => "like",
            Action::PkInvite { .. } => "pk_invite",
            Action::PkAccept { .. } => "pk_accept",
            Action::PkReject { .. } => "pk_reject",
            Action::PkCancel { .. } => "pk_cancel",
            Action::PkForfeit { .. } => "pk_forfeit",
            Action::SeatMode { .. } => "seat_mode",
            Action::SeatInvite { .. } => "seat_invite",
            Action::SeatCancelInvite { .. } => "seat_cancel_invite",
            Action::SeatAccept => "seat_accept",
            Action::SeatDecline => "seat_decline",
            Action::SeatApply => "seat_apply",
            Action::SeatWithdraw => "seat_withdraw",
            Action::SeatApprove { .. } => "seat_approve",
            Action::SeatDeny { .. } => "seat_deny",
            Action::SeatTake { .. } => "seat_take",
            Action::SeatKick { .. } => "seat_kick",
            Action::SeatMute { .. } => "seat_mute",
            Action::SeatLock { .. } => "seat_lock",
            Action::SeatLeave => "seat_leave",
            Action::ChallengeStart { .. } => "challenge_start",
        }
    }
}
