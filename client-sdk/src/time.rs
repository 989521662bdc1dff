//! The two clocks the SDK deals in.
//!
//! - [`LocalTime`]: the client's own monotonic clock, microseconds since
//!   the client started. Every pure part ([`crate::session`],
//!   [`crate::retry`], [`crate::mirror`], [`crate::report`]) takes it as
//!   `now`; only the driver reads the real clock.
//! - [`ServerTime`]: the origin's clock (the protocol's type). The SDK
//!   never has it, only an estimate: [`OriginEstimate`] turns a local time
//!   into the origin time it most likely is, from clock exchanges
//!   (`Ping` / `Pong`).

use std::ops::{Add, Sub};
use std::time::Duration;

use protocol::time::{ClockSample, OffsetEstimator};
use protocol::ServerTime;

/// A point on the client's local monotonic clock: microseconds since the
/// client started. Not comparable with [`ServerTime`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime(u64);

impl LocalTime {
    /// The client's start.
    pub const ZERO: LocalTime = LocalTime(0);
    /// Later than any time the client will see ("never").
    pub const NEVER: LocalTime = LocalTime(u64::MAX);

    /// `us` microseconds after the client's start.
    pub const fn from_micros(us: u64) -> LocalTime {
        LocalTime(us)
    }

    /// Microseconds since the client's start.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: LocalTime) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// `d` later (in whole microseconds), or [`LocalTime::NEVER`].
    pub fn saturating_add(self, d: Duration) -> LocalTime {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        LocalTime(self.0.saturating_add(us))
    }
}

/// `now + d`: [`LocalTime::saturating_add`].
impl Add<Duration> for LocalTime {
    type Output = LocalTime;
    fn add(self, d: Duration) -> LocalTime {
        self.saturating_add(d)
    }
}

/// `later - earlier`: [`LocalTime::saturating_since`].
impl Sub<LocalTime> for LocalTime {
    type Output = Duration;
    fn sub(self, earlier: LocalTime) -> Duration {
        self.saturating_since(earlier)
    }
}

/// The SDK's estimate of origin time: the offset of the best recent clock
/// exchange (min-RTT filter, [`OffsetEstimator`]) applied to local time.
#[derive(Clone, Debug)]
pub struct OriginEstimate {
    samples: OffsetEstimator,
}

impl Default for OriginEstimate {
    fn default() -> Self {
        OriginEstimate::new()
    }
}

impl OriginEstimate {
    /// Exchanges kept (the best of these is believed).
    pub const WINDOW: usize = 32;

    /// No estimate yet.
    pub fn new() -> OriginEstimate {
        OriginEstimate {
            samples: OffsetEstimator::new(Self::WINDOW),
        }
    }

    /// One exchange: a ping left at `sent`, its pong came at `received`
    /// stamped with the origin's time `origin`.
    pub fn handle_pong(&mut self, sent: LocalTime, received: LocalTime, origin: ServerTime) {
        self.samples.handle_sample(ClockSample {
            sent: sent.as_micros(),
            received: received.as_micros(),
            origin,
        });
    }

    /// `origin - local` (µs), once there is an exchange.
    pub fn offset(&self) -> Option<i64> {
        self.samples.offset()
    }

    /// The round trip of the believed exchange.
    pub fn rtt(&self) -> Option<Duration> {
        self.samples.rtt()
    }

    /// The origin time it most likely is at local time `local`.
    pub fn at(&self, local: LocalTime) -> Option<ServerTime> {
        self.samples.origin_at(local.as_micros())
    }

    /// Exchanges held (up to [`OriginEstimate::WINDOW`]).
    pub fn exchanges(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_time_adds_and_subtracts_durations_without_wrapping() {
        let t = LocalTime::from_micros(1_000);
        assert_eq!((t + Duration::from_millis(2)).as_micros(), 3_000);
        assert_eq!(LocalTime::NEVER + Duration::from_secs(1), LocalTime::NEVER);
        assert_eq!(t - LocalTime::from_micros(400), Duration::from_micros(600));
        assert_eq!(LocalTime::ZERO - t, Duration::ZERO);
    }

    #[test]
    fn origin_time_is_local_time_plus_the_best_offset() {
        let mut o = OriginEstimate::new();
        assert_eq!(o.at(LocalTime::from_micros(5)), None);
        // A 10 ms exchange: the origin read 1_000_000 at its midpoint (5 ms).
        o.handle_pong(
            LocalTime::ZERO,
            LocalTime::from_micros(10_000),
            ServerTime(1_000_000),
        );
        assert_eq!(o.offset(), Some(995_000));
        assert_eq!(o.rtt(), Some(Duration::from_millis(10)));
        assert_eq!(
            o.at(LocalTime::from_micros(20_000)),
            Some(ServerTime(1_015_000))
        );
    }
}
