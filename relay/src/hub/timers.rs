//! The hub's own timers, in quinn-proto's shape: [`Hub::poll_timeout`] says
//! when the hub next has something due, the driver sleeps until then and
//! calls [`Hub::handle_timeout`]. Two things fall due:
//! - heads, every `head_every` while some room changed within
//!   `head_window` (so a client notices a lost last event); the rounds keep
//!   their cadence while rooms change, and stop when none has lately; a
//!   round heads only the rooms quiet for half a round (see `send_heads`);
//! - resends of actions whose ack is `resend_after` late, while the link is
//!   up (while it is down they wait for it to come back).
//!
//! Waking early is harmless: nothing is done before it is due.

use std::time::Instant;

use super::state::Hub;

impl Hub {
    /// When the hub next has something due, if anything: the driver calls
    /// [`Hub::handle_timeout`] then (or later).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resend = if self.upstream { self.resend_at } else { None };
        [self.heads_due(), resend].into_iter().flatten().min()
    }

    /// Do what is due at `now`: heads, then resends of overdue actions.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.heads_at.is_some_and(|at| at <= now) {
            self.send_heads(now);
            self.heads_at = Some(now + self.settings.head_every);
        }
        if self.upstream && self.resend_at.is_some_and(|at| at <= now) {
            self.resend_overdue(now);
        }
    }

    /// The next round of heads, if a room that changed lately would get one.
    fn heads_due(&self) -> Option<Instant> {
        let at = self.heads_at?;
        let last = self.last_change?;
        (at.saturating_duration_since(last) <= self.settings.head_window).then_some(at)
    }

    /// A room's cache changed at `now`: heads are due `head_every` later,
    /// unless a round is scheduled already (the cadence goes on).
    pub(super) fn room_changed(&mut self, now: Instant) {
        let scheduled = self.heads_due().is_some() || self.heads_at.is_some_and(|at| at > now);
        if !scheduled {
            self.heads_at = Some(now + self.settings.head_every);
        }
        self.last_change = Some(self.last_change.map_or(now, |t| t.max(now)));
    }
}
