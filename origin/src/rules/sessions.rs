//! The memory of applied action ids: what makes every retry, duplicate and
//! failover harmless.
//!
//! A session belongs to its user: the memory is keyed by `(user, session)`,
//! so another user presenting the same session id (ids are visible in every
//! event's `cause`) gets a memory of its own and cannot touch this one.
//!
//! # Bounds
//!
//! - a window of `session_window` outcomes per session (older ids of a live
//!   session answer `Stale`: its numeric `floor`);
//! - at most `max_user_sessions` live sessions per user (the user's least
//!   recently active one is forgotten first);
//! - at most `max_sessions` live sessions in all (the least recently active
//!   one anywhere is forgotten first); a user's entry goes with its last
//!   session, so there are never more users than live sessions.
//!
//! In bytes (64-bit): a remembered id costs 24 (`u64` key + 16-byte
//! [`Outcome`], in a `VecDeque` whose capacity never exceeds the window
//! rounded up to a power of two); a session costs about 200 more (its
//! 64-byte window header, its map entry, its entry in the eviction order,
//! B-tree overhead included); a user about 100 (its floor and map entry).
//! So a session takes at most `200 + 24 × session_window` bytes and the
//! whole memory at most `max_sessions × (300 + 24 × session_window)` (there
//! are never more users than sessions): with the defaults (512 ids, 65,536
//! sessions, a power of two) about 0.8 GiB in the worst case, every session
//! holding 512 outcomes; a session with a handful of ids costs a few hundred
//! bytes.
//!
//! # Why a forgotten session never comes back as `New`
//!
//! Session ids are chosen by clients (random 64-bit numbers), so no bounded
//! memory can list every session it forgot. What it keeps instead is a time:
//! when a session is forgotten, its user's `floor` rises to the arrival time
//! of the session's last recorded id plus `margin` (the rules' stamp
//! tolerance, `max_stamp_age`). When a user's last session goes, the user's
//! floor folds into the memory-wide `floor`. Then:
//!
//! 1. Every id the session ever had decided arrived at or before that last
//!    arrival time (arrival times are the origin's `now`, recorded in the
//!    [`Ack`](super::Ack), so they only grow along the log).
//! 2. A copy of an action is byte-identical to it (the SDK resends the same
//!    message; relays forward it as is), so it carries the original
//!    `sent_at`, which the client stamped before the first send: at or before
//!    that first arrival, give or take its clock estimate's error, which is
//!    far below `margin`.
//! 3. So every copy of a forgotten id carries a stamp below the floor, and an
//!    id of a session that is not live is answered `Stale` when its stamp is
//!    below `max(user floor, memory-wide floor)`. A session that comes back
//!    after being forgotten gets a new window whose `stale_before` is that
//!    floor: its old ids (old stamps) answer `Stale`, its new ones (fresh
//!    stamps) are decided.
//! 4. Floors only rise, and they are part of the checkpoint; every change to
//!    the memory comes from [`Sessions::record`], fed the same acks in the
//!    same order live and on replay (with the arrival time stored in each
//!    ack), so a restart from a checkpoint plus the log rebuilds the very
//!    same memory and the same floors.
//!
//! What it costs: a brand-new session of a user whose first action was
//! stamped before that user's floor (the user ran more than
//! `max_user_sessions` sessions within a few seconds, or sent an action
//! queued long ago while the memory-wide floor moved past it, or stamped it
//! before its first clock sample: the SDK stamps `ServerTime::ZERO` then,
//! which is below every floor once one session was forgotten) hears `Stale`
//! for it: "unknown, do not resend", never a double count. A client should
//! therefore stamp actions only once it has a clock estimate. A client that
//! rewrites the stamp of an old id sends a new action, which it could do with
//! a fresh id anyway: it only ever charges itself.

use protocol::{ActionId, Outcome, ServerTime, SessionId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// What the memory says about an action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: decide it.
    New,
    /// Seen: answer with this outcome and change nothing.
    Again(Outcome),
    /// Forgotten, or older than the session's window: the origin cannot tell
    /// whether it was applied.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    /// Ids at or below this are forgotten.
    floor: u64,
    /// Remembered outcomes, in id order.
    outcomes: VecDeque<(u64, Outcome)>,
    /// Ids not remembered here and stamped before this may belong to an
    /// earlier, forgotten life of the session: `Stale`.
    stale_before: ServerTime,
    /// Arrival of the last id recorded.
    last: ServerTime,
    /// Logical time of the last use, for eviction.
    touched: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    sessions: BTreeMap<SessionId, Window>,
    /// Stamps before this, from a session that is not live, are `Stale`.
    floor: ServerTime,
}

/// The id memory as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsSnapshot {
    users: Vec<(UserId, User)>,
    clock: u64,
    floor: ServerTime,
}

/// How much the memory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Outcomes remembered per session.
    pub window: usize,
    /// Live sessions in all.
    pub max_sessions: usize,
    /// Live sessions per user.
    pub max_user_sessions: usize,
    /// Added to a forgotten session's last arrival to make the floor: more
    /// than any honest client's stamp can exceed its arrival.
    pub margin: Duration,
}

/// Per-session windows of outcomes, per-user and memory-wide floors.
#[derive(Debug, Clone)]
pub struct Sessions {
    limits: Limits,
    users: BTreeMap<UserId, User>,
    /// `(touched, user, session)`: the eviction order.
    by_age: BTreeSet<(u64, UserId, SessionId)>,
    /// Live sessions.
    live: usize,
    clock: u64,
    /// Stamps before this, from a session that is not live, are `Stale`.
    floor: ServerTime,
}

impl Sessions {
    /// An empty memory within `limits`.
    pub fn new(limits: Limits) -> Self {
        Sessions {
            limits: Limits {
                window: limits.window.max(1),
                max_sessions: limits.max_sessions.max(1),
                max_user_sessions: limits.max_user_sessions.max(1),
                margin: limits.margin,
            },
            users: BTreeMap::new(),
            by_age: BTreeSet::new(),
            live: 0,
            clock: 0,
            floor: ServerTime::ZERO,
        }
    }

    /// What is known of `id`, sent by `user` and stamped `sent_at`.
    pub fn check(&self, id: ActionId, user: UserId, sent_at: ServerTime) -> Seen {
        let u = self.users.get(&user);
        let Some(w) = u.and_then(|u| u.sessions.get(&id.session)) else {
            let floor = u.map_or(self.floor, |u| u.floor.max(self.floor));
            return if sent_at < floor {
                Seen::Stale
            } else {
                Seen::New
            };
        };
        if let Ok(i) = w.outcomes.binary_search_by_key(&id.n, |(n, _)| *n) {
            return Seen::Again(w.outcomes[i].1);
        }
        if id.n <= w.floor || sent_at < w.stale_before {
            return Seen::Stale;
        }
        Seen::New
    }

    /// Remember the outcome of `id`, decided when it arrived at `at`.
    pub fn record(&mut self, id: ActionId, user: UserId, outcome: Outcome, at: ServerTime) {
        self.clock += 1;
        let clock = self.clock;
        let limits = self.limits;
        let memory_floor = self.floor;
        let u = self.users.entry(user).or_default();
        let stale_before = u.floor.max(memory_floor);
        let w = u.sessions.entry(id.session).or_insert_with(|| {
            self.live += 1;
            Window {
                floor: 0,
                outcomes: VecDeque::new(),
                stale_before,
                last: at,
                touched: clock,
            }
        });
        self.by_age.remove(&(w.touched, user, id.session));
        w.touched = clock;
        self.by_age.insert((clock, user, id.session));
        w.last = w.last.max(at);
        match w.outcomes.binary_search_by_key(&id.n, |(n, _)| *n) {
            Ok(i) => w.outcomes[i].1 = outcome,
            Err(i) => {
                if w.outcomes.len() >= limits.window {
                    if i == 0 {
                        // Older than everything remembered and no room: it
                        // falls straight below the floor.
                        w.floor = w.floor.max(id.n);
                        return;
                    }
                    if let Some((n, _)) = w.outcomes.pop_front() {
                        w.floor = w.floor.max(n);
                    }
                    w.outcomes.insert(i - 1, (id.n, outcome));
                } else {
                    w.outcomes.insert(i, (id.n, outcome));
                }
            }
        }
        // The user's own cap: forget its least recently active session.
        while u.sessions.len() > limits.max_user_sessions {
            let oldest = (u.sessions.iter())
                .min_by_key(|(_, w)| w.touched)
                .map(|(s, w)| (*s, w.touched));
            let Some((session, touched)) = oldest else {
                break;
            };
            if let Some(w) = u.sessions.remove(&session) {
                u.floor = u.floor.max(w.last + limits.margin);
            }
            self.by_age.remove(&(touched, user, session));
            self.live -= 1;
        }
        // The memory's cap: forget the least recently active session anywhere.
        while self.live > limits.max_sessions {
            let Some((_, user, session)) = self.by_age.pop_first() else {
                break;
            };
            self.live -= 1;
            let Some(u) = self.users.get_mut(&user) else {
                continue;
            };
            if let Some(w) = u.sessions.remove(&session) {
                u.floor = u.floor.max(w.last + limits.margin);
            }
            if u.sessions.is_empty() {
                self.floor = self.floor.max(u.floor);
                self.users.remove(&user);
            }
        }
    }

    /// Cluster mode: forget the outcome of `id`, decided but never made
    /// durable (its room's append failed): a resend is decided afresh
    /// instead of answered with an outcome no log holds.
    pub fn forget(&mut self, id: ActionId, user: UserId) {
        let w = (self.users.get_mut(&user)).and_then(|u| u.sessions.get_mut(&id.session));
        if let Some(w) = w {
            if let Ok(i) = w.outcomes.binary_search_by_key(&id.n, |(n, _)| *n) {
                w.outcomes.remove(i);
            }
        }
    }

    /// Everything remembered, for a checkpoint.
    pub fn export(&self) -> SessionsSnapshot {
        SessionsSnapshot {
            users: self.users.iter().map(|(u, s)| (*u, s.clone())).collect(),
            clock: self.clock,
            floor: self.floor,
        }
    }

    /// Rebuild from a checkpoint, within `limits`.
    pub fn import(limits: Limits, snap: SessionsSnapshot) -> Self {
        let mut s = Sessions::new(limits);
        s.clock = snap.clock;
        s.floor = snap.floor;
        for (user, u) in snap.users {
            for (session, w) in &u.sessions {
                s.by_age.insert((w.touched, user, *session));
                s.live += 1;
            }
            s.users.insert(user, u);
        }
        s
    }

    /// Live sessions remembered.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Users with a live session.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Reason, Seq};

    fn id(s: u64, n: u64) -> ActionId {
        ActionId {
            session: SessionId(s),
            n,
        }
    }

    const OK: Outcome = Outcome::Applied { seq: Seq(1) };
    const T0: ServerTime = ServerTime(1_000_000_000);

    fn t(secs: u64) -> ServerTime {
        T0 + Duration::from_secs(secs)
    }

    fn limits(window: usize, max_sessions: usize, max_user_sessions: usize) -> Limits {
        Limits {
            window,
            max_sessions,
            max_user_sessions,
            margin: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_repeat_gets_the_original_outcome() {
        let mut s = Sessions::new(limits(4, 10, 4));
        let no = Outcome::Rejected {
            reason: Reason::NotAllowed,
        };
        s.record(id(1, 1), UserId(7), no, T0);
        assert_eq!(s.check(id(1, 1), UserId(7), T0), Seen::Again(no));
        assert_eq!(s.check(id(1, 2), UserId(7), T0), Seen::New);
    }

    #[test]
    fn the_window_forgets_old_ids_as_stale() {
        let mut s = Sessions::new(limits(4, 10, 4));
        for n in 1..=6 {
            s.record(id(1, n), UserId(7), OK, T0);
        }
        assert_eq!(s.check(id(1, 1), UserId(7), T0), Seen::Stale);
        assert_eq!(s.check(id(1, 2), UserId(7), T0), Seen::Stale);
        assert_eq!(s.check(id(1, 3), UserId(7), T0), Seen::Again(OK));
        assert_eq!(s.check(id(1, 7), UserId(7), T0), Seen::New);
        // Out of order: an id between remembered ones is remembered too.
        s.record(id(1, 9), UserId(7), OK, T0);
        s.record(id(1, 8), UserId(7), OK, T0);
        assert_eq!(s.check(id(1, 8), UserId(7), T0), Seen::Again(OK));
        assert_eq!(s.check(id(1, 4), UserId(7), T0), Seen::Stale);
    }

    #[test]
    fn another_user_with_the_same_session_id_has_its_own_memory() {
        let mut s = Sessions::new(limits(4, 10, 4));
        s.record(id(1, 1), UserId(7), OK, T0);
        assert_eq!(s.check(id(1, 1), UserId(8), T0), Seen::New);
        let no = Outcome::Rejected {
            reason: protocol::Reason::NotAllowed,
        };
        s.record(id(1, 1), UserId(8), no, T0);
        assert_eq!(s.check(id(1, 1), UserId(7), T0), Seen::Again(OK));
        assert_eq!(s.check(id(1, 1), UserId(8), T0), Seen::Again(no));
    }

    #[test]
    fn an_evicted_session_answers_stale_never_new() {
        // Three users, room for two sessions: user 1's session goes.
        let mut s = Sessions::new(limits(4, 2, 4));
        s.record(id(1, 1), UserId(1), OK, t(0));
        s.record(id(2, 1), UserId(2), OK, t(1));
        s.record(id(1, 2), UserId(1), OK, t(2));
        s.record(id(3, 1), UserId(3), OK, t(3));
        assert_eq!(s.len(), 2);
        // User 2's only session was the least recently active.
        assert_eq!(s.check(id(2, 1), UserId(2), t(1)), Seen::Stale);
        assert_eq!(s.check(id(1, 1), UserId(1), t(0)), Seen::Again(OK));
        // A brand-new session stamped now is decided.
        assert_eq!(s.check(id(9, 1), UserId(2), t(60)), Seen::New);
        // The old session coming back: new ids decided, old ones stale.
        s.record(id(2, 2), UserId(2), OK, t(60));
        assert_eq!(s.check(id(2, 1), UserId(2), t(1)), Seen::Stale);
        assert_eq!(s.check(id(2, 2), UserId(2), t(60)), Seen::Again(OK));
    }

    #[test]
    fn a_user_has_at_most_its_cap_of_live_sessions() {
        let mut s = Sessions::new(limits(4, 100, 2));
        for session in 1..=5 {
            s.record(id(session, 1), UserId(7), OK, t(session));
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.users(), 1);
        for session in 1..=3 {
            assert_eq!(s.check(id(session, 1), UserId(7), t(session)), Seen::Stale);
        }
        assert_eq!(s.check(id(5, 1), UserId(7), t(5)), Seen::Again(OK));
        // Another user's sessions are untouched by user 7's churn.
        assert_eq!(s.check(id(1, 1), UserId(8), t(1)), Seen::New);
    }

    #[test]
    fn the_sizes_the_docs_state() {
        assert_eq!(std::mem::size_of::<(u64, Outcome)>(), 24);
        assert!(std::mem::size_of::<Window>() <= 64);
        // A full window never holds more than its capacity allows.
        let mut s = Sessions::new(limits(512, 10, 4));
        for n in 1..=5000 {
            s.record(id(1, n), UserId(7), OK, T0);
        }
        let w = &s.users[&UserId(7)].sessions[&SessionId(1)];
        assert_eq!(w.outcomes.len(), 512);
        assert!(w.outcomes.capacity() <= 512);
    }

    #[test]
    fn the_memory_survives_a_checkpoint_exactly() {
        let mut s = Sessions::new(limits(4, 3, 2));
        for k in 1..=9u64 {
            s.record(id(k % 4, k), UserId(k % 3), OK, t(k));
        }
        let back = Sessions::import(s.limits, s.export());
        assert_eq!(back.export(), s.export());
        assert_eq!(back.len(), s.len());
        for k in 1..=9u64 {
            let (i, u, at) = (id(k % 4, k), UserId(k % 3), t(k));
            assert_eq!(back.check(i, u, at), s.check(i, u, at));
        }
    }

    #[test]
    fn a_forgotten_outcome_is_decided_afresh_and_its_neighbours_stay() {
        let mut m = Sessions::new(limits(8, 100, 8));
        let u = UserId(1);
        m.record(id(1, 1), u, OK, t(0));
        m.record(id(1, 2), u, OK, t(0));
        m.forget(id(1, 2), u);
        assert_eq!(m.check(id(1, 2), u, t(0)), Seen::New);
        assert_eq!(m.check(id(1, 1), u, t(0)), Seen::Again(OK));
        m.forget(id(9, 9), UserId(9));
        assert_eq!(m.len(), 1);
    }
}
