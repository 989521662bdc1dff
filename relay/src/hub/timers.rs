//! The hub's own timers: heads for rooms that changed lately, and resends
//! of actions whose ack is overdue.

use std::time::Instant;

use super::state::Hub;

impl Hub {
    /// Periodic work: heads for rooms that changed lately (so a client notices
    /// a lost last event) and resends of overdue actions.
    pub fn handle_tick(&mut self, now: Instant) {
        self.send_heads(now);
        self.resend_overdue(now);
    }
}
