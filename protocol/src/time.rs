//! Origin time. The origin's clock is the reference for every deadline; relays
//! and clients estimate their offset to it and never send "N seconds left".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in origin time: microseconds since the Unix epoch, as the origin
/// counts them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(any(test, feature = "arbitrary"), derive(proptest_derive::Arbitrary))]
pub struct ServerTime(pub u64);

impl ServerTime {
    /// The epoch itself; useful as "no time yet".
    pub const ZERO: ServerTime = ServerTime(0);

    /// Microseconds since the epoch.
    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: ServerTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `self - d`, clamped at the epoch.
    pub fn saturating_sub(self, d: Duration) -> ServerTime {
        ServerTime(self.0.saturating_sub(micros(d)))
    }

    /// Signed difference `self - other` in microseconds.
    pub fn diff_micros(self, other: ServerTime) -> i64 {
        // Times are far below i64::MAX microseconds (292k years).
        (self.0 as i128 - other.0 as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Add<Duration> for ServerTime {
    type Output = ServerTime;
    fn add(self, d: Duration) -> ServerTime {
        ServerTime(self.0.saturating_add(micros(d)))
    }
}

impl Sub<ServerTime> for ServerTime {
    type Output = Duration;
    /// Saturating: a later `rhs` gives zero.
    fn sub(self, rhs: ServerTime) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for ServerTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// One clock exchange: local send and receive times (microseconds of any
/// local monotonic clock) and the origin time the far side stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// Local time the ping left.
    pub sent: u64,
    /// Local time the pong arrived.
    pub received: u64,
    /// Origin time in the pong.
    pub origin: ServerTime,
}

impl ClockSample {
    /// Round trip, microseconds.
    pub fn rtt(&self) -> u64 {
        self.received.saturating_sub(self.sent)
    }

    /// `origin - local` at the midpoint of the exchange, microseconds.
    pub fn offset(&self) -> i64 {
        let mid = self.sent / 2 + self.received / 2 + (self.sent % 2 + self.received % 2) / 2;
        (self.origin.0 as i128 - mid as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// NTP-style offset estimation with a min-RTT filter: of the last `window`
/// exchanges, the one with the smallest round trip has the least room for
/// asymmetric queueing, so its offset is the one believed.
#[derive(Clone, Debug)]
pub struct OffsetEstimator {
    window: usize,
    samples: std::collections::VecDeque<ClockSample>,
}

impl OffsetEstimator {
    /// Keep the last `window` samples (at least 1).
    pub fn new(window: usize) -> Self {
        OffsetEstimator {
            window: window.max(1),
            samples: std::collections::VecDeque::new(),
        }
    }

    /// Add one exchange. Samples with a negative round trip are ignored.
    pub fn handle_sample(&mut self, sample: ClockSample) {
        if sample.received < sample.sent {
            return;
        }
        self.samples.push_back(sample);
        while self.samples.len() > self.window {
            self.samples.pop_front();
        }
    }

    fn best(&self) -> Option<&ClockSample> {
        self.samples.iter().min_by_key(|s| s.rtt())
    }

    /// `origin - local`, microseconds, once there is a sample.
    pub fn offset(&self) -> Option<i64> {
        self.best().map(ClockSample::offset)
    }

    /// The round trip of the believed sample.
    pub fn rtt(&self) -> Option<Duration> {
        self.best().map(|s| Duration::from_micros(s.rtt()))
    }

    /// Origin time at local time `local`, once there is a sample.
    pub fn origin_at(&self, local: u64) -> Option<ServerTime> {
        let off = self.offset()?;
        Some(ServerTime(
            (local as i128 + off as i128).clamp(0, u64::MAX as i128) as u64,
        ))
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_exchange_wins() {
        let mut e = OffsetEstimator::new(8);
        // True offset 1_000_000. A slow exchange with asymmetric delay (the
        // reply queued 40 ms) would say 980_000.
        e.handle_sample(ClockSample {
            sent: 0,
            received: 50_000,
            origin: ServerTime(1_005_000),
        });
        assert_eq!(e.offset(), Some(980_000));
        e.handle_sample(ClockSample {
            sent: 100_000,
            received: 102_000,
            origin: ServerTime(1_101_000),
        });
        assert_eq!(e.offset(), Some(1_000_000));
        assert_eq!(e.rtt(), Some(Duration::from_micros(2_000)));
        assert_eq!(e.origin_at(200_000), Some(ServerTime(1_200_000)));
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut e = OffsetEstimator::new(2);
        e.handle_sample(ClockSample {
            sent: 0,
            received: 10,
            origin: ServerTime(5),
        });
        e.handle_sample(ClockSample {
            sent: 100,
            received: 200,
            origin: ServerTime(1_150),
        });
        e.handle_sample(ClockSample {
            sent: 300,
            received: 400,
            origin: ServerTime(1_350),
        });
        assert_eq!(e.offset(), Some(1_000));
        assert_eq!(e.len(), 2);
    }
}
