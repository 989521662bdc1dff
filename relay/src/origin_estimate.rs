//! The relay's estimate of origin time: the offset between the relay's
//! local monotonic time and the origin's clock, measured by the upstream
//! link (min-RTT filtered) and shared with every client task, so that a
//! client's ping is answered at once, from here.
//!
//! Local time in the relay is [`std::time::Instant`] everywhere (the hub,
//! the scheduler, admission); this is the one place that turns it into
//! origin time ([`ServerTime`], the origin's own).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use protocol::ServerTime;

/// Local time and the estimated offset to origin time.
#[derive(Clone, Debug)]
pub struct OriginEstimate {
    /// The local timebase the offset is measured against.
    start: Instant,
    /// `origin - local` in µs, once known.
    offset: Arc<AtomicI64>,
    /// Whether `offset` holds an estimate yet.
    known: Arc<AtomicBool>,
}

impl OriginEstimate {
    /// A clock with no offset yet.
    pub fn new() -> OriginEstimate {
        OriginEstimate {
            start: Instant::now(),
            offset: Arc::new(AtomicI64::new(0)),
            known: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Local time `at` as microseconds since this clock started: the
    /// timebase of the clock samples the offset is estimated from.
    pub fn micros(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.start);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }

    /// Publish a new offset estimate (`origin - local`, µs).
    pub fn set_offset(&self, offset: i64) {
        self.offset.store(offset, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
    }

    /// Origin time at local time `at`, once an offset is known.
    pub fn origin_at(&self, at: Instant) -> Option<ServerTime> {
        if !self.known.load(Ordering::Acquire) {
            return None;
        }
        let t = self.micros(at) as i128 + self.offset.load(Ordering::Relaxed) as i128;
        Some(ServerTime(t.clamp(0, u64::MAX as i128) as u64))
    }
}

impl Default for OriginEstimate {
    fn default() -> Self {
        OriginEstimate::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn origin_time_is_local_time_plus_the_offset_once_known() {
        let clock = OriginEstimate::new();
        let at = clock.start + Duration::from_millis(5);
        assert_eq!(clock.origin_at(at), None, "no estimate yet");
        clock.set_offset(1_000_000);
        assert_eq!(clock.origin_at(at), Some(ServerTime(1_005_000)));
        clock.set_offset(-10_000);
        assert_eq!(clock.origin_at(at), Some(ServerTime(0)), "clamped at zero");
    }
}
