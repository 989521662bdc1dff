//! What every rule file works with: the actor's role resolved against the
//! room ([`Who`]), and one input's changes as a transaction ([`Txn`]):
//! events applied as they are made, committed or rolled back together.
//! (Kept apart from `mod.rs` so that the rule files depend on it, not on
//! their parent.)

use std::collections::BTreeMap;

use protocol::message::Actor;
use protocol::room::Grant;
use protocol::{
    ActionId, BattleId, Event, EventKind, Reason, RoomId, RoomState, Seq, ServerTime, UserId,
};

use super::config::Config;
use super::world::World;

/// The actor's effective role in the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Host,
    Operator,
    Guest(usize),
    Viewer,
}

/// An actor with its role resolved against the room's state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who {
    pub user: UserId,
    pub role: Role,
}

impl Who {
    pub(super) fn new(state: &RoomState, actor: Actor) -> Who {
        let role = match actor.grant {
            Grant::Host => Role::Host,
            Grant::Operator => Role::Operator,
            Grant::Viewer => match state.seats.seat_of(actor.user) {
                Some(seat) => Role::Guest(seat),
                None => Role::Viewer,
            },
        };
        Who {
            user: actor.user,
            role,
        }
    }

    pub(super) fn is_host(self) -> bool {
        self.role == Role::Host
    }

    /// Host or operator: may moderate.
    pub(super) fn is_staff(self) -> bool {
        matches!(self.role, Role::Host | Role::Operator)
    }

    pub(super) fn require(ok: bool) -> Result<(), Reason> {
        if ok {
            Ok(())
        } else {
            Err(Reason::NotAllowed)
        }
    }
}

/// One input's changes, applied as they are made and undone together if the
/// input is refused: every event goes through [`RoomState::apply`], the same
/// code every mirror runs.
pub(crate) struct Txn<'a> {
    world: &'a mut World,
    now: ServerTime,
    cause: Option<ActionId>,
    /// Rooms as they were before this input touched them.
    saved: BTreeMap<RoomId, Option<RoomState>>,
    events: Vec<(RoomId, Event)>,
}

impl<'a> Txn<'a> {
    pub(super) fn new(world: &'a mut World, now: ServerTime, cause: Option<ActionId>) -> Self {
        Txn {
            world,
            now,
            cause,
            saved: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    pub fn now(&self) -> ServerTime {
        self.now
    }

    pub fn config(&self) -> &Config {
        &self.world.config
    }

    /// A room's state; the room must exist (see [`Txn::open`]).
    pub fn state(&self, room: RoomId) -> Result<&RoomState, Reason> {
        self.world.rooms.get(&room).ok_or(Reason::Internal)
    }

    pub(super) fn seq(&self, room: RoomId) -> Seq {
        self.world.rooms.get(&room).map_or(Seq(0), |s| s.seq)
    }

    /// Create `room` with its `Opened` event if it is not live yet (an
    /// unloaded room must have been loaded first: see
    /// [`Authority::missing`]). Refused with `Capacity` at
    /// [`Config::max_rooms`] live rooms.
    pub fn open(&mut self, room: RoomId) -> Result<(), Reason> {
        if self.world.rooms.get(&room).is_some_and(RoomState::is_open) {
            return Ok(());
        }
        if self.world.rooms.len() >= self.world.config.max_rooms {
            return Err(Reason::Capacity);
        }
        let seats = self.world.config.seats.min(protocol::room::MAX_SEATS as u8);
        self.emit(room, EventKind::Opened { seats })?;
        Ok(())
    }

    /// Append an event to a room's log and apply it.
    pub fn emit(&mut self, room: RoomId, kind: EventKind) -> Result<Seq, Reason> {
        let state = self.world.rooms.get(&room).cloned();
        self.saved.entry(room).or_insert(state);
        let state = (self.world.rooms.entry(room)).or_insert_with(|| RoomState::new(room));
        let event = Event {
            seq: state.seq.next(),
            at: self.now,
            cause: self.cause,
            kind,
        };
        state.apply(&event).map_err(|_| Reason::Internal)?;
        let seq = event.seq;
        self.events.push((room, event));
        Ok(seq)
    }

    /// A fresh battle id.
    pub fn next_battle(&mut self) -> BattleId {
        let id = BattleId(self.world.next_battle);
        self.world.next_battle += 1;
        id
    }

    /// A fresh challenge id.
    pub fn next_challenge(&mut self) -> protocol::ChallengeId {
        let id = protocol::ChallengeId(self.world.next_challenge);
        self.world.next_challenge += 1;
        id
    }

    /// How a recently closed PK invitation ended.
    pub fn closed_invite(&self, battle: BattleId) -> Option<protocol::room::PkInviteEnd> {
        (self.world.closed_invites.iter())
            .find(|(b, _)| *b == battle)
            .map(|(_, r)| *r)
    }

    /// Keep every change; returns the events made.
    pub(super) fn commit(mut self) -> Vec<(RoomId, Event)> {
        for (_, event) in &self.events {
            self.world.observe(event);
        }
        let rooms: Vec<RoomId> = self.saved.keys().copied().collect();
        for room in rooms {
            self.world.refresh_deadline(room);
        }
        std::mem::take(&mut self.events)
    }

    /// Undo every change.
    pub(super) fn rollback(self) {
        for (room, state) in self.saved {
            match state {
                Some(s) => self.world.rooms.insert(room, s),
                None => self.world.rooms.remove(&room),
            };
        }
        // Ids handed out stay used: harmless gaps that the log never sees.
    }
}
