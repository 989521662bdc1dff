//! Which origin node should serve a room, in cluster mode: rendezvous
//! (highest random weight) hashing over the live nodes' names. Pure and
//! the same on every machine, so origin nodes agree on who wants what
//! without talking, and a relay can send a room's traffic to the right
//! node first (a node that disagrees answers `Moved` or `Redirect`).
//!
//! The score is FNV-1a over the room id (little-endian) and the node name,
//! then the SplitMix64 finaliser: stable across builds and machines (std's
//! hasher is not promised to be), which every node must agree on.

use crate::id::RoomId;

/// The rendezvous weight of `room` on `node`.
pub fn score(room: RoomId, node: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in room.0.to_le_bytes().iter().chain(node.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    // SplitMix64's finaliser: FNV alone mixes the last bytes poorly.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The node of `nodes` that should serve `room` (`None` if there is none):
/// the highest score, ties to the greater name.
pub fn owner<'a, I>(room: RoomId, nodes: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    (nodes.into_iter()).max_by_key(|node| (score(room, node), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a then SplitMix64 over 42u64 (little-endian) and "a", computed
    /// independently (Python).
    const PINNED: u64 = 0x2adb_5581_5696_7413;

    #[test]
    fn scores_are_stable_across_builds() {
        // Every node must compute the same owner: pin the function.
        assert_eq!(score(RoomId(1), "origin-1"), score(RoomId(1), "origin-1"));
        assert_ne!(score(RoomId(1), "origin-1"), score(RoomId(2), "origin-1"));
        assert_eq!(
            score(RoomId(42), "a"),
            PINNED,
            "{:#x}",
            score(RoomId(42), "a")
        );
    }

    #[test]
    fn the_owner_is_the_highest_scorer_whatever_the_order() {
        let nodes = ["origin-1", "origin-2", "origin-3"];
        for r in 1..200 {
            let room = RoomId(r);
            let a = owner(room, nodes);
            let b = owner(room, nodes.iter().rev().copied());
            assert_eq!(a, b);
            let best = nodes.iter().map(|n| score(room, n)).max();
            assert_eq!(a.map(|n| score(room, n)), best);
        }
        assert_eq!(owner(RoomId(1), []), None);
    }
}
