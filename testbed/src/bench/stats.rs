//! Latency histograms (hdrhistogram, nanosecond resolution) and their
//! summaries in microseconds.

use std::time::Duration;

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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Samples.
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

impl Summary {
    /// As a JSON object.
    pub fn to_json(&self) -> crate::bench::json::Value {
        use crate::bench::json::Value;
        Value::object([
            ("samples", Value::from(self.count)),
            ("min_us", Value::from(self.min_us)),
            ("mean_us", Value::from(self.mean_us)),
            ("p50_us", Value::from(self.p50_us)),
            ("p90_us", Value::from(self.p90_us)),
            ("p99_us", Value::from(self.p99_us)),
            ("p999_us", Value::from(self.p999_us)),
            ("max_us", Value::from(self.max_us)),
        ])
    }
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
