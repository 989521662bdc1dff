//! Histogram buckets shared by every latency metric (seconds).

/// Latency buckets from 0.5 ms to 10 s: fine where interaction lives (1–200
/// ms), coarse beyond. Eighteen buckets keep a series cheap to scrape.
pub const LATENCY_SECONDS: [f64; 18] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.5, 1.0, 2.5, 10.0,
];

/// Clock error buckets from 0.1 ms to 1 s.
pub const DRIFT_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Counts (a commit's group size, a batch): 1 to 4096 in powers of two.
pub const COUNT: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// A histogram with `buckets`.
pub fn histogram(buckets: &[f64]) -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(buckets.iter().copied())
}
