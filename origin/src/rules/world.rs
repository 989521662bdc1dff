//! What a transaction reads and changes ([`World`]): the live rooms, the
//! timers derived from them, the id counters and the memory of closed
//! invitations, with the rules' configuration. The [`Authority`](super::Authority)
//! owns one; a [`Txn`](super::txn::Txn) borrows it. Timers are derived from
//! room state alone ([`next_deadline`]), so nothing about them is stored.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::room::{BattlePhase, PkInviteEnd};
use protocol::{BattleId, Event, EventKind, RoomId, RoomState, ServerTime, UserId};

use super::config::Config;

/// The rooms and what is derived from them.
#[derive(Debug, Clone)]
pub(super) struct World {
    pub(super) config: Config,
    /// Live (loaded) rooms.
    pub(super) rooms: BTreeMap<RoomId, RoomState>,
    /// `(next deadline, room)` for every room that has one.
    pub(super) deadlines: BTreeSet<(ServerTime, RoomId)>,
    /// Each room's entry in `deadlines`.
    pub(super) room_deadline: BTreeMap<RoomId, ServerTime>,
    /// Recently closed PK invitations and how they ended, oldest first.
    pub(super) closed_invites: VecDeque<(BattleId, PkInviteEnd)>,
    pub(super) next_battle: u64,
    pub(super) next_challenge: u64,
}

impl World {
    /// No rooms.
    pub(super) fn new(config: Config) -> World {
        World {
            config,
            rooms: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            room_deadline: BTreeMap::new(),
            closed_invites: VecDeque::new(),
            next_battle: 1,
            next_challenge: 1,
        }
    }

    /// Keep derived indexes (ids, closed invitations) in step with an event;
    /// used live and on replay, so the two never differ.
    pub(super) fn observe(&mut self, event: &Event) {
        match &event.kind {
            EventKind::PkInvited(i) => self.next_battle = self.next_battle.max(i.battle.0 + 1),
            EventKind::PkInviteClosed { battle, reason }
                if !self.closed_invites.iter().any(|(b, _)| b == battle) =>
            {
                self.closed_invites.push_back((*battle, *reason));
                if self.closed_invites.len() > self.config.closed_invite_memory {
                    self.closed_invites.pop_front();
                }
            }
            EventKind::ChallengeStarted(c) => {
                self.next_challenge = self.next_challenge.max(c.id.0 + 1)
            }
            _ => {}
        }
    }

    pub(super) fn refresh_deadline(&mut self, room: RoomId) {
        let next = (self.rooms.get(&room)).and_then(|s| next_deadline(&self.config, s));
        self.set_deadline(room, next);
    }

    pub(super) fn set_deadline(&mut self, room: RoomId, next: Option<ServerTime>) {
        if let Some(old) = self.room_deadline.remove(&room) {
            self.deadlines.remove(&(old, room));
        }
        if let Some(t) = next {
            self.room_deadline.insert(room, t);
            self.deadlines.insert((t, room));
        }
    }
}

/// Something in a room that happens at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    /// The pending PK invitation lapses.
    PkInvite,
    /// The battle moves on (bell, settlement, close).
    Battle,
    /// A seat invitation lapses.
    SeatInvite(UserId),
    /// A disconnected guest's hold ends.
    SeatHold(u8),
    /// The challenge's deadline.
    Challenge,
}

pub(super) fn items<'a>(
    config: &'a Config,
    s: &'a RoomState,
) -> impl Iterator<Item = (ServerTime, Due)> + 'a {
    let invite = s.pk_invite.as_ref().map(|i| (i.expires_at, Due::PkInvite));
    let battle = s.battle.as_ref().map(|b| {
        let at = match b.phase {
            BattlePhase::Running => b.ends_at,
            BattlePhase::Grace => b.settles_at,
            BattlePhase::Punishment { until } => until,
        };
        (at, Due::Battle)
    });
    let seat_invites = (s.seats.invites.iter()).map(|i| (i.expires_at, Due::SeatInvite(i.user)));
    let holds = s
        .seats
        .seats
        .iter()
        .enumerate()
        .filter_map(move |(n, seat)| {
            let since = seat.away_since?;
            Some((since + config.seat_hold, Due::SeatHold(n as u8)))
        });
    let challenge = s.challenge.as_ref().map(|c| (c.ends_at, Due::Challenge));
    (invite.into_iter())
        .chain(battle)
        .chain(seat_invites)
        .chain(holds)
        .chain(challenge)
}

/// The room's next deadline.
pub(super) fn next_deadline(config: &Config, state: &RoomState) -> Option<ServerTime> {
    items(config, state).map(|(t, _)| t).min()
}
