//! The report of a scenario: the runs' figures side by side in a terminal
//! table, all of them in a JSON file, and the pictures. Pure apart from
//! [`Report::write`], which writes the files.

pub mod charts;
pub mod contents;
pub mod json;
pub mod summary;
pub mod svg;
pub mod tail;

use std::path::{Path, PathBuf};

pub use contents::Report;

/// The files [`Report::write`] produces.
pub const FILES: [&str; 5] = [
    "summary.txt",
    "report.json",
    "ack-latency-cdf.svg",
    "delivery-latency.svg",
    "timer-drift.svg",
];

impl Report {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        summary::render(self)
    }

    /// Every figure, for machines: `report.json`.
    pub fn json(&self) -> String {
        json::render(self)
    }

    /// Writes [`FILES`] into `dir` (created if needed); returns their paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let docs = [
            self.summary(),
            self.json(),
            charts::ack_cdf(&self.scenario, self.seed, &self.runs),
            charts::delivery_over_time(&self.scenario, self.seed, &self.runs),
            charts::timer_drift(&self.scenario, self.seed, &self.runs),
        ];
        let mut paths = Vec::new();
        for (name, doc) in FILES.iter().zip(docs) {
            let p = dir.join(name);
            std::fs::write(&p, doc)?;
            paths.push(p);
        }
        Ok(paths)
    }
}
