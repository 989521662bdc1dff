//! The warm standby connection's own state, network-free (the session's
//! use of it is in `standby.rs`): whether one is open, being opened or
//! planned, and the backoff after failed attempts.

use std::time::{Duration, Instant};

use super::io::Link;

/// How long after the live connection came up the standby is opened: the
/// joins on the live one go first.
pub(super) const STANDBY_AFTER: Duration = Duration::from_millis(200);
/// The first wait before trying again after a standby failed to open; it
/// doubles with each failure in a row…
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// …up to this.
const STANDBY_RETRY_MAX: Duration = Duration::from_secs(30);

/// The standby connection's state (network-free: the session orders, the
/// driver dials).
#[derive(Debug)]
pub(super) struct Standby {
    /// Whether the session keeps one at all (the config's `standby`, and
    /// more than one relay to choose from).
    pub(super) enabled: bool,
    /// The open standby connection.
    pub(super) link: Option<Link>,
    /// The generation of the attempt in progress.
    pub(super) connecting: Option<u64>,
    /// When to open one; `None`: not planned.
    pub(super) open_at: Option<Instant>,
    /// Failed attempts in a row.
    pub(super) failures: u32,
}

impl Standby {
    /// A standby plan for a session that starts at `now`.
    pub(super) fn new(enabled: bool, now: Instant) -> Standby {
        Standby {
            enabled,
            link: None,
            connecting: None,
            open_at: enabled.then_some(now + STANDBY_AFTER),
            failures: 0,
        }
    }

    /// When the session next has something to do for it.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.open_at
            .filter(|_| self.link.is_none() && self.connecting.is_none())
    }

    /// Plan an attempt at `at` unless one is open, under way or planned
    /// sooner.
    pub(super) fn plan(&mut self, at: Instant) {
        if !self.enabled || self.link.is_some() || self.connecting.is_some() {
            return;
        }
        self.open_at = Some(self.open_at.map_or(at, |t| t.min(at)));
    }

    /// The wait after `failures` failed attempts in a row.
    pub(super) fn backoff(failures: u32) -> Duration {
        (STANDBY_RETRY * 2u32.saturating_pow(failures.saturating_sub(1).min(5)))
            .min(STANDBY_RETRY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let waits: Vec<u64> = (1..=8).map(|f| Standby::backoff(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_disabled_standby_is_never_planned() {
        let now = Instant::now();
        let mut sb = Standby::new(false, now);
        sb.plan(now);
        assert_eq!(sb.poll_timeout(), None);
        let mut sb = Standby::new(true, now);
        assert_eq!(sb.poll_timeout(), Some(now + STANDBY_AFTER));
        sb.plan(now + Duration::from_secs(9));
        assert_eq!(sb.poll_timeout(), Some(now + STANDBY_AFTER), "sooner wins");
    }
}
