//! The origin's clock: the reference for every deadline in Ringside.
//!
//! Origin time is the system clock read once at start, then advanced by the
//! monotonic clock, so it never jumps backwards while the process lives. A
//! restarted origin re-anchors to the system clock, which keeps deadlines
//! written to the log meaningful across restarts.

use protocol::ServerTime;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps between origin time and the local monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor: Instant,
    anchor_time: ServerTime,
}

impl Clock {
    /// Anchor to the system clock now.
    pub fn new() -> Clock {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            anchor: Instant::now(),
            anchor_time: ServerTime(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)),
        }
    }

    /// Origin time now.
    pub fn now(&self) -> ServerTime {
        self.at(Instant::now())
    }

    /// Origin time at a local instant.
    pub fn at(&self, instant: Instant) -> ServerTime {
        self.anchor_time + instant.saturating_duration_since(self.anchor)
    }

    /// The local instant at which origin time reaches `t` (now, if it has).
    pub fn instant(&self, t: ServerTime) -> Instant {
        let now = Instant::now();
        let ahead: Duration = t - self.at(now);
        now + ahead
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
