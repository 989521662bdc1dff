//! Cluster mode: rooms let go for a failed append or fence, won again
//! after a wait that doubles with each failure in a row (a stream electing
//! a leader fails every try for seconds), a battle's two rooms together.

use std::time::Instant;

use protocol::RoomId;

use super::cluster::{Driver, REWIN_FIRST, REWIN_MAX};

impl Driver {
    /// Hand `room`'s claim back now (its append or fence failed: the
    /// outcome is unknown, or another node wrote) and, while the policy
    /// still gives it to this node, want it again once the release has
    /// run: a new epoch, fenced and rebuilt from the log.
    ///
    /// A battle's rooms go together: a partner held here is dropped and
    /// won again with it. (Served alone, its gifts would move a battle
    /// score whose other half is not here to move.)
    pub(super) fn retry(&mut self, room: RoomId) {
        self.retry_one(room);
        for partner in self.linked(room, true) {
            if self.held.contains(&partner) {
                tracing::info!(%room, %partner, "battle partner dropped with it");
                let mut moved = Vec::new();
                self.unserve(partner, &mut moved);
                self.pending_moved.extend(moved);
                self.retry_one(partner);
            }
        }
    }

    fn retry_one(&mut self, room: RoomId) {
        self.keeper.release(room);
        let now = Instant::now();
        let tries = self.failures.entry(room).or_default();
        let wait = REWIN_FIRST * 2u32.saturating_pow((*tries).min(5));
        *tries += 1;
        self.rewin.insert(room, now + wait.min(REWIN_MAX));
    }

    /// Want again the rooms [`Driver::retry`] let go whose wait is over.
    pub(super) fn win_again(&mut self) {
        let now = Instant::now();
        let due: Vec<RoomId> = (self.rewin.iter())
            .filter(|(_, at)| **at <= now)
            .map(|(room, _)| *room)
            .collect();
        for room in due {
            self.rewin.remove(&room);
            if !self.held.contains(&room) && self.elsewhere(room).is_none() {
                tracing::debug!(%room, "wanting a dropped room again");
                self.keeper.want(now, room);
            } else {
                tracing::debug!(%room, held = self.held.contains(&room), elsewhere = ?self.elsewhere(room), "not wanting a dropped room again");
            }
        }
    }
}
