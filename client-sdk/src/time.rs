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
//!   (`Ping` / `Pong`), averaged over a window of them (see
//!   [`OriginEstimate`] for why not the fastest one alone).
//!
//! [`later`] schedules: it adds a duration to an instant in whole
//! microseconds (a timeout computed in floating point, from the round-trip
//! estimate, stays on the microsecond grid it always had) and without
//! overflowing (a duration the app chose, a deadline or a token's life, may
//! be `Duration::MAX`: "never").

use std::time::{Duration, Instant};

use std::collections::VecDeque;

use protocol::time::ClockSample;
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

/// The SDK's estimate of origin time: the mean offset of the recent clock
/// exchanges, the slowest quarter of them left out, applied to local time.
///
/// Why not the fastest exchange alone (the NTP min-RTT filter the relay
/// uses on its quiet link to the origin): on a jittery client path (Wi-Fi,
/// cellular) the two directions' delays vary independently, and the
/// fastest exchange's offset error, half the difference of its two
/// delays, is as large as any other's; believing one exchange for a whole
/// window froze a 10–20 ms error per client. The mean of `n` exchanges
/// errs `√n` times less. The slowest quarter is left out because a long
/// round trip is where a stall or a queue on one side (asymmetric by
/// nature) hides; what remains is averaged with equal weights.
///
/// The exchanges are kept in microseconds since a base instant (the
/// session's start): [`OriginEstimate::offset`] is `origin - local` with
/// local time counted from [`OriginEstimate::base`].
#[derive(Clone, Debug)]
pub struct OriginEstimate {
    base: Instant,
    /// The last [`OriginEstimate::WINDOW`] exchanges, oldest first.
    samples: VecDeque<ClockSample>,
    /// The estimate from `samples`, recomputed on each exchange.
    offset: Option<i64>,
}

impl OriginEstimate {
    /// Exchanges kept (the estimate averages the fastest three quarters).
    pub const WINDOW: usize = 32;

    /// No estimate yet; local time counted from `base`.
    pub fn new(base: Instant) -> OriginEstimate {
        OriginEstimate {
            base,
            samples: VecDeque::with_capacity(Self::WINDOW),
            offset: None,
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
        if received < sent {
            return;
        }
        self.samples.push_back(ClockSample {
            sent: self.micros(sent),
            received: self.micros(received),
            origin,
        });
        while self.samples.len() > Self::WINDOW {
            self.samples.pop_front();
        }
        self.offset = trimmed_mean(&self.samples);
    }

    /// `origin - local` (µs, local counted from [`OriginEstimate::base`]),
    /// once there is an exchange.
    pub fn offset(&self) -> Option<i64> {
        self.offset
    }

    /// The shortest round trip of the exchanges held: how tight the best of
    /// them bounds the offset.
    pub fn rtt(&self) -> Option<Duration> {
        (self.samples.iter())
            .map(ClockSample::rtt)
            .min()
            .map(Duration::from_micros)
    }

    /// The origin time it most likely is at local time `at`.
    pub fn at(&self, at: Instant) -> Option<ServerTime> {
        let t = i128::from(self.micros(at)) + i128::from(self.offset?);
        Some(ServerTime(t.clamp(0, i128::from(u64::MAX)) as u64))
    }

    /// Exchanges held (up to [`OriginEstimate::WINDOW`]).
    pub fn exchanges(&self) -> usize {
        self.samples.len()
    }
}

/// The mean offset of `samples` without their slowest quarter (by round
/// trip); `None` without samples.
fn trimmed_mean(samples: &VecDeque<ClockSample>) -> Option<i64> {
    let mut by_rtt: Vec<&ClockSample> = samples.iter().collect();
    by_rtt.sort_by_key(|s| s.rtt());
    let keep = by_rtt.len() - by_rtt.len() / 4;
    let kept = by_rtt.get(..keep).filter(|k| !k.is_empty())?;
    let sum: i128 = kept.iter().map(|s| i128::from(s.offset())).sum();
    // The mean of i64 values fits an i64.
    Some((sum / kept.len() as i128) as i64)
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
    fn origin_time_is_local_time_plus_the_offset() {
        let mut o = OriginEstimate::new(t0());
        assert_eq!(o.at(at_us(5)), None);
        assert_eq!(o.rtt(), None);
        // A 10 ms exchange: the origin read 1_000_000 at its midpoint (5 ms).
        o.handle_pong(t0(), at_us(10_000), ServerTime(1_000_000));
        assert_eq!(o.offset(), Some(995_000));
        assert_eq!(o.rtt(), Some(Duration::from_millis(10)));
        assert_eq!(o.at(at_us(20_000)), Some(ServerTime(1_015_000)));
        // A pong before its ping is nonsense and ignored.
        o.handle_pong(at_us(30_000), at_us(20_000), ServerTime(5));
        assert_eq!((o.exchanges(), o.offset()), (1, Some(995_000)));
    }

    #[test]
    fn the_slowest_quarter_is_left_out_and_the_rest_averaged() {
        let mut o = OriginEstimate::new(t0());
        // Offsets 990, 1_000, 1_010 ms with 10 ms round trips, and one
        // 200 ms exchange whose reply queued (offset −90 ms off).
        for (i, off_ms) in [990u64, 1_000, 1_010].into_iter().enumerate() {
            let sent = 100_000 * i as u64;
            o.handle_pong(
                at_us(sent),
                at_us(sent + 10_000),
                ServerTime(off_ms * 1_000 + sent + 5_000),
            );
        }
        o.handle_pong(at_us(400_000), at_us(600_000), ServerTime(1_410_000));
        assert_eq!(o.offset(), Some(1_000_000), "the slow one is left out");
        assert_eq!(o.rtt(), Some(Duration::from_millis(10)));
    }

    #[test]
    fn old_exchanges_leave_the_window() {
        let mut o = OriginEstimate::new(t0());
        for i in 0..OriginEstimate::WINDOW as u64 {
            o.handle_pong(
                at_us(i * 1_000),
                at_us(i * 1_000 + 2),
                ServerTime(i * 1_000 + 1),
            );
        }
        assert_eq!(o.offset(), Some(0));
        // A second window at offset +7 ms replaces the first entirely.
        for i in 0..OriginEstimate::WINDOW as u64 {
            let sent = 1_000_000 + i * 1_000;
            o.handle_pong(at_us(sent), at_us(sent + 2), ServerTime(sent + 7_001));
        }
        assert_eq!(o.exchanges(), OriginEstimate::WINDOW);
        assert_eq!(o.offset(), Some(7_000));
    }

    /// A seeded jittery path: each direction 30 ms plus normal jitter
    /// (σ 15 ms, never below zero), like the testbed's `heavy-jitter`.
    struct JitterPath {
        rng: u64,
    }

    impl JitterPath {
        fn uniform(&mut self) -> f64 {
            // xorshift64*: plenty for a test's noise.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }

        /// One way's delay, µs (Box–Muller).
        fn delay(&mut self) -> u64 {
            let (a, b) = (self.uniform(), self.uniform());
            let n = (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos();
            (30_000.0 + 15_000.0 * n).max(0.0) as u64
        }
    }

    /// |error| of the estimate, µs, after each of `exchanges` one a second,
    /// for a client whose origin clock is `true_offset` ahead.
    fn errors(seed: u64, exchanges: u64, true_offset: u64) -> Vec<u64> {
        let mut path = JitterPath { rng: seed | 1 };
        let mut o = OriginEstimate::new(t0());
        let mut out = Vec::new();
        for i in 0..exchanges {
            let sent = i * 1_000_000;
            let up = path.delay();
            let down = path.delay();
            let origin = ServerTime(true_offset + sent + up);
            o.handle_pong(at_us(sent), at_us(sent + up + down), origin);
            let off = o.offset().expect("an exchange is in");
            out.push(off.abs_diff(true_offset as i64));
        }
        out
    }

    #[test]
    fn a_window_of_jittery_exchanges_pins_the_clock_within_a_few_ms() {
        // σ 15 ms each way: one exchange errs by (up − down) / 2, σ ≈ 10.6
        // ms. The fastest exchange is no better (its two delays are as
        // unequal as any), so min-RTT left 10–20 ms per client; a full
        // window's mean (24 exchanges kept) errs √24 times less: σ ≈ 2.2
        // ms, p99 ≈ 5.6 ms. (The testbed's links keep packet order, which
        // narrows the jitter: there one exchange errs with σ ≈ 7.7 ms.)
        let mut full = Vec::new();
        let mut single = Vec::new();
        for seed in 1..=200u64 {
            let e = errors(seed * 7919, 40, 1_000_000_000);
            single.push(e[0]);
            full.extend_from_slice(&e[OriginEstimate::WINDOW - 1..]);
        }
        full.sort_unstable();
        single.sort_unstable();
        let p99 = |v: &[u64]| v[v.len() * 99 / 100];
        assert!(
            p99(&single) > 15_000,
            "one exchange: p99 {} µs",
            p99(&single)
        );
        assert!(p99(&full) < 6_000, "a full window: p99 {} µs", p99(&full));
    }
}
