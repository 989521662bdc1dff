//! The relay's view of origin time: a local monotonic clock plus the offset
//! the upstream link estimates (min-RTT filtered), shared with every client
//! task so a client's ping is answered at once, from here.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use protocol::ServerTime;

/// Local time and the estimated offset to origin time.
#[derive(Clone, Debug)]
pub struct Clock {
    start: Instant,
    offset: Arc<AtomicI64>,
    known: Arc<AtomicBool>,
}

impl Clock {
    /// A clock with no offset yet.
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            offset: Arc::new(AtomicI64::new(0)),
            known: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Local monotonic microseconds since the relay started.
    pub fn local(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Publish a new offset estimate (`origin - local`, µs).
    pub fn set_offset(&self, offset: i64) {
        self.offset.store(offset, Ordering::Relaxed);
        self.known.store(true, Ordering::Release);
    }

    /// Origin time now, once an offset is known.
    pub fn origin_now(&self) -> Option<ServerTime> {
        if !self.known.load(Ordering::Acquire) {
            return None;
        }
        let t = self.local() as i128 + self.offset.load(Ordering::Relaxed) as i128;
        Some(ServerTime(t.clamp(0, u64::MAX as i128) as u64))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
