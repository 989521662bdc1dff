//! The room rules: a sans-IO state machine that is the single writer of every
//! room's log.
//!
//! It takes `now` with every input, reads no clock and does no IO. Inputs are
//! `handle_*` calls; each returns a [`Record`]: the events to make durable and
//! then publish, and the action's outcome. The driver asks
//! [`Authority::poll_timeout`] when to call [`Authority::handle_timeout`]
//! next; every other input also fires any timer already due first, so the
//! rules never depend on how promptly the driver calls back.
//!
//! Conflict rules (all follow from "one writer, arrival order"):
//! - actions apply in the order they reach [`Authority::handle_action`];
//! - two PK invites that cross (A→B pending when B→A arrives) become one
//!   battle: the second invite accepts the first (see `pk.rs`);
//! - the last free seat goes to the first taker; the second hears `SeatTaken`;
//! - an accept after its invitation lapsed hears `Expired`;
//! - a gift counts in a battle when its trusted stamp is before `ends_at` and
//!   it arrives before `settles_at` (see [`Authority::trusted_stamp`]).
//!
//! Determinism: the same inputs at the same times give the same records, byte
//! for byte. Every map is ordered; ids come from counters derived from the log.

mod config;
mod deadline;
mod engage;
mod pk;
mod seats;
mod sessions;

pub use config::{default_catalogue, ms, Config};
pub use sessions::{Seen, Sessions, SessionsSnapshot};

use protocol::message::{ActionMsg, Actor};
use protocol::room::{ApplyError, Grant};
use protocol::{
    Action, ActionId, BattleId, Event, EventKind, Outcome, Reason, RoomId, RoomState, Seq,
    ServerTime, UserId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The durable result of one input: what the write-ahead log stores, and
/// what replaying it rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The action decided, when the input was an action.
    pub ack: Option<Ack>,
    /// Events, in the order they were made, each with its room.
    pub events: Vec<(RoomId, Event)>,
}

impl Record {
    /// Nothing to store.
    pub fn is_empty(&self) -> bool {
        self.ack.is_none() && self.events.is_empty()
    }
}

/// An action's outcome, as remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The action.
    pub id: ActionId,
    /// Who sent it (a session belongs to one user).
    pub user: UserId,
    /// What happened.
    pub outcome: Outcome,
}

/// Everything the rules hold, as a checkpoint stores it: restoring it and
/// replaying the records written after it gives the same authority as
/// replaying the whole log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    rooms: Vec<RoomState>,
    sessions: SessionsSnapshot,
    closed_invites: Vec<(BattleId, protocol::room::PkInviteEnd)>,
    next_battle: u64,
    next_challenge: u64,
}

/// What [`Authority::handle_action`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new action (applied or rejected): store the record, then ack and publish.
    Decided(Record),
    /// Seen before, or unanswerable: answer with this outcome; nothing to
    /// store. (Timers that came due are in `timers`, to store as usual.)
    Answered {
        /// The outcome to send back.
        outcome: Outcome,
        /// Events of timers that fired on the way.
        timers: Record,
    },
}

/// The single writer for every room.
#[derive(Debug, Clone)]
pub struct Authority {
    config: Config,
    rooms: BTreeMap<RoomId, RoomState>,
    sessions: Sessions,
    /// `(next deadline, room)` for every room that has one.
    deadlines: BTreeSet<(ServerTime, RoomId)>,
    /// Each room's entry in `deadlines`.
    room_deadline: BTreeMap<RoomId, ServerTime>,
    /// Recently closed PK invitations and how they ended, oldest first.
    closed_invites: VecDeque<(BattleId, protocol::room::PkInviteEnd)>,
    next_battle: u64,
    next_challenge: u64,
}

impl Authority {
    /// An authority with no rooms.
    pub fn new(config: Config) -> Self {
        let sessions = Sessions::new(config.session_window, config.max_sessions);
        Authority {
            config,
            rooms: BTreeMap::new(),
            sessions,
            deadlines: BTreeSet::new(),
            room_deadline: BTreeMap::new(),
            closed_invites: VecDeque::new(),
            next_battle: 1,
            next_challenge: 1,
        }
    }

    /// Everything the rules hold, for a checkpoint.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rooms: self.rooms.values().cloned().collect(),
            sessions: self.sessions.export(),
            closed_invites: self.closed_invites.iter().copied().collect(),
            next_battle: self.next_battle,
            next_challenge: self.next_challenge,
        }
    }

    /// An authority as it was at a checkpoint (timers are derived again).
    pub fn restore(config: Config, snap: Snapshot) -> Authority {
        let mut a = Authority::new(config);
        a.sessions = Sessions::import(
            a.config.session_window,
            a.config.max_sessions,
            snap.sessions,
        );
        a.closed_invites = snap.closed_invites.into_iter().collect();
        a.next_battle = snap.next_battle;
        a.next_challenge = snap.next_challenge;
        for state in snap.rooms {
            let room = state.room;
            a.rooms.insert(room, state);
            a.refresh_deadline(room);
        }
        a
    }

    /// The rules' configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A room's current state.
    pub fn room(&self, room: RoomId) -> Option<&RoomState> {
        self.rooms.get(&room)
    }

    /// Every room, in id order.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomState> {
        self.rooms.values()
    }

    /// The id memory.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// When [`Authority::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// Make sure `room` exists (a relay subscribes to it, say). Returns the
    /// `Opened` event to store when the room is new.
    pub fn handle_open(&mut self, now: ServerTime, room: RoomId) -> Record {
        let mut rec = self.handle_timeout(now);
        let mut t = Txn::new(self, now, None);
        let opened = t.open(room);
        match opened {
            Ok(()) => rec.events.extend(t.commit()),
            Err(_) => t.rollback(),
        }
        rec
    }

    /// Fire every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: ServerTime) -> Record {
        let mut events = Vec::new();
        // Every firing changes its room's state, so its deadline moves on;
        // the bound only guards against a rules bug looping forever.
        for _ in 0..100_000 {
            let Some(&(at, room)) = self.deadlines.first() else {
                break;
            };
            if at > now {
                break;
            }
            let mut t = Txn::new(self, now, None);
            match deadline::fire(&mut t, room, at) {
                Ok(()) => events.extend(t.commit()),
                Err(_) => {
                    t.rollback();
                    // Never fire the same broken deadline again.
                    self.set_deadline(room, None);
                }
            }
        }
        Record { ack: None, events }
    }

    /// A user of `room` came online or went offline (on any relay).
    pub fn handle_presence(
        &mut self,
        now: ServerTime,
        room: RoomId,
        user: UserId,
        online: bool,
    ) -> Record {
        let mut rec = self.handle_timeout(now);
        let mut t = Txn::new(self, now, None);
        match seats::presence(&mut t, room, user, online) {
            Ok(()) => rec.events.extend(t.commit()),
            Err(_) => t.rollback(),
        }
        rec
    }

    /// Decide one action. `actor` is who the relay verified the sender to be.
    pub fn handle_action(&mut self, now: ServerTime, actor: Actor, msg: &ActionMsg) -> Decision {
        let timers = self.handle_timeout(now);
        match self.sessions.check(msg.id, actor.user) {
            Seen::New => {}
            Seen::Again(outcome) => return Decision::Answered { outcome, timers },
            Seen::Stale => return answer(Reason::Stale, timers),
        }
        let mut t = Txn::new(self, now, Some(msg.id));
        let decided = t
            .open(msg.room)
            .map_err(|_| Reason::Internal)
            .and_then(|()| {
                let before = t.seq(msg.room);
                decide(&mut t, actor, msg)?;
                let after = t.seq(msg.room);
                // Every applied action leaves an event in its own room.
                if after == before {
                    return Err(Reason::Internal);
                }
                Ok(after)
            });
        let outcome = match decided {
            Ok(seq) => Outcome::Applied { seq },
            Err(reason) => Outcome::Rejected { reason },
        };
        let mut events = timers.events;
        if outcome.is_applied() {
            events.extend(t.commit());
        } else {
            // The room may have been opened by this action; keep that.
            let opened = t.take_opened();
            t.rollback();
            if let Some(room) = opened {
                let mut t = Txn::new(self, now, None);
                if t.open(room).is_ok() {
                    events.extend(t.commit());
                }
            }
        }
        let ack = Ack {
            id: msg.id,
            user: actor.user,
            outcome,
        };
        self.sessions.record(ack.id, ack.user, ack.outcome);
        Decision::Decided(Record {
            ack: Some(ack),
            events,
        })
    }

    /// Rebuild from the log: feed every stored record, oldest first.
    pub fn replay(&mut self, record: &Record) -> Result<(), ApplyError> {
        for (room, event) in &record.events {
            let state = (self.rooms.entry(*room)).or_insert_with(|| RoomState::new(*room));
            state.apply(event)?;
            self.observe(event);
            self.refresh_deadline(*room);
        }
        if let Some(a) = record.ack {
            self.sessions.record(a.id, a.user, a.outcome);
        }
        Ok(())
    }

    /// The time a gift counts as sent: the sender's stamp when it is
    /// plausible, else the arrival time. A stamp later than the arrival, or
    /// earlier than arrival minus `max_stamp_age`, is not trusted.
    pub fn trusted_stamp(&self, now: ServerTime, sent_at: ServerTime) -> ServerTime {
        trusted_stamp(&self.config, now, sent_at)
    }

    /// Keep derived indexes (ids, closed invitations) in step with an event;
    /// used live and on replay, so the two never differ.
    fn observe(&mut self, event: &Event) {
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

    fn refresh_deadline(&mut self, room: RoomId) {
        let next = (self.rooms.get(&room)).and_then(|s| deadline::next(&self.config, s));
        self.set_deadline(room, next);
    }

    fn set_deadline(&mut self, room: RoomId, next: Option<ServerTime>) {
        if let Some(old) = self.room_deadline.remove(&room) {
            self.deadlines.remove(&(old, room));
        }
        if let Some(t) = next {
            self.room_deadline.insert(room, t);
            self.deadlines.insert((t, room));
        }
    }
}

fn answer(reason: Reason, timers: Record) -> Decision {
    Decision::Answered {
        outcome: Outcome::Rejected { reason },
        timers,
    }
}

fn trusted_stamp(config: &Config, now: ServerTime, sent_at: ServerTime) -> ServerTime {
    if sent_at > now || sent_at < now.saturating_sub(config.max_stamp_age) {
        now
    } else {
        sent_at
    }
}

/// Route one action to its rule.
fn decide(t: &mut Txn<'_>, actor: Actor, msg: &ActionMsg) -> Result<(), Reason> {
    let room = msg.room;
    let who = Who::new(t.state(room)?, actor);
    match &msg.action {
        Action::Gift { gift, count } => engage::gift(t, who, room, msg.sent_at, *gift, *count),
        Action::Chat { text } => engage::chat(t, who, room, text),
        Action::Like { count } => engage::like(t, who, room, *count),
        Action::ChallengeStart { goal, window_secs } => {
            engage::challenge_start(t, who, room, *goal, *window_secs)
        }
        Action::PkInvite { to, duration_secs } => pk::invite(t, who, room, *to, *duration_secs),
        Action::PkAccept { battle } => pk::accept(t, who, room, *battle),
        Action::PkReject { battle } => pk::reject(t, who, room, *battle),
        Action::PkCancel { battle } => pk::cancel(t, who, room, *battle),
        Action::PkForfeit { battle } => pk::forfeit(t, who, room, *battle),
        Action::SeatMode { mode } => seats::mode(t, who, room, *mode),
        Action::SeatInvite { user, seat } => seats::invite(t, who, room, *user, *seat),
        Action::SeatCancelInvite { user } => seats::cancel_invite(t, who, room, *user),
        Action::SeatAccept => seats::accept(t, who, room),
        Action::SeatDecline => seats::decline(t, who, room),
        Action::SeatApply => seats::apply(t, who, room),
        Action::SeatWithdraw => seats::withdraw(t, who, room),
        Action::SeatApprove { user } => seats::approve(t, who, room, *user),
        Action::SeatDeny { user } => seats::deny(t, who, room, *user),
        Action::SeatTake { seat } => seats::take(t, who, room, *seat),
        Action::SeatKick { seat } => seats::kick(t, who, room, *seat),
        Action::SeatMute { seat, muted } => seats::mute(t, who, room, *seat, *muted),
        Action::SeatLock { seat, locked } => seats::lock(t, who, room, *seat, *locked),
        Action::SeatLeave => seats::leave(t, who, room),
    }
}

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
    fn new(state: &RoomState, actor: Actor) -> Who {
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

    fn is_host(self) -> bool {
        self.role == Role::Host
    }

    /// Host or operator: may moderate.
    fn is_staff(self) -> bool {
        matches!(self.role, Role::Host | Role::Operator)
    }

    fn require(ok: bool) -> Result<(), Reason> {
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
    auth: &'a mut Authority,
    now: ServerTime,
    cause: Option<ActionId>,
    /// Rooms as they were before this input touched them.
    saved: BTreeMap<RoomId, Option<RoomState>>,
    events: Vec<(RoomId, Event)>,
    opened: Option<RoomId>,
}

impl<'a> Txn<'a> {
    fn new(auth: &'a mut Authority, now: ServerTime, cause: Option<ActionId>) -> Self {
        Txn {
            auth,
            now,
            cause,
            saved: BTreeMap::new(),
            events: Vec::new(),
            opened: None,
        }
    }

    pub fn now(&self) -> ServerTime {
        self.now
    }

    pub fn config(&self) -> &Config {
        &self.auth.config
    }

    /// A room's state; the room must exist (see [`Txn::open`]).
    pub fn state(&self, room: RoomId) -> Result<&RoomState, Reason> {
        self.auth.rooms.get(&room).ok_or(Reason::Internal)
    }

    fn seq(&self, room: RoomId) -> Seq {
        self.auth.rooms.get(&room).map_or(Seq(0), |s| s.seq)
    }

    /// Create `room` with its `Opened` event if it does not exist yet.
    pub fn open(&mut self, room: RoomId) -> Result<(), Reason> {
        if self.auth.rooms.get(&room).is_some_and(RoomState::is_open) {
            return Ok(());
        }
        let seats = self.auth.config.seats.min(protocol::room::MAX_SEATS as u8);
        self.emit(room, EventKind::Opened { seats })?;
        if self.opened.is_none() {
            self.opened = Some(room);
        }
        Ok(())
    }

    /// Append an event to a room's log and apply it.
    pub fn emit(&mut self, room: RoomId, kind: EventKind) -> Result<Seq, Reason> {
        let state = self.auth.rooms.get(&room).cloned();
        self.saved.entry(room).or_insert(state);
        let state = (self.auth.rooms.entry(room)).or_insert_with(|| RoomState::new(room));
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
        let id = BattleId(self.auth.next_battle);
        self.auth.next_battle += 1;
        id
    }

    /// A fresh challenge id.
    pub fn next_challenge(&mut self) -> protocol::ChallengeId {
        let id = protocol::ChallengeId(self.auth.next_challenge);
        self.auth.next_challenge += 1;
        id
    }

    /// How a recently closed PK invitation ended.
    pub fn closed_invite(&self, battle: BattleId) -> Option<protocol::room::PkInviteEnd> {
        (self.auth.closed_invites.iter())
            .find(|(b, _)| *b == battle)
            .map(|(_, r)| *r)
    }

    fn take_opened(&mut self) -> Option<RoomId> {
        self.opened.take()
    }

    /// Keep every change; returns the events made.
    fn commit(mut self) -> Vec<(RoomId, Event)> {
        for (_, event) in &self.events {
            self.auth.observe(event);
        }
        let rooms: Vec<RoomId> = self.saved.keys().copied().collect();
        for room in rooms {
            self.auth.refresh_deadline(room);
        }
        std::mem::take(&mut self.events)
    }

    /// Undo every change.
    fn rollback(self) {
        for (room, state) in self.saved {
            match state {
                Some(s) => self.auth.rooms.insert(room, s),
                None => self.auth.rooms.remove(&room),
            };
        }
        // Ids handed out stay used: harmless gaps that the log never sees.
    }
}
