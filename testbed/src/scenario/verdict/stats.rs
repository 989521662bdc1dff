//! Exact statistics over recorded samples: percentiles, CDFs, time buckets
//! and histograms. Pure.
//!
//! Samples are kept whole (a run records at most a few million), so every
//! percentile is exact: the nearest-rank definition, `p(q)` = the smallest
//! sample with at least `q·n` samples at or below it.

use serde::{Serialize, Serializer};

/// Percentiles of a set of samples (in the samples' unit; serialised as
/// milliseconds, the scenario's samples being µs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Smallest.
    #[serde(rename = "min_ms", serialize_with = "us_as_ms")]
    pub min: u64,
    /// Median.
    #[serde(rename = "p50_ms", serialize_with = "us_as_ms")]
    pub p50: u64,
    /// 90th percentile.
    #[serde(rename = "p90_ms", serialize_with = "us_as_ms")]
    pub p90: u64,
    /// 99th percentile.
    #[serde(rename = "p99_ms", serialize_with = "us_as_ms")]
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p999_ms", serialize_with = "us_as_ms")]
    pub p999: u64,
    /// Largest.
    #[serde(rename = "max_ms", serialize_with = "us_as_ms")]
    pub max: u64,
    /// Arithmetic mean.
    #[serde(rename = "mean_ms", serialize_with = "mean_as_ms")]
    pub mean: f64,
}

impl Summary {
    /// Summarise `samples` (sorted in place); `None` when empty.
    pub fn of(samples: &mut [u64]) -> Option<Summary> {
        samples.sort_unstable();
        Summary::of_sorted(samples)
    }

    /// Summarise samples already sorted ascending; `None` when empty.
    pub fn of_sorted(sorted: &[u64]) -> Option<Summary> {
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        let sum: u128 = sorted.iter().map(|&v| u128::from(v)).sum();
        Some(Summary {
            count: sorted.len(),
            min,
            p50: quantile(sorted, 0.5),
            p90: quantile(sorted, 0.9),
            p99: quantile(sorted, 0.99),
            p999: quantile(sorted, 0.999),
            max,
            mean: sum as f64 / sorted.len() as f64,
        })
    }
}

/// The nearest-rank `q`-quantile of ascending `sorted` (0 when empty).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Points of the empirical CDF of ascending `sorted`: `(value, fraction of
/// samples strictly below it)`, at most about `max_points` of them, denser
/// in the tail so that p99 and p99.9 are drawn from real samples. The first
/// point is the minimum (fraction 0), the last the maximum.
pub fn cdf(sorted: &[u64], max_points: usize) -> Vec<(u64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let max_points = max_points.max(4);
    let mut idx: Vec<usize> = Vec::with_capacity(max_points + 8);
    // Evenly over the body...
    let body = max_points / 2;
    for k in 0..body {
        idx.push(k * n / body);
    }
    // ...and evenly in log(1 - q) over the tail: q = 1 - 10^-x.
    let tail = max_points - body;
    let top = (n as f64).log10().max(1.0);
    for k in 0..=tail {
        let x = top * k as f64 / tail as f64;
        let q = 1.0 - 10f64.powf(-x);
        idx.push(((q * n as f64) as usize).min(n - 1));
    }
    idx.push(n - 1);
    idx.sort_unstable();
    idx.dedup();
    idx.into_iter()
        .map(|i| (sorted[i], i as f64 / n as f64))
        .collect()
}

/// Samples received in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, ms from the start of the run.
    #[serde(rename = "t_s", serialize_with = "ms_as_s")]
    pub start_ms: u64,
    /// Samples in it.
    pub count: usize,
    /// Median (0 when empty).
    #[serde(rename = "p50_ms", serialize_with = "us_as_ms")]
    pub p50: u64,
    /// 99th percentile (0 when empty).
    #[serde(rename = "p99_ms", serialize_with = "us_as_ms")]
    pub p99: u64,
    /// Largest (0 when empty).
    #[serde(rename = "max_ms", serialize_with = "us_as_ms")]
    pub max: u64,
}

/// Splits `(t_ms, value)` samples into buckets of `width_ms` from 0 to
/// `until_ms` (later samples go to the last bucket), with the percentiles of
/// each.
pub fn buckets(samples: &[(u64, u64)], width_ms: u64, until_ms: u64) -> Vec<Bucket> {
    let width_ms = width_ms.max(1);
    let n = (until_ms.div_ceil(width_ms)).max(1) as usize;
    let mut values: Vec<Vec<u64>> = vec![Vec::new(); n];
    for &(t, v) in samples {
        let i = ((t / width_ms) as usize).min(n - 1);
        values[i].push(v);
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, mut v)| {
            v.sort_unstable();
            Bucket {
                start_ms: i as u64 * width_ms,
                count: v.len(),
                p50: quantile(&v, 0.5),
                p99: quantile(&v, 0.99),
                max: v.last().copied().unwrap_or(0),
            }
        })
        .collect()
}

/// A histogram of signed values over equal bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: i64,
    /// Width of every bin.
    pub width: i64,
    /// Count per bin; values outside `[lo, lo + width·bins)` go to the
    /// first or last bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal bins over `[lo, hi)`.
    pub fn new(values: &[i64], lo: i64, hi: i64, bins: usize) -> Histogram {
        let bins = bins.max(1);
        let width = ((hi - lo).max(1) + bins as i64 - 1) / bins as i64;
        let mut counts = vec![0u64; bins];
        for &v in values {
            let i = (v - lo).div_euclid(width).clamp(0, bins as i64 - 1) as usize;
            counts[i] += 1;
        }
        Histogram { lo, width, counts }
    }

    /// Bins centred on 0 wide enough for 99.9% of `values` in absolute value.
    pub fn centred(values: &[i64], bins: usize) -> Histogram {
        let mut abs: Vec<u64> = values.iter().map(|v| v.unsigned_abs()).collect();
        abs.sort_unstable();
        let reach = quantile(&abs, 0.999).max(1) as i64;
        let bins = bins.max(2) & !1; // even: 0 sits on an edge
        let half = bins as i64 / 2;
        let width = (reach + half - 1) / half;
        Histogram::new(values, -width * half, width * half, bins)
    }

    /// Total of all bins.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Serialises µs as ms (report.json's unit for latencies).
pub fn us_as_ms<S: Serializer>(us: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*us as f64 / 1000.0)
}

/// Serialises a mean in µs as ms.
fn mean_as_ms<S: Serializer>(us: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(us / 1000.0)
}

/// Serialises ms as s.
pub fn ms_as_s<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*ms as f64 / 1000.0)
}

/// Serialises µs as s.
pub fn us_as_s<S: Serializer>(us: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(*us as f64 / 1e6)
}

/// Serialises optional µs as s (`null` when `None`).
pub fn opt_us_as_s<S: Serializer>(us: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match us {
        Some(us) => us_as_s(us, s),
        None => s.serialize_none(),
    }
}

/// Serialises optional µs as ms (`null` when `None`).
pub fn opt_us_as_ms<S: Serializer>(us: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match us {
        Some(us) => us_as_ms(us, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(
            (s.count, s.min, s.p50, s.p90, s.p99, s.p999, s.max),
            (1000, 1, 500, 900, 990, 999, 1000)
        );
        assert!((s.mean - 500.5).abs() < 1e-9);
        assert_eq!(quantile(&[7], 0.999), 7);
        assert_eq!(quantile(&[1, 2], 0.5), 1);
        assert_eq!(quantile(&[1, 2], 0.51), 2);
        assert_eq!(quantile(&[], 0.5), 0);
        assert!(Summary::of(&mut []).is_none());
    }

    #[test]
    fn one_outlier_in_a_thousand_is_the_p999() {
        let mut v = vec![10u64; 999];
        v.push(5_000);
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!((s.p99, s.p999, s.max), (10, 10, 5_000));
        v.push(5_000);
        let s = Summary::of(&mut v).expect("samples");
        assert_eq!(s.p999, 5_000);
    }

    #[test]
    fn cdf_is_monotone_and_reaches_the_tail() {
        let v: Vec<u64> = (0..100_000).collect();
        let pts = cdf(&v, 200);
        assert!(pts.len() <= 210, "{}", pts.len());
        assert_eq!(pts.first(), Some(&(0, 0.0)));
        assert_eq!(pts.last().map(|p| p.0), Some(99_999));
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        // A point at or beyond the 99.9th percentile exists.
        assert!(pts.iter().any(|p| p.1 >= 0.999 && p.1 < 1.0));
        assert!(cdf(&[], 10).is_empty());
        assert_eq!(cdf(&[5], 10), vec![(5, 0.0)]);
    }

    #[test]
    fn buckets_split_by_time() {
        let samples = [(0, 10), (499, 30), (500, 7), (1_700, 100), (9_999, 1)];
        let b = buckets(&samples, 500, 2_000);
        assert_eq!(b.len(), 4);
        assert_eq!((b[0].count, b[0].p50, b[0].p99, b[0].max), (2, 10, 30, 30));
        assert_eq!((b[1].count, b[1].p50), (1, 7));
        assert_eq!(b[2].count, 0);
        // Late samples land in the last bucket.
        assert_eq!((b[3].start_ms, b[3].count, b[3].max), (1_500, 2, 100));
    }

    #[test]
    fn histograms_count_everything() {
        let v = [-250, -1, 0, 1, 99, 100, 10_000];
        let h = Histogram::new(&v, -100, 100, 4);
        assert_eq!(h.width, 50);
        assert_eq!(h.counts, vec![1, 1, 2, 3]);
        assert_eq!(h.total(), v.len() as u64);
        let c = Histogram::centred(&[-30, -10, 0, 10, 20, 30], 6);
        assert_eq!(c.lo, -c.width * 3);
        assert_eq!(c.total(), 6);
        assert!(c.width * 3 >= 30);
    }
}
