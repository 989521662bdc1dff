//! The memory of applied action ids: what makes every retry, duplicate and
//! failover harmless. Bounded two ways: a window of ids per session, and a
//! number of sessions (the least recently active is forgotten first).
//!
//! A session belongs to its user: the memory is keyed by `(user, session)`,
//! so another user presenting the same session id (ids are visible in every
//! event's `cause`) gets a memory of its own and cannot touch this one.

use protocol::{ActionId, Outcome, SessionId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the memory says about an action id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen: decide it.
    New,
    /// Seen: answer with this outcome and change nothing.
    Again(Outcome),
    /// Older than the session's window: the origin cannot tell.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Window {
    /// Ids at or below this are forgotten.
    floor: u64,
    outcomes: BTreeMap<u64, Outcome>,
    /// Logical time of the last use, for eviction.
    touched: u64,
}

/// The id memory as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsSnapshot {
    windows: Vec<(Key, Window)>,
    clock: u64,
}

/// Whose session.
type Key = (UserId, SessionId);

/// Per-session windows of outcomes.
#[derive(Debug, Clone)]
pub struct Sessions {
    window: usize,
    max_sessions: usize,
    windows: BTreeMap<Key, Window>,
    /// `(touched, session)`: the eviction order.
    by_age: BTreeSet<(u64, Key)>,
    clock: u64,
}

impl Sessions {
    /// Remember `window` ids for each of at most `max_sessions` sessions.
    pub fn new(window: usize, max_sessions: usize) -> Self {
        Sessions {
            window: window.max(1),
            max_sessions: max_sessions.max(1),
            windows: BTreeMap::new(),
            by_age: BTreeSet::new(),
            clock: 0,
        }
    }

    /// What is known of `id`, sent by `user`.
    pub fn check(&self, id: ActionId, user: UserId) -> Seen {
        let Some(w) = self.windows.get(&(user, id.session)) else {
            return Seen::New;
        };
        if let Some(o) = w.outcomes.get(&id.n) {
            return Seen::Again(*o);
        }
        if id.n <= w.floor {
            return Seen::Stale;
        }
        Seen::New
    }

    /// Remember the outcome of `id`.
    pub fn record(&mut self, id: ActionId, user: UserId, outcome: Outcome) {
        self.clock += 1;
        let clock = self.clock;
        let key = (user, id.session);
        let w = self.windows.entry(key).or_insert_with(|| Window {
            floor: 0,
            outcomes: BTreeMap::new(),
            touched: clock,
        });
        self.by_age.remove(&(w.touched, key));
        w.touched = clock;
        self.by_age.insert((clock, key));
        w.outcomes.insert(id.n, outcome);
        while w.outcomes.len() > self.window {
            if let Some((n, _)) = w.outcomes.pop_first() {
                w.floor = w.floor.max(n);
            }
        }
        while self.windows.len() > self.max_sessions {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.windows.remove(&oldest);
        }
    }

    /// Everything remembered, for a checkpoint.
    pub fn export(&self) -> SessionsSnapshot {
        SessionsSnapshot {
            windows: self.windows.iter().map(|(s, w)| (*s, w.clone())).collect(),
            clock: self.clock,
        }
    }

    /// Rebuild from a checkpoint, with the limits of `window` and `max_sessions`.
    pub fn import(window: usize, max_sessions: usize, snap: SessionsSnapshot) -> Self {
        let mut s = Sessions::new(window, max_sessions);
        s.clock = snap.clock;
        for (id, w) in snap.windows {
            s.by_age.insert((w.touched, id));
            s.windows.insert(id, w);
        }
        s
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
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

    #[test]
    fn a_repeat_gets_the_original_outcome() {
        let mut s = Sessions::new(4, 10);
        let no = Outcome::Rejected {
            reason: Reason::NotAllowed,
        };
        s.record(id(1, 1), UserId(7), no);
        assert_eq!(s.check(id(1, 1), UserId(7)), Seen::Again(no));
        assert_eq!(s.check(id(1, 2), UserId(7)), Seen::New);
    }

    #[test]
    fn the_window_forgets_old_ids_as_stale() {
        let mut s = Sessions::new(4, 10);
        for n in 1..=6 {
            s.record(id(1, n), UserId(7), OK);
        }
        assert_eq!(s.check(id(1, 1), UserId(7)), Seen::Stale);
        assert_eq!(s.check(id(1, 2), UserId(7)), Seen::Stale);
        assert_eq!(s.check(id(1, 3), UserId(7)), Seen::Again(OK));
        assert_eq!(s.check(id(1, 7), UserId(7)), Seen::New);
    }

    #[test]
    fn another_user_with_the_same_session_id_has_its_own_memory() {
        let mut s = Sessions::new(4, 10);
        s.record(id(1, 1), UserId(7), OK);
        assert_eq!(s.check(id(1, 1), UserId(8)), Seen::New);
        let no = Outcome::Rejected {
            reason: protocol::Reason::NotAllowed,
        };
        s.record(id(1, 1), UserId(8), no);
        assert_eq!(s.check(id(1, 1), UserId(7)), Seen::Again(OK));
        assert_eq!(s.check(id(1, 1), UserId(8)), Seen::Again(no));
    }

    #[test]
    fn the_least_recently_active_session_is_evicted() {
        let mut s = Sessions::new(4, 2);
        s.record(id(1, 1), UserId(1), OK);
        s.record(id(2, 1), UserId(2), OK);
        s.record(id(1, 2), UserId(1), OK);
        s.record(id(3, 1), UserId(3), OK);
        assert_eq!(s.len(), 2);
        assert_eq!(s.check(id(2, 1), UserId(2)), Seen::New);
        assert_eq!(s.check(id(1, 1), UserId(1)), Seen::Again(OK));
    }
}
