//! PK battles across nodes: which rooms to pin together, when to fetch an
//! invited room from its holder, when to let a pair go. Pure (takes `now`,
//! does no IO); the node's driver executes its [`Step`]s.
//!
//! A battle's two rooms are decided by one [`Authority`](crate::rules::Authority),
//! so they must live on one node for the battle's life. When an invitation
//! names a room this node does not hold, the node pins the invited room to
//! the inviter's (key `pin.<invited>` in the placement bucket, so every
//! node's [`Policy`](super::Policy) sends it where the inviter is), asks
//! its holder to release it at once, wants it, and decides the parked
//! invitation once it has rebuilt the room. The pin goes when neither room
//! has a battle or an invitation any more.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::RoomId;

/// How long a fetch counts as under way: a second invitation for the same
/// room meanwhile asks nothing again.
pub const FETCH_FOR: Duration = Duration::from_secs(2);

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write `pin.<room>` = `to` in the bucket.
    Pin {
        /// The invited room.
        room: RoomId,
        /// The inviter's room.
        to: RoomId,
    },
    /// Ask the node holding `room` to release it now (and want it here).
    Fetch {
        /// The invited room.
        room: RoomId,
        /// The inviter's room (the holder pins `room` to it too).
        to: RoomId,
    },
    /// Delete `pin.<room>`: it is placed on its own again.
    Unpin {
        /// The formerly invited room.
        room: RoomId,
    },
}

/// How a room stands on this node, for [`Pairs::poll_unpin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Not held here.
    Elsewhere,
    /// Held, with a battle or an invitation (sent or received).
    Busy,
    /// Held, with neither.
    Idle,
}

/// The pins this node knows and the fetches it has under way.
#[derive(Clone, Debug, Default)]
pub struct Pairs {
    /// Invited room → inviter's room.
    pins: BTreeMap<RoomId, RoomId>,
    /// Invited rooms being fetched, and since when.
    fetching: BTreeMap<RoomId, Instant>,
}

impl Pairs {
    /// No pins.
    pub fn new() -> Pairs {
        Pairs::default()
    }

    /// The pins: invited room → inviter's room.
    pub fn pins(&self) -> &BTreeMap<RoomId, RoomId> {
        &self.pins
    }

    /// The bucket's pins as listed now (they replace what was known, but a
    /// pin this node is writing stays).
    pub fn handle_listed(
        &mut self,
        now: Instant,
        listed: impl IntoIterator<Item = (RoomId, RoomId)>,
    ) {
        self.expire(now);
        let kept: Vec<(RoomId, RoomId)> = (self.fetching.keys())
            .filter_map(|room| self.pins.get(room).map(|to| (*room, *to)))
            .collect();
        self.pins.clear();
        for (room, to) in listed.into_iter().chain(kept) {
            self.pin(room, to);
        }
    }

    /// Another node pinned `room` to `to` (it asked this one to release
    /// `room`).
    pub fn handle_pinned(&mut self, room: RoomId, to: RoomId) {
        self.pin(room, to);
    }

    /// Pin `room` to `to`. Two crossing invitations (each room inviting
    /// the other, on two nodes at once) would pin each room to the other:
    /// of such a cycle the pin of the greater room is kept, on every node
    /// alike, so both rooms go to the lesser room's node.
    fn pin(&mut self, room: RoomId, to: RoomId) {
        if room == to {
            return;
        }
        if self.pins.get(&to) == Some(&room) {
            if room < to {
                return;
            }
            self.pins.remove(&to);
        }
        self.pins.insert(room, to);
    }

    /// `room`'s pin was deleted (its pair was let go): forget it, unless
    /// this node is fetching it (a new invitation pinned it again).
    pub fn handle_unpinned(&mut self, room: RoomId) {
        if !self.fetching.contains_key(&room) {
            self.pins.remove(&room);
        }
    }

    /// An invitation from `inviter` (held here) to `invited`, which is not
    /// held here: what to do (nothing while a fetch of it is under way).
    pub fn handle_invite(&mut self, now: Instant, inviter: RoomId, invited: RoomId) -> Vec<Step> {
        self.expire(now);
        if inviter == invited || self.fetching.contains_key(&invited) {
            return Vec::new();
        }
        self.pin(invited, inviter);
        self.fetching.insert(invited, now);
        vec![
            Step::Pin {
                room: invited,
                to: inviter,
            },
            Step::Fetch {
                room: invited,
                to: inviter,
            },
        ]
    }

    /// An invitation from `inviter` to `invited`, both held here: pin the
    /// invited room to the inviter's unless it is already, so that a node
    /// taking them over after this one dies takes both.
    pub fn handle_local_invite(&mut self, inviter: RoomId, invited: RoomId) -> Vec<Step> {
        if inviter == invited || self.pins.get(&invited) == Some(&inviter) {
            return Vec::new();
        }
        self.pin(invited, inviter);
        vec![Step::Pin {
            room: invited,
            to: inviter,
        }]
    }

    /// `room` was won here: its fetch is over.
    pub fn handle_gained(&mut self, room: RoomId) {
        self.fetching.remove(&room);
    }

    /// Pins to let go: the inviter's room is held here with neither a
    /// battle nor an invitation, and the invited room is not busy here
    /// either, and not being fetched. `held` says how a room stands here.
    pub fn poll_unpin(&mut self, now: Instant, held: impl Fn(RoomId) -> Held) -> Vec<Step> {
        self.expire(now);
        let done: Vec<RoomId> = (self.pins.iter())
            .filter(|(room, to)| {
                !self.fetching.contains_key(room)
                    && held(**to) == Held::Idle
                    && held(**room) != Held::Busy
            })
            .map(|(room, _)| *room)
            .collect();
        for room in &done {
            self.pins.remove(room);
        }
        done.into_iter().map(|room| Step::Unpin { room }).collect()
    }

    fn expire(&mut self, now: Instant) {
        self.fetching.retain(|_, since| *since + FETCH_FOR > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RoomId = RoomId(1);
    const B: RoomId = RoomId(2);

    #[test]
    fn an_invitation_to_a_room_held_elsewhere_pins_and_fetches_it_once() {
        let mut p = Pairs::new();
        let t = Instant::now();
        let steps = p.handle_invite(t, A, B);
        assert_eq!(
            steps,
            vec![Step::Pin { room: B, to: A }, Step::Fetch { room: B, to: A }]
        );
        assert_eq!(p.pins().get(&B), Some(&A));
        // A resend while the fetch is under way asks nothing again.
        assert!(p
            .handle_invite(t + Duration::from_millis(100), A, B)
            .is_empty());
        // A listing without the pin (not written yet) keeps it.
        p.handle_listed(t + Duration::from_millis(200), []);
        assert_eq!(p.pins().get(&B), Some(&A));
        // Once the fetch has run out, a new invitation fetches again.
        let later = t + FETCH_FOR + Duration::from_millis(1);
        assert_eq!(p.handle_invite(later, A, B).len(), 2);
        assert!(p.handle_invite(later, A, A).is_empty(), "no self pin");
    }

    #[test]
    fn rooms_of_an_invitation_held_together_are_pinned_once() {
        let mut p = Pairs::new();
        assert_eq!(
            p.handle_local_invite(A, B),
            vec![Step::Pin { room: B, to: A }]
        );
        assert_eq!(p.pins().get(&B), Some(&A));
        assert!(p.handle_local_invite(A, B).is_empty(), "pinned already");
        assert!(p.handle_local_invite(A, A).is_empty());
    }

    #[test]
    fn a_pair_is_let_go_only_when_neither_room_is_busy() {
        let mut p = Pairs::new();
        let t = Instant::now();
        p.handle_invite(t, A, B);
        let idle = |_: RoomId| Held::Idle;
        // While fetching nothing is let go (the invitation is not decided yet).
        assert!(p.poll_unpin(t, idle).is_empty());
        p.handle_gained(B);
        let busy_b = |r: RoomId| if r == B { Held::Busy } else { Held::Idle };
        assert!(p.poll_unpin(t, busy_b).is_empty());
        let busy_a = |r: RoomId| if r == A { Held::Busy } else { Held::Idle };
        assert!(p.poll_unpin(t, busy_a).is_empty());
        // The inviter's room held elsewhere: that node decides.
        let gone = |r: RoomId| if r == A { Held::Elsewhere } else { Held::Idle };
        assert!(p.poll_unpin(t, gone).is_empty());
        assert_eq!(p.poll_unpin(t, idle), vec![Step::Unpin { room: B }]);
        assert!(p.pins().is_empty());
        // A pin another node wrote is learnt, and listed away again.
        p.handle_pinned(B, A);
        assert_eq!(p.pins().get(&B), Some(&A));
        p.handle_listed(t, []);
        assert!(p.pins().is_empty());
        p.handle_pinned(B, A);
        p.handle_unpinned(B);
        assert!(p.pins().is_empty());
    }

    #[test]
    fn crossing_pins_settle_on_the_lesser_room_on_every_node() {
        let t = Instant::now();
        // Node x saw a's invitation first, node y b's; each learns the other.
        let mut x = Pairs::new();
        x.handle_invite(t, A, B);
        x.handle_pinned(A, B);
        let mut y = Pairs::new();
        y.handle_invite(t, B, A);
        y.handle_pinned(B, A);
        let want: BTreeMap<RoomId, RoomId> = [(B, A)].into_iter().collect();
        assert_eq!(x.pins(), &want);
        assert_eq!(y.pins(), &want);
        // The bucket holding both keys lists the same on any node.
        let mut z = Pairs::new();
        z.handle_listed(t, [(A, B), (B, A)]);
        assert_eq!(z.pins(), &want);
    }
}
