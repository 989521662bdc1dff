//! The origin's backstop on action rates: a token bucket per user, across
//! every relay the user's connections spread over. Relays enforce a tighter
//! limit of their own; this one only stops a user who gets past them (by
//! spreading over relays, or through a faulty relay).
//!
//! An action over the rate is not decided at all: nothing is recorded, the
//! origin answers `Throttled` with when to retry, and a later resend is
//! decided as if it were the first send. So the backstop never changes what
//! the log says, only when an action gets into it.
//!
//! Levels are integers (micro-tokens) and time is the caller's `now`: the
//! same inputs give the same answers.
//!
//! # Bounds
//!
//! At most `max_users` buckets. A bucket untouched for `burst / rate` is
//! full again, exactly as if it did not exist, so the least recently used
//! bucket is dropped first when the map is full; only when more than
//! `max_users` users act within one refill period does a dropped bucket
//! lose information (that user gets a fresh burst). One bucket costs about
//! 100 bytes (its map entry and its entry in the use order): 10 MB with the
//! default of 100,000 users.

use protocol::{ServerTime, UserId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Micro-tokens in one token (one action).
const TOKEN: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Micro-tokens available at `at`.
    level: u64,
    at: ServerTime,
}

/// Per-user token buckets.
#[derive(Debug, Clone)]
pub struct Rates {
    /// Actions per second, sustained (0: no limit).
    rate: u64,
    /// Micro-tokens in a full bucket.
    capacity: u64,
    max_users: usize,
    buckets: BTreeMap<UserId, Bucket>,
    /// `(last use, user)`: the order buckets are dropped in.
    by_use: BTreeSet<(ServerTime, UserId)>,
}

impl Rates {
    /// `rate` actions per second sustained, bursts of `burst`, for at most
    /// `max_users` users at once. A rate of 0 turns the backstop off.
    pub fn new(rate: u32, burst: u32, max_users: usize) -> Rates {
        Rates {
            rate: u64::from(rate),
            capacity: u64::from(burst.max(1)) * TOKEN,
            max_users: max_users.max(1),
            buckets: BTreeMap::new(),
            by_use: BTreeSet::new(),
        }
    }

    /// Take one action's token for `user` at `now`; `Err(wait)` when the
    /// bucket is empty, with how long until it holds one again.
    pub fn check(&mut self, now: ServerTime, user: UserId) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let (rate, capacity) = (self.rate, self.capacity);
        let b = match self.buckets.get_mut(&user) {
            Some(b) => {
                self.by_use.remove(&(b.at, user));
                let elapsed = now.saturating_since(b.at).as_micros();
                let refill = u64::try_from(elapsed).unwrap_or(u64::MAX);
                b.level = b
                    .level
                    .saturating_add(refill.saturating_mul(rate))
                    .min(capacity);
                b.at = b.at.max(now);
                b
            }
            None => {
                while self.buckets.len() >= self.max_users {
                    let Some((_, old)) = self.by_use.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&old);
                }
                self.buckets.entry(user).or_insert(Bucket {
                    level: capacity,
                    at: now,
                })
            }
        };
        let at = b.at;
        let verdict = if b.level >= TOKEN {
            b.level -= TOKEN;
            Ok(())
        } else {
            let missing = TOKEN - b.level;
            Err(Duration::from_micros(missing.div_ceil(rate)))
        };
        self.by_use.insert((at, user));
        verdict
    }

    /// Users with a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no user has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: ServerTime = ServerTime(1_000_000_000);

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut r = Rates::new(10, 20, 100);
        let u = UserId(7);
        for _ in 0..20 {
            assert_eq!(r.check(T0, u), Ok(()));
        }
        assert_eq!(r.check(T0, u), Err(Duration::from_millis(100)));
        // Another user is not affected.
        assert_eq!(r.check(T0, UserId(8)), Ok(()));
        // 100 ms later one token is back, and only one.
        let later = T0 + Duration::from_millis(100);
        assert_eq!(r.check(later, u), Ok(()));
        assert!(r.check(later, u).is_err());
        // After a full refill period the whole burst is there again.
        let much_later = later + Duration::from_secs(2);
        for _ in 0..20 {
            assert_eq!(r.check(much_later, u), Ok(()));
        }
        assert!(r.check(much_later, u).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_drops_the_least_recently_used() {
        let mut r = Rates::new(10, 1, 3);
        for u in 1..=5 {
            assert_eq!(r.check(T0 + Duration::from_millis(u), UserId(u)), Ok(()));
        }
        assert_eq!(r.len(), 3);
        // User 5 is remembered (empty bucket); user 1 was dropped (fresh).
        assert!(r.check(T0 + Duration::from_millis(6), UserId(5)).is_err());
        assert_eq!(r.check(T0 + Duration::from_millis(6), UserId(1)), Ok(()));
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let mut r = Rates::new(0, 1, 1);
        for _ in 0..1000 {
            assert_eq!(r.check(T0, UserId(1)), Ok(()));
        }
        assert!(r.is_empty());
    }
}
