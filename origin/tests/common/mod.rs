//! A harness for the room rules: a virtual clock that jumps to the next
//! timer, a log of every record, and a mirror per room that follows the log
//! with `RoomState::apply`, the way relays and clients do. After every input
//! the harness checks that each mirror equals the authority's state (or, for
//! an unloaded room, its archive). Archives of unloaded rooms are kept in
//! memory and loaded back before an action needs them, as the server does.

#![allow(dead_code)]

use origin::rules::{Authority, Config, Decision, Record};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{
    Action, ActionId, BattleId, Event, EventKind, Outcome, Reason, RoomId, RoomState, Seq,
    ServerTime, SessionId, UserId,
};
use std::collections::BTreeMap;
use std::time::Duration;

pub const A: RoomId = RoomId(1);
pub const B: RoomId = RoomId(2);
pub const C: RoomId = RoomId(3);

/// The host of room `r` is user `r * 1000`.
pub fn host_of(r: RoomId) -> UserId {
    UserId(r.0 * 1000)
}

pub struct World {
    pub auth: Authority,
    pub now: ServerTime,
    pub log: Vec<Record>,
    pub mirrors: BTreeMap<RoomId, RoomState>,
    /// Archives of unloaded rooms (the server keeps them in files).
    pub archives: BTreeMap<RoomId, RoomState>,
    counters: BTreeMap<UserId, u64>,
}

/// Config with short, round timers for stories.
pub fn test_config() -> Config {
    Config {
        pk_invite_timeout: Duration::from_secs(10),
        pk_min_duration: Duration::from_secs(10),
        pk_grace: Duration::from_secs(2),
        pk_punishment: Duration::from_secs(5),
        max_stamp_age: Duration::from_secs(3),
        seats: 4,
        seat_invite_timeout: Duration::from_secs(10),
        seat_hold: Duration::from_secs(5),
        challenge_min_window: Duration::from_secs(5),
        ..Config::default()
    }
}

impl World {
    pub fn new() -> World {
        World::with(test_config())
    }

    /// A world whose rooms A, B and C are open (by an operator), so viewers
    /// can act in them from the start.
    pub fn with(config: Config) -> World {
        let mut w = World::bare(config);
        for room in [A, B, C] {
            w.open(room);
        }
        w
    }

    /// A world with no room at all.
    pub fn bare(config: Config) -> World {
        World {
            auth: Authority::new(config),
            now: ServerTime(1_000_000_000),
            log: Vec::new(),
            mirrors: BTreeMap::new(),
            archives: BTreeMap::new(),
            counters: BTreeMap::new(),
        }
    }

    /// Let time pass, firing every timer at its exact deadline.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(t) = self.auth.poll_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            let rec = self.auth.handle_timeout(self.now);
            self.store(rec);
        }
        self.now = until;
    }

    /// Advance to an absolute time.
    pub fn advance_to(&mut self, t: ServerTime) {
        let d = t.saturating_since(self.now);
        self.advance(d);
    }

    fn next_id(&mut self, user: UserId) -> ActionId {
        let n = self.counters.entry(user).or_insert(0);
        *n += 1;
        ActionId {
            session: SessionId(user.0),
            n: *n,
        }
    }

    /// `user` acts in `room` with `grant`, stamped now.
    pub fn act_as(&mut self, user: UserId, grant: Grant, room: RoomId, action: Action) -> Outcome {
        let sent_at = self.now;
        self.act_stamped(user, grant, room, action, sent_at)
    }

    pub fn act_stamped(
        &mut self,
        user: UserId,
        grant: Grant,
        room: RoomId,
        action: Action,
        sent_at: ServerTime,
    ) -> Outcome {
        let id = self.next_id(user);
        let msg = ActionMsg {
            id,
            room,
            sent_at,
            action,
        };
        self.send(Actor { user, grant }, &msg)
    }

    /// Deliver one message (a first send or a repeat), loading what it
    /// needs from the archives first. Panics if it is throttled (see
    /// [`World::try_send`]).
    pub fn send(&mut self, actor: Actor, msg: &ActionMsg) -> Outcome {
        match self.try_send(actor, msg) {
            Ok(o) => o,
            Err(wait) => panic!("throttled for {wait:?}"),
        }
    }

    /// Deliver one message; `Err(retry_after)` when it was throttled.
    pub fn try_send(&mut self, actor: Actor, msg: &ActionMsg) -> Result<Outcome, Duration> {
        for room in self.auth.missing(msg) {
            self.load(room);
        }
        Ok(match self.auth.handle_action(self.now, actor, msg) {
            Decision::Decided(rec) => {
                let outcome = rec.ack.expect("a decided action has an ack").outcome;
                self.store(rec);
                outcome
            }
            Decision::Answered { outcome, timers } => {
                self.store(timers);
                outcome
            }
            Decision::Throttled {
                retry_after,
                timers,
            } => {
                self.store(timers);
                return Err(retry_after);
            }
        })
    }

    /// Bring an unloaded room back from its archive, as the server does.
    pub fn load(&mut self, room: RoomId) {
        if let Some(state) = self.archives.get(&room) {
            self.auth.handle_load(self.now, state.clone());
        }
    }

    /// A relay follows (or stops following) `room`.
    pub fn follow(&mut self, room: RoomId, followed: bool) {
        if followed {
            self.load(room);
        }
        self.auth.handle_follow(self.now, room, followed);
    }

    /// Unload whatever is idle now, archiving it; returns the rooms unloaded.
    pub fn sweep(&mut self) -> Vec<RoomId> {
        let mut out = Vec::new();
        for state in self.auth.handle_idle(self.now) {
            out.push(state.room);
            self.archives.insert(state.room, state);
        }
        out
    }

    /// The room's host acts.
    pub fn host(&mut self, room: RoomId, action: Action) -> Outcome {
        self.act_as(host_of(room), Grant::Host, room, action)
    }

    /// A viewer acts.
    pub fn viewer(&mut self, user: u64, room: RoomId, action: Action) -> Outcome {
        self.act_as(UserId(user), Grant::Viewer, room, action)
    }

    pub fn presence(&mut self, room: RoomId, user: u64, online: bool) {
        let rec = self
            .auth
            .handle_presence(self.now, room, UserId(user), online);
        self.store(rec);
    }

    pub fn open(&mut self, room: RoomId) {
        let rec = self.auth.handle_open(self.now, room);
        self.store(rec);
    }

    fn store(&mut self, rec: Record) {
        if rec.is_empty() {
            return;
        }
        for (room, event) in &rec.events {
            let m = (self.mirrors.entry(*room)).or_insert_with(|| RoomState::new(*room));
            m.apply(event)
                .expect("the mirror applies every event in order");
        }
        for (room, m) in &self.mirrors {
            let state = self.auth.room(*room).or(self.archives.get(room));
            assert_eq!(Some(m), state, "mirror of {room} diverged");
        }
        self.log.push(rec);
    }

    pub fn state(&self, room: RoomId) -> &RoomState {
        self.auth.room(room).expect("room exists")
    }

    /// Every event of a room, in order.
    pub fn events(&self, room: RoomId) -> Vec<Event> {
        (self.log.iter().flat_map(|r| r.events.iter()))
            .filter(|(r, _)| *r == room)
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn last_event(&self, room: RoomId) -> EventKind {
        self.events(room).last().expect("an event").kind.clone()
    }

    /// The battle id of the invitation pending in `room`.
    pub fn pending_battle(&self, room: RoomId) -> BattleId {
        self.state(room)
            .pk_invite
            .as_ref()
            .expect("a pending invite")
            .battle
    }

    /// A fresh authority rebuilt from this world's log.
    pub fn replayed(&self) -> Authority {
        let mut a = Authority::new(self.auth.config().clone());
        for rec in &self.log {
            a.replay(rec).expect("the log replays");
        }
        a
    }

    /// An authority restored from `snap` (taken after `self.log[..cut]`),
    /// then fed the rest of the log, restoring archives as the server does.
    pub fn restored(&self, snap: origin::rules::Snapshot, cut: usize) -> Authority {
        let mut a = Authority::restore(self.auth.config().clone(), snap);
        for rec in &self.log[cut..] {
            for room in a.replay_needs(rec) {
                let state = self.archives.get(&room).expect("an archive").clone();
                a.restore_room(state);
            }
            a.replay(rec).expect("the rest replays");
        }
        a
    }
}

pub fn applied(o: Outcome) -> Seq {
    match o {
        Outcome::Applied { seq } => seq,
        Outcome::Rejected { reason } => panic!("expected applied, got rejected: {reason}"),
    }
}

pub fn rejected(o: Outcome) -> Reason {
    match o {
        Outcome::Rejected { reason } => reason,
        Outcome::Applied { seq } => panic!("expected a rejection, got applied at {seq}"),
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn gift(count: u32) -> Action {
    // Gift 3 is worth 100 in the default catalogue.
    Action::Gift {
        gift: protocol::GiftId(3),
        count,
    }
}

/// A invites B for `duration` seconds and B accepts; returns the battle id.
pub fn start_battle(w: &mut World, duration: u32) -> BattleId {
    applied(w.host(
        A,
        Action::PkInvite {
            to: B,
            duration_secs: duration,
        },
    ));
    let battle = w.pending_battle(B);
    applied(w.host(B, Action::PkAccept { battle }));
    battle
}
