//! Which nodes are alive, from the node leases in the bucket (key
//! `node.<name>`, each node renewing its own with a [`Lease`](super::lease::Lease)).
//! Pure: the driver lists the keys now and then and feeds what it saw.
//!
//! A node is alive while its key's revision has changed within
//! `ttl + margin` of now on this node's clock (or it was first seen that
//! recently): the same rule, on the same kind of clock, as a room's lease,
//! so a node is counted dead no sooner than another node could take over
//! its rooms.

use std::collections::BTreeMap;
use std::time::Instant;

use super::lease::Timing;

/// The nodes seen in the bucket.
#[derive(Clone, Debug)]
pub struct Members {
    timing: Timing,
    /// Node → (its key's last revision, when that revision was first seen).
    seen: BTreeMap<String, (u64, Instant)>,
}

impl Members {
    /// No node seen yet.
    pub fn new(timing: Timing) -> Members {
        Members {
            timing,
            seen: BTreeMap::new(),
        }
    }

    /// A listing of the node keys at `now`: each node with its key's
    /// revision. A node missing from it (its key was deleted on drain, or
    /// expired) is gone at once.
    pub fn handle_listed(&mut self, now: Instant, nodes: impl IntoIterator<Item = (String, u64)>) {
        let mut next = BTreeMap::new();
        for (node, revision) in nodes {
            let since = match self.seen.get(&node) {
                Some(&(r, since)) if r == revision => since,
                _ => now,
            };
            next.insert(node, (revision, since));
        }
        self.seen = next;
    }

    /// The nodes alive at `now`, in name order.
    pub fn alive(&self, now: Instant) -> impl Iterator<Item = &str> {
        let lasts = self.timing.ttl + self.timing.margin;
        (self.seen.iter())
            .filter(move |(_, (_, since))| now < *since + lasts)
            .map(|(node, _)| node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TIMING: Timing = Timing {
        ttl: Duration::from_millis(3000),
        margin: Duration::from_millis(500),
    };

    fn listing(nodes: &[(&str, u64)]) -> Vec<(String, u64)> {
        nodes.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    #[test]
    fn a_node_that_stops_renewing_is_dead_after_ttl_and_margin() {
        let t0 = Instant::now();
        let mut m = Members::new(TIMING);
        m.handle_listed(t0, listing(&[("a", 1), ("b", 2)]));
        assert_eq!(m.alive(t0).collect::<Vec<_>>(), ["a", "b"]);
        // a renews every second; b stopped.
        for s in 1..=5u64 {
            let now = t0 + Duration::from_secs(s);
            m.handle_listed(now, listing(&[("a", 10 + s), ("b", 2)]));
        }
        let t = t0 + Duration::from_millis(3499);
        assert_eq!(m.alive(t).collect::<Vec<_>>(), ["a", "b"], "not before");
        let t = t0 + Duration::from_millis(3500);
        assert_eq!(m.alive(t).collect::<Vec<_>>(), ["a"]);
        // A drained node's key is deleted: gone at once.
        m.handle_listed(t, listing(&[]));
        assert_eq!(m.alive(t).count(), 0);
    }
}
