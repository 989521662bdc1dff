//! The two clocks the SDK deals in.
//!
//! - Local time is [`std::time::Instant`], as in the relay and in
//!   quinn-proto. Every pure part ([`crate::session`], [`crate::retry`],
//!   [`crate::mirror`], [`crate::report`]) takes it as `now: Instant` and
//!   never reads the clock itself; only the driver calls `Instant::now()`.
//!   Tests run them on a virtual clock: a base instant plus durations.
//! - [`ServerTime`] is the origin's clock (the protocol's type). The SDK
//!   never has it, only an estimate: [`OriginEstimate`] turns a local
//!   instant into the origin time it most likely is, from clock exchanges
//!   (`Ping` / `Pong`).
//!
//! [`later`] schedules: it adds a duration to an instant in whole
//! microseconds (a timeout computed in floating point, from the round-trip
//! estimate, stays on the microsecond grid it always had) and without
//! overflowing (a duration the app chose, a deadline or a token's life, may
//! be `Duration::MAX`: "never").

use std::time::{Duration, Instant};

use protocol::time::{ClockSample, OffsetEstimator};
use protocol::ServerTime;

/// As far ahead as [`later`] goes: a century, "never" for anything the SDK
/// schedules.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d` after `at`, `d` rounded down to whole microseconds and at most a
/// century (an app's `Duration::MAX` deadline means "never", not a
/// panic): what adding a duration to local time always meant in the SDK.
pub fn later(at: Instant, d: Duration) -> Instant {
    let d = Duration::from_micros(u64::try_from(d.min(FAR).as_micros()).unwrap_or(u64::MAX));
    at.checked_add(d)
        // Not reached: every platform std supports counts `Instant`s
        // centuries ahead; `at` only keeps the function total.
        .unwrap_or(at)
}

/// The SDK's estimate of origin time: the offset of the best recent clock
/// exchange (min-RTT filter, [`OffsetEstimator`]) applied to local time.
///
/// The exchanges are kept in microseconds since a base instant (the
/// session's start): [`OriginEstimate::offset`] is `origin - local` with
/// local time counted from [`OriginEstimate::base`].
#[derive(Clone, Debug)]
pub struct OriginEstimate {
    base: Instant,
    samples: OffsetEstimator,
}

impl OriginEstimate {
    /// Exchanges kept (the best of these is believed).
    pub const WINDOW: usize = 32;

    /// No estimate yet; local time counted from `base`.
    pub fn new(base: Instant) -> OriginEstimate {
        OriginEstimate {
            base,
            samples: OffsetEstimator::new(Self::WINDOW),
        }
    }

    /// The instant local time is counted from.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// Local time `at` in microseconds since [`OriginEstimate::base`]
    /// (zero before it).
    pub fn micros(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
    }

    /// One exchange: a ping left at `sent`, its pong came at `received`
    /// stamped with the origin's time `origin`.
    pub fn handle_pong(&mut self, sent: Instant, received: Instant, origin: ServerTime) {
        self.samples.handle_sample(ClockSample {
            sent: self.micros(sent),
            received: self.micros(received),
            origin,
        });
    }

    /// `origin - local` (µs, local counted from [`OriginEstimate::base`]),
    /// once there is an exchange.
    pub fn offset(&self) -> Option<i64> {
        self.samples.offset()
    }

    /// The round trip of the believed exchange.
    pub fn rtt(&self) -> Option<Duration> {
        self.samples.rtt()
    }

    /// The origin time it most likely is at local time `at`.
    pub fn at(&self, at: Instant) -> Option<ServerTime> {
        self.samples.origin_at(self.micros(at))
    }

    /// Exchanges held (up to [`OriginEstimate::WINDOW`]).
    pub fn exchanges(&self) -> usize {
        self.samples.len()
    }
}

/// The tests' virtual clock: one base instant, times as offsets from it.
/// Nothing sleeps; any instant serves as the base.
#[cfg(test)]
pub(crate) mod virtual_clock {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// The virtual clock's zero.
    pub(crate) fn t0() -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    /// `us` microseconds after [`t0`].
    pub(crate) fn at_us(us: u64) -> Instant {
        t0() + Duration::from_micros(us)
    }

    /// Microseconds from [`t0`] to `t`, rounded up: a clock that counts
    /// microseconds reaches `t` at [`at_us`] of it.
    pub(crate) fn us(t: Instant) -> u64 {
        let ns = t.saturating_duration_since(t0()).as_nanos();
        u64::try_from(ns.div_ceil(1_000)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::virtual_clock::{at_us, t0};
    use super::*;

    #[test]
    fn local_time_adds_and_subtracts_durations_without_wrapping() {
        let t = at_us(1_000);
        assert_eq!(later(t, Duration::from_millis(2)), at_us(3_000));
        assert_eq!(later(t, Duration::MAX), t + FAR, "never: a century on");
        assert_eq!(
            t.saturating_duration_since(at_us(400)),
            Duration::from_micros(600)
        );
        assert_eq!(t0().saturating_duration_since(t), Duration::ZERO);
        let rto = Duration::from_secs_f64(0.100_000_9);
        assert_eq!(later(t, rto), at_us(101_000), "whole microseconds");
    }

    #[test]
    fn origin_time_is_local_time_plus_the_best_offset() {
        let mut o = OriginEstimate::new(t0());
        assert_eq!(o.at(at_us(5)), None);
        // A 10 ms exchange: the origin read 1_000_000 at its midpoint (5 ms).
        o.handle_pong(t0(), at_us(10_000), ServerTime(1_000_000));
        assert_eq!(o.offset(), Some(995_000));
        assert_eq!(o.rtt(), Some(Duration::from_millis(10)));
        assert_eq!(o.at(at_us(20_000)), Some(ServerTime(1_015_000)));
    }
}
