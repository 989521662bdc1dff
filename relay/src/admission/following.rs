//! The rooms one connection follows, as its reader sees its joins and
//! leaves, and the small budget for actions in any other room.
//!
//! A viewer acts in rooms it joined: the SDK hands out a `Room` only for a
//! join, and on a reconnect it sends its joins (on the control stream)
//! before anything it sends again. An action in a room the connection does
//! not follow is therefore either a race with its own join (rare, and the
//! budget lets it through) or an attacker spraying room ids: each such
//! action forwarded would cost the origin a lookup of the room and a log
//! record for its refusal, so past the budget it is answered `Throttled`
//! here (not an outcome: nothing happened, the sender may come back).
//! A host or operator acts where its token says, joined or not (a host
//! opens its room with its first action).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use protocol::room::Grant;
use protocol::RoomId;

use super::{ActionVerdict, Bucket, Limits};

/// One connection's followed rooms (at most `rooms_per_connection`, as the
/// hub allows) and its budget for actions elsewhere.
#[derive(Debug, Clone)]
pub struct Following {
    rooms: BTreeSet<RoomId>,
    cap: usize,
    elsewhere: Bucket,
}

impl Following {
    /// Nothing followed yet, a full budget.
    pub fn new(limits: &Limits, now: Instant) -> Following {
        Following {
            rooms: BTreeSet::new(),
            cap: limits.rooms_per_connection,
            elsewhere: Bucket::new(
                limits.unfollowed_actions_per_sec,
                limits.unfollowed_action_burst,
                now,
            ),
        }
    }

    /// The connection's join of `room` went to the hub (past the cap the
    /// hub refuses it, and so it is not followed here either).
    pub fn handle_join(&mut self, room: RoomId) {
        if self.rooms.len() < self.cap {
            self.rooms.insert(room);
        }
    }

    /// The connection left `room`.
    pub fn handle_leave(&mut self, room: RoomId) {
        self.rooms.remove(&room);
    }

    /// Whether the connection follows `room`.
    pub fn follows(&self, room: RoomId) -> bool {
        self.rooms.contains(&room)
    }

    /// An action in `room` with the token's `grant` there: forwarded in a
    /// followed room or by a host or operator; elsewhere only within the
    /// budget, else `Throttle` with when to come back.
    pub fn handle_action(&mut self, now: Instant, room: RoomId, grant: Grant) -> ActionVerdict {
        if grant != Grant::Viewer || self.follows(room) {
            return ActionVerdict::Forward;
        }
        match self.elsewhere.take(now) {
            Ok(()) => ActionVerdict::Forward,
            Err(wait) => ActionVerdict::Throttle(wait.max(Duration::from_millis(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            rooms_per_connection: 2,
            unfollowed_actions_per_sec: 2,
            unfollowed_action_burst: 3,
            ..Limits::default()
        }
    }

    #[test]
    fn actions_sprayed_over_unfollowed_rooms_are_throttled_past_a_small_budget() {
        let t = Instant::now();
        let mut f = Following::new(&limits(), t);
        let forwarded = (0..100u64)
            .filter(|n| {
                f.handle_action(t, RoomId(1_000 + n), Grant::Viewer) == ActionVerdict::Forward
            })
            .count();
        assert_eq!(forwarded, 3, "the burst only");
        let ActionVerdict::Throttle(wait) = f.handle_action(t, RoomId(5), Grant::Viewer) else {
            panic!("over the budget");
        };
        assert_eq!(wait, Duration::from_millis(500), "one token at 2/s");
        assert_eq!(
            f.handle_action(t + wait, RoomId(5), Grant::Viewer),
            ActionVerdict::Forward,
            "told when to come back, it gets through"
        );
    }

    #[test]
    fn a_followed_room_and_a_hosts_or_operators_action_cost_nothing() {
        let t = Instant::now();
        let mut f = Following::new(&limits(), t);
        f.handle_join(RoomId(1));
        for _ in 0..100 {
            assert_eq!(
                f.handle_action(t, RoomId(1), Grant::Viewer),
                ActionVerdict::Forward
            );
            assert_eq!(
                f.handle_action(t, RoomId(9), Grant::Host),
                ActionVerdict::Forward
            );
            assert_eq!(
                f.handle_action(t, RoomId(9), Grant::Operator),
                ActionVerdict::Forward
            );
        }
        // Left: the room costs the budget again.
        f.handle_leave(RoomId(1));
        let forwarded = (0..10)
            .filter(|_| f.handle_action(t, RoomId(1), Grant::Viewer) == ActionVerdict::Forward)
            .count();
        assert_eq!(forwarded, 3);
    }

    #[test]
    fn no_more_rooms_are_followed_than_the_hub_allows() {
        let t = Instant::now();
        let mut f = Following::new(&limits(), t);
        for r in 1..=5 {
            f.handle_join(RoomId(r));
        }
        assert!(f.follows(RoomId(1)) && f.follows(RoomId(2)));
        assert!(!f.follows(RoomId(3)), "the hub refuses a third join");
    }
}
