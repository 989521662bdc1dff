//! What an operator needs from every Ringside binary, in one place.
//!
//! - [`http`]: the `metrics_listen` listener: `/metrics` (OpenMetrics text
//!   from a [`prometheus_client`] registry), `/healthz` and `/readyz`.
//! - [`config`]: defaults, a TOML file, then environment overrides: how
//!   every binary loads its configuration.
//! - [`log`]: `--log-format text|json` for every binary.
//! - [`text`]: the classic Prometheus text format for readers that do not
//!   ask for OpenMetrics (`curl`, `promtool check metrics`).
//! - [`buckets`]: the histogram buckets every latency metric shares, so a
//!   dashboard can compare them.
//! - [`runtime`]: the tokio runtime, sized by a binary's `threads` setting.
//!
//! The metrics themselves live beside what they measure (`origin::metrics`,
//! `relay::metrics`); this crate only carries them out.

pub mod buckets;
pub mod config;
pub mod http;
pub mod log;
pub mod runtime;
pub mod text;

pub use http::{Endpoint, Listener};
pub use log::LogFormat;
pub use prometheus_client;
