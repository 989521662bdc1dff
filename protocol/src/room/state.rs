use crate::id::{BattleId, ChallengeId, RoomId, Seq, UserId};
use crate::time::ServerTime;
use serde::{Deserialize, Serialize};

use super::action::{Goal, SeatMode};

/// The most seats a room can have (a seat index is a `u8`).
pub const MAX_SEATS: usize = 32;

/// Everything a room is, at one `seq`. Built only by [`RoomState::apply`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct RoomState {
    /// Which room.
    pub room: RoomId,
    /// The last event applied; `Seq(0)` before the first.
    pub seq: Seq,
    /// Origin time of the last event applied.
    pub at: ServerTime,
    /// All-time value of gifts sent in this room.
    pub gift_value: u64,
    /// All-time number of gifts (counting each gift's `count`).
    pub gift_count: u64,
    /// All-time likes.
    pub likes: u64,
    /// Number of chat messages.
    pub chats: u64,
    /// A pending PK invitation this room sends or receives (at most one).
    pub pk_invite: Option<PkInvite>,
    /// The battle this room is in (at most one), until it closes.
    pub battle: Option<Battle>,
    /// The outcome of the last battle that closed, for display.
    pub last_result: Option<BattleResult>,
    /// Co-host seats.
    pub seats: Seats,
    /// The running timed engagement event, if any.
    pub challenge: Option<Challenge>,
}

impl RoomState {
    /// A room before its first event (`Opened` gives it its seats).
    pub fn new(room: RoomId) -> RoomState {
        RoomState {
            room,
            seq: Seq(0),
            at: ServerTime::ZERO,
            gift_value: 0,
            gift_count: 0,
            likes: 0,
            chats: 0,
            pk_invite: None,
            battle: None,
            last_result: None,
            seats: Seats::default(),
            challenge: None,
        }
    }

    /// Whether the room has had its `Opened` event.
    pub fn is_open(&self) -> bool {
        self.seq > Seq(0)
    }
}

/// A PK invitation, as both rooms see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct PkInvite {
    /// The battle this becomes if accepted.
    pub battle: BattleId,
    /// The inviting room.
    pub from: RoomId,
    /// The invited room.
    pub to: RoomId,
    /// The inviting host.
    pub by: UserId,
    /// Battle length in seconds once started.
    pub duration_secs: u32,
    /// When the invitation lapses unanswered.
    pub expires_at: ServerTime,
}

/// Where a battle is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum BattlePhase {
    /// Gifts count, until `ends_at`.
    Running,
    /// The bell rang at `ends_at`; gifts stamped before it may still arrive
    /// until `settles_at`.
    Grace,
    /// Settled; the loser's punishment runs until `until`, then it closes.
    Punishment {
        /// When the battle closes.
        until: ServerTime,
    },
}

/// A PK battle, identical in both of its rooms. Index 0 of `rooms` and
/// `scores` is the inviting room, index 1 the invited one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Battle {
    /// Battle id (the invitation's).
    pub id: BattleId,
    /// `[inviter, invitee]`.
    pub rooms: [RoomId; 2],
    /// Gift value counted for each side.
    pub scores: [u64; 2],
    /// When it started (the accept).
    pub started_at: ServerTime,
    /// The bell: gifts stamped at or after this do not count.
    pub ends_at: ServerTime,
    /// End of the settlement grace after the bell.
    pub settles_at: ServerTime,
    /// Where it is now.
    pub phase: BattlePhase,
    /// Set once settled.
    pub result: Option<BattleResult>,
}

impl Battle {
    /// The side (0 or 1) that `room` plays, if it plays at all.
    pub fn side_of(&self, room: RoomId) -> Option<usize> {
        self.rooms.iter().position(|r| *r == room)
    }

    /// The other room of the battle, seen from `room`.
    pub fn peer_of(&self, room: RoomId) -> Option<RoomId> {
        self.side_of(room).map(|s| self.rooms[1 - s])
    }
}

/// How a battle ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct BattleResult {
    /// The battle.
    pub battle: BattleId,
    /// `[inviter, invitee]`, as in [`Battle::rooms`].
    pub rooms: [RoomId; 2],
    /// Final scores.
    pub scores: [u64; 2],
    /// The winning room; `None` for a draw.
    pub winner: Option<RoomId>,
    /// Set when a host gave up.
    pub forfeited_by: Option<RoomId>,
}

/// Co-host seats and the queues in front of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Seats {
    /// How viewers get a seat.
    pub mode: SeatMode,
    /// The seats, index 0 first.
    pub seats: Vec<Seat>,
    /// Pending applications, oldest first.
    pub applications: Vec<UserId>,
    /// Pending host invitations, oldest first.
    pub invites: Vec<SeatInvite>,
}

impl Seats {
    /// The seat index `user` sits on.
    pub fn seat_of(&self, user: UserId) -> Option<usize> {
        self.seats.iter().position(|s| s.user == Some(user))
    }

    /// The first seat that is neither taken nor locked.
    pub fn first_free(&self) -> Option<usize> {
        self.seats.iter().position(Seat::is_free)
    }

    /// The pending invitation for `user`.
    pub fn invite_for(&self, user: UserId) -> Option<&SeatInvite> {
        self.invites.iter().find(|i| i.user == user)
    }
}

/// Who muted a seat. A guest can lift only its own mute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub enum Mute {
    /// Audible.
    #[default]
    Off,
    /// The guest muted itself.
    BySelf,
    /// The host (or an operator) muted the seat.
    ByHost,
}

/// One co-host seat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Seat {
    /// Who sits here.
    pub user: Option<UserId>,
    /// Mute state.
    pub mute: Mute,
    /// A locked seat cannot be taken.
    pub locked: bool,
    /// Set while the guest is disconnected: the seat is held until
    /// `away_since + hold grace`, then released.
    pub away_since: Option<ServerTime>,
}

impl Seat {
    /// Empty and unlocked.
    pub fn is_free(&self) -> bool {
        self.user.is_none() && !self.locked
    }
}

/// A host's invitation of a user to a seat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct SeatInvite {
    /// Who is invited.
    pub user: UserId,
    /// The seat offered, or `None` for the first free one.
    pub seat: Option<u8>,
    /// When it lapses.
    pub expires_at: ServerTime,
}

/// A timed engagement event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct Challenge {
    /// Challenge id.
    pub id: ChallengeId,
    /// What the room must reach.
    pub goal: Goal,
    /// Who started it.
    pub by: UserId,
    /// When it started.
    pub started_at: ServerTime,
    /// Its deadline.
    pub ends_at: ServerTime,
    /// Progress towards `goal.target()`.
    pub progress: u64,
}
