//! Which live node should own which room: rendezvous (highest random
//! weight) hashing. Pure, and the same on every node, so nodes agree on
//! who wants what without talking: each room goes to the live node with the
//! highest `score(room, node)`.
//!
//! Why rendezvous: a node joining takes about `1/n` of the rooms, only
//! from the others' shares; a node leaving gives away only its own rooms,
//! spread over the rest; no ring or virtual nodes to keep. (Least-loaded
//! placement balances better under skew but needs a shared load view; the
//! lease bucket does not carry one yet.)
//!
//! A PK battle spans two rooms, and the rules decide it as one transaction,
//! so both rooms live on one node for the battle's life: a room pinned to
//! a partner goes wherever the partner goes ([`Policy::owner_of`]).
//!
//! The score is [`protocol::placement::score`], which relays use too.

use std::collections::{BTreeMap, BTreeSet};

use protocol::{placement, RoomId};

/// The live nodes and the pinned rooms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    nodes: BTreeSet<String>,
    /// Room → the room it must live with (a PK battle's invited room →
    /// the inviter's room).
    pins: BTreeMap<RoomId, RoomId>,
}

impl Policy {
    /// A policy over `nodes`.
    pub fn new(nodes: impl IntoIterator<Item = String>) -> Policy {
        Policy {
            nodes: nodes.into_iter().collect(),
            pins: BTreeMap::new(),
        }
    }

    /// A node joined (its node lease appeared).
    pub fn handle_joined(&mut self, node: &str) {
        self.nodes.insert(node.to_owned());
    }

    /// A node left (drained, or its node lease expired).
    pub fn handle_left(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// `room` lives with `partner` from now on (a battle is about to
    /// start), or on its own again (`None`: the battle ended).
    pub fn handle_pin(&mut self, room: RoomId, partner: Option<RoomId>) {
        match partner {
            Some(p) if p != room => {
                self.pins.insert(room, p);
            }
            _ => {
                self.pins.remove(&room);
            }
        }
    }

    /// The live nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(String::as_str)
    }

    /// The node that should own `room` (`None` with no live node): its
    /// partner's, if pinned, else the highest scorer.
    pub fn owner_of(&self, room: RoomId) -> Option<&str> {
        // A pin points at an unpinned room (pins are one level: the
        // invited room to the inviter's), so one hop is enough.
        let room = self.pins.get(&room).copied().unwrap_or(room);
        placement::owner(room, self.nodes.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Policy {
        Policy::new((1..=n).map(|i| format!("origin-{i}")))
    }

    fn shares(p: &Policy, rooms: u64) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in 1..=rooms {
            *out.entry(p.owner_of(RoomId(r)).expect("a node").to_owned())
                .or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn rooms_spread_over_the_live_nodes() {
        let counts = shares(&nodes(3), 3000);
        assert_eq!(counts.len(), 3);
        for (node, n) in &counts {
            assert!((850..=1150).contains(n), "{node}: {n} of 3000");
        }
        assert_eq!(Policy::default().owner_of(RoomId(1)), None);
    }

    #[test]
    fn a_leaving_node_gives_away_only_its_rooms_and_a_joining_one_takes_a_share() {
        let before = nodes(3);
        let mut after = before.clone();
        after.handle_left("origin-2");
        let mut moved = 0;
        for r in 1..=3000 {
            let (was, is) = (before.owner_of(RoomId(r)), after.owner_of(RoomId(r)));
            if was != is {
                assert_eq!(was, Some("origin-2"), "room {r} moved off a live node");
                moved += 1;
            }
        }
        assert!((850..=1150).contains(&moved), "{moved}");
        let mut joined = before.clone();
        joined.handle_joined("origin-4");
        let mut taken = 0;
        for r in 1..=3000 {
            let (was, is) = (before.owner_of(RoomId(r)), joined.owner_of(RoomId(r)));
            if was != is {
                assert_eq!(is, Some("origin-4"), "room {r} moved between old nodes");
                taken += 1;
            }
        }
        assert!((600..=900).contains(&taken), "about a quarter: {taken}");
    }

    #[test]
    fn a_pinned_room_follows_its_partner_and_comes_back_when_unpinned() {
        let mut p = nodes(3);
        let (inviter, invited) = (1..)
            .map(|r| (RoomId(1), RoomId(r + 1)))
            .find(|(a, b)| p.owner_of(*a) != p.owner_of(*b))
            .expect("two rooms on different nodes");
        let home = p.owner_of(invited).map(str::to_owned);
        p.handle_pin(invited, Some(inviter));
        assert_eq!(p.owner_of(invited), p.owner_of(inviter));
        p.handle_left(p.owner_of(inviter).expect("a node").to_owned().as_str());
        assert_eq!(p.owner_of(invited), p.owner_of(inviter), "moves with it");
        p.handle_joined(p.owner_of(inviter).expect("a node").to_owned().as_str());
        p.handle_pin(invited, None);
        assert_eq!(p.owner_of(invited).map(str::to_owned), home);
    }
}
