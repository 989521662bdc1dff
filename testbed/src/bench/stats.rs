//! Latency histograms (hdrhistogram, nanosecond resolution) and their
//! summaries in microseconds.

use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use hdrhistogram::Histogram;

/// How a latency run samples: `warmup` uncounted round trips, then
/// `samples` counted ones, one outstanding at a time, `gap` apart, stopping
/// at `limit` whatever the count.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Round trips not counted.
    pub warmup: u64,
    /// Round trips counted.
    pub samples: u64,
    /// The run stops here.
    pub limit: Duration,
    /// Pause between round trips (zero: back to back).
    pub gap: Duration,
}

impl Sampling {
    /// The same with another sample count.
    pub fn with_samples(self, samples: u64) -> Sampling {
        Sampling { samples, ..self }
    }

    /// The pause between round trips, if any.
    pub async fn pause(&self) {
        if !self.gap.is_zero() {
            tokio::time::sleep(self.gap).await;
        }
    }
}

/// What one round-trip run measured.
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    /// Round trips after the warm-up.
    pub latencies: Latencies,
    /// Samples that got no answer within a second.
    pub lost: u64,
    /// How long the measured part took.
    pub took: Duration,
}

/// The one sampling loop of every latency run: it hands out round-trip
/// numbers as [`Sampling`] says (warm-up first, stopping at the count or
/// the time limit), keeps the counted latencies and times the counted part.
///
/// ```ignore
/// let mut s = Sampler::new(how);
/// while let Some(i) = s.next_trip() {
///     let t = Instant::now();
///     // ... one round trip numbered `i` ...
///     s.record(i, t.elapsed());
///     s.pause().await;
/// }
/// let trips = s.finish();
/// ```
#[derive(Debug)]
pub struct Sampler {
    how: Sampling,
    next: u64,
    deadline: Instant,
    measured_from: Instant,
    out: RoundTrips,
}

impl Sampler {
    /// A run starting now.
    pub fn new(how: Sampling) -> Sampler {
        let now = Instant::now();
        Sampler {
            how,
            next: 0,
            deadline: now + how.limit,
            measured_from: now,
            out: RoundTrips::default(),
        }
    }

    /// The number of the next round trip (from 0), or `None` when the run
    /// is over: every sample taken or the time limit passed.
    pub fn next_trip(&mut self) -> Option<u64> {
        let i = self.next;
        if i >= self.how.warmup + self.how.samples || Instant::now() > self.deadline {
            return None;
        }
        if i == self.how.warmup {
            self.measured_from = Instant::now();
        }
        self.next += 1;
        Some(i)
    }

    /// Whether round trip `i` is counted (not warm-up).
    pub fn counted(&self, i: u64) -> bool {
        i >= self.how.warmup
    }

    /// Round trip `i` was answered after `took` (kept if counted).
    pub fn record(&mut self, i: u64, took: Duration) {
        if self.counted(i) {
            self.out.latencies.record(took);
        }
    }

    /// A round trip got no answer in time.
    pub fn lost(&mut self) {
        self.out.lost += 1;
    }

    /// The pause between round trips, if any.
    pub async fn pause(&self) {
        self.how.pause().await;
    }

    /// What the run measured.
    pub fn finish(mut self) -> RoundTrips {
        self.out.took = self.measured_from.elapsed();
        self.out
    }
}

/// Longest latency a histogram holds exactly (longer ones are clamped).
const HIGHEST_NS: u64 = 600_000_000_000;

/// Recorded latencies.
#[derive(Debug, Clone)]
pub struct Latencies {
    hist: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    /// An empty histogram: 1 ns to 10 minutes, three significant digits.
    pub fn new() -> Latencies {
        Latencies {
            hist: Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("constant bounds are valid"),
        }
    }

    /// Record one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, HIGHEST_NS));
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many samples.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Count, mean and percentiles, in microseconds.
    pub fn summary(&self) -> Summary {
        if self.hist.is_empty() {
            return Summary::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Summary {
            count: self.hist.len(),
            min_us: us(self.hist.min()),
            mean_us: self.hist.mean() / 1_000.0,
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        }
    }
}

/// A histogram in numbers (microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    #[serde(rename = "samples")]
    pub count: u64,
    /// Smallest.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// Serialises a duration as seconds (the JSON's unit for durations).
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Microseconds, printed with a precision that suits their size.
pub fn fmt_us(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.0} ms", us / 1_000.0)
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.1} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut l = Latencies::new();
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        let mut m = Latencies::new();
        m.merge(&l);
        m.merge(&l);
        assert_eq!(m.len(), 2000);
        assert_eq!(Latencies::new().summary(), Summary::default());
    }

    #[test]
    fn durations_print_in_a_readable_unit() {
        assert_eq!(fmt_us(81.26), "81.3 µs");
        assert_eq!(fmt_us(1_234.0), "1.23 ms");
        assert_eq!(fmt_us(12_345.0), "12.3 ms");
        assert_eq!(fmt_us(123_456.0), "123 ms");
    }
}
