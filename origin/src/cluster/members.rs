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

/// A node lease as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The node's name.
    pub node: String,
    /// Its key's revision (changes with every renewal).
    pub revision: u64,
    /// Its lease's epoch (the revision it was won at): one per incarnation.
    pub epoch: u64,
}

/// The nodes seen in the bucket.
#[derive(Clone, Debug)]
pub struct Members {
    timing: Timing,
    /// Node → (its key's last revision, when that revision was first seen,
    /// its lease's epoch).
    seen: BTreeMap<String, (u64, Instant, u64)>,
    /// When the last listing succeeded.
    last_ok: Option<Instant>,
    /// Since when the bucket could not be listed (from the last listing
    /// that succeeded): this node's clock of others' leases stands still
    /// meanwhile (see [`Members::handle_failed`]).
    blind_since: Option<Instant>,
    /// Nodes no listing here has shown, met in a claim: when first met.
    unknown: std::cell::RefCell<BTreeMap<String, Instant>>,
}

impl Members {
    /// No node seen yet.
    pub fn new(timing: Timing) -> Members {
        Members {
            timing,
            seen: BTreeMap::new(),
            last_ok: None,
            blind_since: None,
            unknown: Default::default(),
        }
    }

    /// A listing of the node keys at `now`: each node with its key's
    /// revision. A node missing from it (its key was deleted on drain, or
    /// expired) is gone at once.
    pub fn handle_listed(&mut self, now: Instant, nodes: impl IntoIterator<Item = Listed>) {
        // Back from a stretch without the bucket: what was seen before it
        // counts as seen at its end (time without sight proves no death).
        if let Some(blind) = self.blind_since.take() {
            let gap = now.saturating_duration_since(blind);
            for (_, since, _) in self.seen.values_mut() {
                *since += gap;
            }
        }
        self.last_ok = Some(now);
        let mut next = BTreeMap::new();
        for l in nodes {
            let since = match self.seen.get(&l.node) {
                Some(&(r, since, _)) if r == l.revision => since,
                _ => now,
            };
            next.insert(l.node, (l.revision, since, l.epoch));
        }
        self.seen = next;
        // Forget nodes listed since, and those unknown for long (bounded
        // by the nodes whose claims this node meets).
        let keep = self.timing.takeover_after() * 10;
        let seen = &self.seen;
        (self.unknown.get_mut())
            .retain(|n, at| !seen.contains_key(n) && now.saturating_duration_since(*at) < keep);
    }

    /// The bucket could not be listed at `now` (its stream is electing a
    /// leader, or this node is cut off from NATS). Until a listing succeeds
    /// again, no node is counted dead for time passing: a node is dead only
    /// after `ttl + margin` of this node *seeing* its lease unrenewed. (Every
    /// node's own lease lapses during a long outage all the same, so the
    /// holders stop acting; they win their rooms back once the bucket
    /// answers, instead of everyone taking everyone's rooms at once.)
    pub fn handle_failed(&mut self, now: Instant) {
        if self.blind_since.is_none() {
            self.blind_since = Some(self.last_ok.unwrap_or(now).min(now));
        }
    }

    /// The time the leases are judged at: `now`, or while blind, when
    /// sight was lost.
    fn judged_at(&self, now: Instant) -> Instant {
        self.blind_since.map_or(now, |b| b.min(now))
    }

    /// Every node seen in the last listing, alive or not.
    pub fn known(&self) -> impl Iterator<Item = &str> {
        self.seen.keys().map(String::as_str)
    }

    /// The nodes alive at `now`, in name order.
    pub fn alive(&self, now: Instant) -> impl Iterator<Item = &str> {
        let now = self.judged_at(now);
        let lasts = self.timing.takeover_after();
        (self.seen.iter())
            .filter(move |(_, (_, since, _))| now < *since + lasts)
            .map(|(node, _)| node.as_str())
    }

    /// Whether `node` is alive at `now` in the incarnation whose lease
    /// epoch is `epoch` (`None`: any). A room claimed under an earlier
    /// incarnation of a node that restarted is not held by it; one claimed
    /// under a later incarnation than the listings showed is. A node no
    /// listing has shown is held for `ttl + margin` from when this node
    /// first met it (nodes starting together claim rooms before they see
    /// each other, and between full listings only known nodes are read:
    /// unknown is not dead), then counted dead.
    pub fn holds(&self, node: &str, epoch: Option<u64>, now: Instant) -> bool {
        let now = self.judged_at(now);
        let Some(&(r, since, e)) = self.seen.get(node) else {
            let mut unknown = self.unknown.borrow_mut();
            let met = *unknown.entry(node.to_owned()).or_insert(now);
            return now < met + self.timing.takeover_after();
        };
        match epoch {
            // An incarnation won after the key's revision listed (the node
            // won its lease again since, as one whose first request timed
            // out does): held, until a listing shows whether it lives.
            Some(want) if want > r => true,
            Some(want) if want != e => false,
            _ => now < since + self.timing.takeover_after(),
        }
    }

    /// When the next node still alive at `now` is counted dead, if it is
    /// not seen renewed before then.
    pub fn next_death(&self, now: Instant) -> Option<Instant> {
        if self.blind_since.is_some() {
            return None;
        }
        (self.seen.values())
            .map(|&(_, since, _)| since + self.timing.takeover_after())
            .filter(|t| *t > now)
            .min()
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

    fn listing(nodes: &[(&str, u64)]) -> Vec<Listed> {
        (nodes.iter())
            .map(|(n, r)| Listed {
                node: n.to_string(),
                revision: *r,
                epoch: 1,
            })
            .collect()
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
        assert_eq!(m.next_death(t), Some(t0 + Duration::from_millis(3500)));
        assert!(m.holds("b", Some(1), t) && !m.holds("b", Some(2), t));
        let t = t0 + Duration::from_millis(3500);
        assert_eq!(m.alive(t).collect::<Vec<_>>(), ["a"]);
        assert!(!m.holds("b", None, t) && m.holds("a", None, t));
        // A drained node's key is deleted: gone at once.
        m.handle_listed(t, listing(&[]));
        assert_eq!(m.alive(t).count(), 0);
    }

    #[test]
    fn a_node_no_listing_showed_is_held_for_a_takeover_interval_from_first_met() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut m = Members::new(TIMING);
        // a and b listed; c won its lease after that and claimed a room:
        // this node has not seen c yet, c is not dead.
        m.handle_listed(t0, listing(&[("a", 5), ("b", 8)]));
        assert!(m.holds("c", Some(9), at(100)), "first met: held");
        assert!(m.holds("c", Some(9), at(3599)), "ttl + margin from then");
        // Listed meanwhile: judged by its lease from then on.
        m.handle_listed(at(1000), listing(&[("a", 10), ("b", 11), ("c", 12)]));
        assert!(m.holds("c", Some(1), at(4000)));
        // Never listed: dead once unknown for ttl + margin.
        assert!(m.holds("d", Some(9), at(5000)));
        assert!(!m.holds("d", Some(9), at(8500)));
    }

    #[test]
    fn a_claim_under_an_incarnation_newer_than_the_listed_one_is_held() {
        let t0 = Instant::now();
        let mut m = Members::new(TIMING);
        // c's first lease request timed out but landed (epoch 3); it won
        // again at 13 and claimed a room under 13. This node listed c's key
        // at revision 5 (epoch 3), a's later renewals made 20 the newest.
        let listed = |node: &str, revision, epoch| Listed {
            node: node.into(),
            revision,
            epoch,
        };
        m.handle_listed(t0, [listed("a", 20, 1), listed("c", 5, 3)]);
        assert!(m.holds("c", Some(13), t0), "not seen yet, not dead");
        assert!(!m.holds("c", Some(2), t0), "an older incarnation's claim");
        // Listed again: c renews under 13.
        m.handle_listed(t0, [listed("a", 21, 1), listed("c", 22, 13)]);
        assert!(m.holds("c", Some(13), t0) && !m.holds("c", Some(3), t0));
    }

    #[test]
    fn time_without_sight_of_the_bucket_kills_no_one() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut m = Members::new(TIMING);
        m.handle_listed(t0, listing(&[("a", 1), ("b", 2)]));
        m.handle_listed(at(1000), listing(&[("a", 3), ("b", 2)]));
        // The bucket stops answering after 1 s, for 6 s (a leader
        // election): nobody dies meanwhile, nor right after.
        m.handle_failed(at(1200));
        assert_eq!(m.alive(at(6000)).collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.holds("b", Some(1), at(6000)));
        assert_eq!(m.next_death(at(6000)), None);
        m.handle_listed(at(7000), listing(&[("a", 4), ("b", 2)]));
        // b was seen unrenewed for 1 s before and 0 s since: it dies at
        // 3.5 s of sight, 2.5 s after the bucket came back.
        assert_eq!(m.alive(at(9499)).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.next_death(at(9000)), Some(at(9500)));
        assert_eq!(m.alive(at(9500)).collect::<Vec<_>>(), ["a"]);
    }
}
