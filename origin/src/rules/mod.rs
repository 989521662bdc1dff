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
//!
//! # Who opens a room
//!
//! A room exists from its `Opened` event on, and only an applied action of
//! the room's own host (or an operator) in it writes one. An action on a
//! room that does not exist from anyone else, and a PK invitation to a room
//! that does not exist, are refused with `NoRoom`; a refused action leaves
//! nothing behind: no room, no event, only its ack (an ack creates nothing).
//! At most [`Config::max_rooms`] rooms are live; opening one more is refused
//! with `Capacity`. (An operator can also open a room out of band:
//! [`Authority::handle_open`].)
//!
//! # Unloading idle rooms
//!
//! A room with no follower (no relay subscribed, see
//! [`Authority::handle_follow`]), no timer (so no battle, no pending
//! invitation, no challenge, no held seat), no one seated and no activity
//! for [`Config::room_idle`] is unloaded by [`Authority::handle_idle`]: it
//! leaves memory and every later checkpoint, and its state goes to the
//! driver, which writes it to a per-room **archive** (its `RoomState`, a few
//! hundred bytes) once every record before it is durable. Its log records
//! stay in the log. When the room is next followed or acted on, the driver
//! reads the archive back and hands it to [`Authority::handle_load`]
//! ([`Authority::missing`] names the rooms an action needs): the room is
//! back with its exact state and `seq`, and carries on from there. Nothing
//! else is per room: timers are derived from state, and the id memory and
//! PK bookkeeping are global.
//!
//! Replay after a restart stays exact: a room in the checkpoint replays its
//! events from there. A room that was unloaded when the checkpoint was
//! taken is not in it; [`Authority::replay_needs`] names it at its first
//! event after the checkpoint, the driver restores its archive with
//! [`Authority::restore_room`], and events the archive already holds (seq at
//! or below its own: it may have been written after them) are skipped. An
//! archive is written after the records before it are synced and before any
//! checkpoint that leaves the room out, so it is never ahead of the log's
//! durable part and never missing when needed.
//!
//! # Rates
//!
//! Before deciding a new action, the user's token bucket is consulted (see
//! `rate.rs`); over the rate, the action is not decided at all
//! ([`Decision::Throttled`]) and nothing is recorded.

mod config;
mod deadline;
mod engage;
mod pk;
mod rate;
mod seats;
mod sessions;
mod txn;
mod world;

use config::trusted_stamp;
pub use config::{default_catalogue, ms, Config};
pub use rate::Rates;
pub use sessions::{Limits, Seen, Sessions, SessionsSnapshot};
use txn::{Txn, Who};
use world::World;

use protocol::message::{ActionMsg, Actor};
use protocol::room::{ApplyError, Grant};
use protocol::{
    Action, ActionId, BattleId, Event, Outcome, Reason, RoomId, RoomState, Seq, ServerTime, UserId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
    /// When it was decided (origin time): the id memory's floors are made of
    /// these, so replay rebuilds them exactly (see `sessions.rs`).
    pub at: ServerTime,
}

/// Everything the rules hold, as a checkpoint stores it: restoring it and
/// replaying the records written after it gives the same authority as
/// replaying the whole log. Unloaded rooms are not in it (their archives
/// are).
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
    /// The user is over its action rate: not decided, nothing recorded.
    /// Answer `Throttled`; a resend after `retry_after` is decided normally.
    Throttled {
        /// How long until the user may act again.
        retry_after: Duration,
        /// Events of timers that fired on the way.
        timers: Record,
    },
}

/// The single writer for every room.
#[derive(Debug, Clone)]
pub struct Authority {
    /// What a transaction reads and changes: the rooms, their timers, the
    /// id counters, and the rules' configuration.
    world: World,
    sessions: Sessions,
    rates: Rates,
    /// Rooms some relay follows (loaded or not): never unloaded.
    followed: BTreeSet<RoomId>,
    /// When each live room was last loaded or followed or unfollowed (its
    /// last event's time is in its state).
    touched: BTreeMap<RoomId, ServerTime>,
    /// Rooms restored from an archive during replay that may be ahead of the
    /// log's events: those at or below their seq are skipped.
    ahead: BTreeSet<RoomId>,
}

fn session_limits(config: &Config) -> Limits {
    Limits {
        window: config.session_window,
        max_sessions: config.max_sessions,
        max_user_sessions: config.max_user_sessions,
        margin: config.max_stamp_age,
    }
}

impl Authority {
    /// An authority with no rooms.
    pub fn new(config: Config) -> Self {
        let sessions = Sessions::new(session_limits(&config));
        let rates = Rates::new(config.user_rate, config.user_burst, config.rate_users);
        Authority {
            world: World::new(config),
            sessions,
            rates,
            followed: BTreeSet::new(),
            touched: BTreeMap::new(),
            ahead: BTreeSet::new(),
        }
    }

    /// Everything the rules hold, for a checkpoint.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rooms: self.world.rooms.values().cloned().collect(),
            sessions: self.sessions.export(),
            closed_invites: self.world.closed_invites.iter().copied().collect(),
            next_battle: self.world.next_battle,
            next_challenge: self.world.next_challenge,
        }
    }

    /// An authority as it was at a checkpoint (timers are derived again).
    pub fn restore(config: Config, snap: Snapshot) -> Authority {
        let mut a = Authority::new(config);
        a.sessions = Sessions::import(session_limits(&a.world.config), snap.sessions);
        a.world.closed_invites = snap.closed_invites.into_iter().collect();
        a.world.next_battle = snap.next_battle;
        a.world.next_challenge = snap.next_challenge;
        for state in snap.rooms {
            let room = state.room;
            a.world.rooms.insert(room, state);
            a.world.refresh_deadline(room);
        }
        a
    }

    /// The rules' configuration.
    pub fn config(&self) -> &Config {
        &self.world.config
    }

    /// A live room's current state (`None` for an unloaded or unknown room).
    pub fn room(&self, room: RoomId) -> Option<&RoomState> {
        self.world.rooms.get(&room)
    }

    /// Every live room, in id order.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomState> {
        self.world.rooms.values()
    }

    /// How many rooms are live.
    pub fn room_count(&self) -> usize {
        self.world.rooms.len()
    }

    /// The id memory.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// When [`Authority::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        self.world.deadlines.first().map(|(t, _)| *t)
    }

    /// An operator opens `room` (tools and tests; relays never do). Returns
    /// the `Opened` event to store when the room is new, nothing when it is
    /// live already or the origin is at [`Config::max_rooms`]. An unloaded
    /// room must be loaded first ([`Authority::handle_load`]), as for an
    /// action: the rules cannot tell it from a room that never existed.
    pub fn handle_open(&mut self, now: ServerTime, room: RoomId) -> Record {
        let mut rec = self.handle_timeout(now);
        let mut t = Txn::new(&mut self.world, now, None);
        match t.open(room) {
            Ok(()) => rec.events.extend(t.commit()),
            Err(_) => t.rollback(),
        }
        if self.world.rooms.contains_key(&room) {
            self.touched.insert(room, now);
        } else {
            self.touched.remove(&room);
        }
        rec
    }

    /// A relay started (`true`) or stopped (`false`, its last one) following
    /// `room`. A followed room is never unloaded; the driver loads an
    /// unloaded room before its first follower is served.
    pub fn handle_follow(&mut self, now: ServerTime, room: RoomId, followed: bool) {
        if followed {
            self.followed.insert(room);
        } else {
            self.followed.remove(&room);
        }
        if self.world.rooms.contains_key(&room) {
            self.touched.insert(room, now);
        }
    }

    /// Bring back an unloaded room from its archive (its state when it was
    /// unloaded). A room that is live already is left as it is.
    pub fn handle_load(&mut self, now: ServerTime, state: RoomState) {
        let room = state.room;
        if self.world.rooms.contains_key(&room) || !state.is_open() {
            return;
        }
        self.world.rooms.insert(room, state);
        self.touched.insert(room, now);
        self.world.refresh_deadline(room);
    }

    /// The rooms `msg` needs that are not live: the driver loads those it
    /// has archives of before calling [`Authority::handle_action`] (the
    /// others are unknown, and the rules decide what that means).
    pub fn missing(&self, msg: &ActionMsg) -> Vec<RoomId> {
        let mut needed = vec![msg.room];
        if let Action::PkInvite { to, .. } = msg.action {
            needed.push(to);
        }
        needed.retain(|r| !self.world.rooms.contains_key(r));
        needed.dedup();
        needed
    }

    /// Unload every room idle at `now` (see the module docs); returns their
    /// states, for the driver to archive.
    pub fn handle_idle(&mut self, now: ServerTime) -> Vec<RoomState> {
        let idle: Vec<RoomId> = (self.world.rooms.values())
            .filter(|s| self.unloadable(s, now))
            .map(|s| s.room)
            .collect();
        let mut out = Vec::with_capacity(idle.len());
        for room in idle {
            self.touched.remove(&room);
            self.world.set_deadline(room, None);
            if let Some(state) = self.world.rooms.remove(&room) {
                out.push(state);
            }
        }
        out
    }

    fn unloadable(&self, s: &RoomState, now: ServerTime) -> bool {
        let last = (self.touched.get(&s.room).copied()).map_or(s.at, |t| t.max(s.at));
        !self.followed.contains(&s.room)
            && !self.world.room_deadline.contains_key(&s.room)
            && s.battle.is_none()
            && s.pk_invite.is_none()
            && s.challenge.is_none()
            && s.seats.seats.iter().all(|seat| seat.user.is_none())
            && last + self.world.config.room_idle <= now
    }

    /// Cluster mode: the node no longer holds `room` (lost, handed over,
    /// its append failed): drop its state, its deadline and what the idle
    /// sweep knew of it. The id memory stays (ids are unique per session,
    /// so remembering another node's answers does no harm), and a room won
    /// back is rebuilt from its log with [`Authority::replay`]. Returns its
    /// state as it was here.
    pub fn remove_room(&mut self, room: RoomId) -> Option<RoomState> {
        self.world.set_deadline(room, None);
        self.touched.remove(&room);
        self.followed.remove(&room);
        self.ahead.remove(&room);
        self.world.rooms.remove(&room)
    }

    /// Cluster mode: the record acking `id` (sent by `user`) was not
    /// appended anywhere: forget its outcome (see [`Sessions::forget`]).
    pub fn forget_outcome(&mut self, id: ActionId, user: UserId) {
        self.sessions.forget(id, user);
    }

    /// Cluster mode: battle and challenge ids issued from now on are at
    /// least `from` (a node seeds it with its start time in microseconds,
    /// so nodes count in ranges of their own and never issue one id for
    /// two battles; ids replayed from a room's log still push them on).
    pub fn seed_ids(&mut self, from: u64) {
        self.world.next_battle = self.world.next_battle.max(from);
        self.world.next_challenge = self.world.next_challenge.max(from);
    }

    /// After a restart: count every live room's idleness from `now`.
    pub fn handle_started(&mut self, now: ServerTime) {
        let rooms: Vec<RoomId> = self.world.rooms.keys().copied().collect();
        for room in rooms {
            self.touched.insert(room, now);
        }
        self.ahead.clear();
    }

    /// Rooms `record`'s events need restored from their archives before
    /// [`Authority::replay`]: not live, and their first event here is not
    /// their `Opened`.
    pub fn replay_needs(&self, record: &Record) -> Vec<RoomId> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (room, event) in &record.events {
            if seen.insert(*room) && !self.world.rooms.contains_key(room) && event.seq > Seq(1) {
                out.push(*room);
            }
        }
        out
    }

    /// Replay only: put back a room from its archive, which may be ahead of
    /// the log's next events for it (those are then skipped).
    pub fn restore_room(&mut self, state: RoomState) {
        let room = state.room;
        if self.world.rooms.contains_key(&room) {
            return;
        }
        self.world.rooms.insert(room, state);
        self.ahead.insert(room);
        self.world.refresh_deadline(room);
    }

    /// Fire every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: ServerTime) -> Record {
        let mut events = Vec::new();
        // Every firing changes its room's state, so its deadline moves on;
        // the bound only guards against a rules bug looping forever.
        for _ in 0..100_000 {
            let Some(&(at, room)) = self.world.deadlines.first() else {
                break;
            };
            if at > now {
                break;
            }
            let mut t = Txn::new(&mut self.world, now, None);
            match deadline::fire(&mut t, room, at) {
                Ok(()) => events.extend(t.commit()),
                Err(_) => {
                    t.rollback();
                    // Never fire the same broken deadline again.
                    self.world.set_deadline(room, None);
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
        let mut t = Txn::new(&mut self.world, now, None);
        match seats::presence(&mut t, room, user, online) {
            Ok(()) => rec.events.extend(t.commit()),
            Err(_) => t.rollback(),
        }
        rec
    }

    /// Decide one action. `actor` is who the relay verified the sender to be.
    /// Rooms it needs that were unloaded must be loaded first (see
    /// [`Authority::missing`]).
    pub fn handle_action(&mut self, now: ServerTime, actor: Actor, msg: &ActionMsg) -> Decision {
        let timers = self.handle_timeout(now);
        match self.sessions.check(msg.id, actor.user, msg.sent_at) {
            Seen::New => {}
            Seen::Again(outcome) => return Decision::Answered { outcome, timers },
            Seen::Stale => return answer(Reason::Stale, timers),
        }
        if let Err(retry_after) = self.rates.check(now, actor.user) {
            return Decision::Throttled {
                retry_after,
                timers,
            };
        }
        let mut t = Txn::new(&mut self.world, now, Some(msg.id));
        let outcome = match decide_in(&mut t, actor, msg) {
            Ok(seq) => Outcome::Applied { seq },
            Err(reason) => Outcome::Rejected { reason },
        };
        let mut events = timers.events;
        if outcome.is_applied() {
            events.extend(t.commit());
        } else {
            // Nothing stays: not even a room this action would have opened.
            t.rollback();
        }
        let ack = Ack {
            id: msg.id,
            user: actor.user,
            outcome,
            at: now,
        };
        self.sessions.record(ack.id, ack.user, ack.outcome, ack.at);
        Decision::Decided(Record {
            ack: Some(ack),
            events,
        })
    }

    /// Rebuild from the log: feed every stored record, oldest first (rooms
    /// named by [`Authority::replay_needs`] restored first).
    pub fn replay(&mut self, record: &Record) -> Result<(), ApplyError> {
        for (room, event) in &record.events {
            let state = (self.world.rooms.entry(*room)).or_insert_with(|| RoomState::new(*room));
            if self.ahead.contains(room) && event.seq <= state.seq {
                // The room's archive was written after this event.
                self.world.observe(event);
                continue;
            }
            state.apply(event)?;
            self.ahead.remove(room);
            self.world.observe(event);
            self.world.refresh_deadline(*room);
        }
        if let Some(a) = record.ack {
            self.sessions.record(a.id, a.user, a.outcome, a.at);
        }
        Ok(())
    }

    /// The time a gift counts as sent: the sender's stamp when it is
    /// plausible, else the arrival time. A stamp later than the arrival, or
    /// earlier than arrival minus `max_stamp_age`, is not trusted.
    pub fn trusted_stamp(&self, now: ServerTime, sent_at: ServerTime) -> ServerTime {
        trusted_stamp(&self.world.config, now, sent_at)
    }
}

/// Decide `msg` inside `t`: open its room if the actor may, route it, and
/// check that an applied action left an event in its own room.
fn decide_in(t: &mut Txn<'_>, actor: Actor, msg: &ActionMsg) -> Result<Seq, Reason> {
    if t.state(msg.room).is_err() {
        if !matches!(actor.grant, Grant::Host | Grant::Operator) {
            return Err(Reason::NoRoom);
        }
        t.open(msg.room)?;
    }
    let before = t.seq(msg.room);
    decide(t, actor, msg)?;
    let after = t.seq(msg.room);
    // Every applied action leaves an event in its own room.
    if after == before {
        return Err(Reason::Internal);
    }
    Ok(after)
}

fn answer(reason: Reason, timers: Record) -> Decision {
    Decision::Answered {
        outcome: Outcome::Rejected { reason },
        timers,
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
