//! The progress line: one line on stderr, rewritten in place with `\r`
//! (only when stderr is a terminal, so logs and CI output stay clean).

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

/// Width of the bar, in characters.
const BAR: usize = 24;

/// A progress line for one run.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    label: String,
    shown: usize,
}

impl Progress {
    /// A progress line labelled `label`; silent unless `wanted` and stderr
    /// is a terminal.
    pub fn new(wanted: bool, label: &str) -> Progress {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            label: label.to_owned(),
            shown: 0,
        }
    }

    /// Show a phase ("connecting 64 clients").
    pub fn status(&mut self, text: &str) {
        let line = format!("{}: {text}", self.label);
        self.show(&line);
    }

    /// Show how far the run is.
    pub fn tick(&mut self, elapsed: Duration, total: Duration, acks: u64, p99_us: Option<u64>) {
        let line = line(&self.label, elapsed, total, acks, p99_us);
        self.show(&line);
    }

    /// Clear the line.
    pub fn done(&mut self) {
        if self.enabled && self.shown > 0 {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{}\r", " ".repeat(self.shown));
            let _ = e.flush();
            self.shown = 0;
        }
    }

    fn show(&mut self, line: &str) {
        if !self.enabled {
            return;
        }
        let n = line.chars().count();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{line}{}", " ".repeat(self.shown.saturating_sub(n)));
        let _ = e.flush();
        self.shown = n;
    }
}

/// The progress line's text: bar, time, acks so far and the recent p99.
pub fn line(
    label: &str,
    elapsed: Duration,
    total: Duration,
    acks: u64,
    p99_us: Option<u64>,
) -> String {
    let frac = if total.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    };
    let filled = (frac * BAR as f64).round() as usize;
    let p99 = p99_us.map_or("—".into(), |us| format!("{:.1} ms", us as f64 / 1000.0));
    format!(
        "{label} [{}{}] {:>5.1}/{:.0} s · {acks} acks · ack p99 {p99}",
        "█".repeat(filled),
        "░".repeat(BAR - filled),
        elapsed.as_secs_f64().min(total.as_secs_f64()),
        total.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_time_acks_and_p99() {
        let l = line(
            "datagram-first",
            Duration::from_secs(15),
            Duration::from_secs(30),
            1234,
            Some(58_100),
        );
        assert_eq!(
            l,
            format!(
                "datagram-first [{}{}]  15.0/30 s · 1234 acks · ack p99 58.1 ms",
                "█".repeat(12),
                "░".repeat(12)
            )
        );
        let l = line(
            "x",
            Duration::from_secs(99),
            Duration::from_secs(30),
            0,
            None,
        );
        assert!(l.contains(&"█".repeat(BAR)) && l.contains("30.0/30 s") && l.contains("p99 —"));
    }
}
