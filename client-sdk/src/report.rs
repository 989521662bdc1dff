//! What the client tells its relay about its own experience, every few
//! seconds (pure: takes `now`, does no IO): its acks' times per class,
//! counted in buckets, and a bound on its clock's error. The relay turns
//! reports into its operators' `ringside_client_ack_seconds` and
//! `ringside_timer_drift_seconds`. Nothing is sent per action.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::message::{ack_bucket, AckCounts, Report};
use protocol::Class;

use crate::time::later;

/// Collects acks between reports and says when the next report is due.
#[derive(Debug)]
pub struct Reporter {
    every: Duration,
    next_at: Instant,
    acks: BTreeMap<Class, BTreeMap<u8, u32>>,
    last_offset: Option<i64>,
}

impl Reporter {
    /// A reporter whose first report is due `every` after `now`.
    pub fn new(now: Instant, every: Duration) -> Reporter {
        Reporter {
            every,
            next_at: later(now, every),
            acks: BTreeMap::new(),
            last_offset: None,
        }
    }

    /// An action of `class` was acked `latency` after the app asked.
    pub fn handle_ack(&mut self, class: Class, latency: Duration) {
        let bucket = ack_bucket(latency.as_micros() as u64);
        let n = self
            .acks
            .entry(class)
            .or_default()
            .entry(bucket)
            .or_insert(0);
        *n = n.saturating_add(1);
    }

    /// When the next report is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_at
    }

    /// The report due at `now`, if one is: the acks since the last one, and
    /// the clock error bound from the current `offset` to origin time and
    /// the best clock-exchange round trip (`rtt`): half that round trip
    /// (the most the one-way delays can be asymmetric by) plus how far the
    /// offset moved since the last report (the clock's drift meanwhile).
    pub fn poll_report(
        &mut self,
        now: Instant,
        offset: Option<i64>,
        rtt: Option<Duration>,
    ) -> Option<Report> {
        if now < self.next_at {
            return None;
        }
        self.next_at = later(now, self.every);
        let clock_error_us = match (offset, rtt) {
            (Some(off), Some(rtt)) => {
                let moved = self.last_offset.map_or(0, |last| off.abs_diff(last));
                self.last_offset = Some(off);
                let us = rtt.as_micros() as u64 / 2 + moved;
                Some(u32::try_from(us).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        let acks = std::mem::take(&mut self.acks)
            .into_iter()
            .map(|(class, counts)| AckCounts {
                class,
                counts: counts.into_iter().collect(),
            })
            .collect();
        Some(Report {
            clock_error_us,
            acks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::virtual_clock::{at_us, t0};
    use protocol::message::ACK_BUCKETS_US;

    #[test]
    fn a_report_counts_acks_once_and_bounds_the_clock_error() {
        let mut r = Reporter::new(t0(), Duration::from_secs(10));
        r.handle_ack(Class::Gift, Duration::from_micros(2_500));
        r.handle_ack(Class::Gift, Duration::from_micros(2_900));
        r.handle_ack(Class::Chat, Duration::from_secs(30));
        assert!(
            r.poll_report(at_us(9_999_999), Some(100), None).is_none(),
            "not due yet"
        );
        assert_eq!(r.poll_timeout(), at_us(10_000_000));
        let first = r
            .poll_report(
                at_us(10_000_000),
                Some(1_000),
                Some(Duration::from_micros(4_000)),
            )
            .expect("due");
        // Half the best round trip; no earlier offset to compare with.
        assert_eq!(first.clock_error_us, Some(2_000));
        let gift = first
            .acks
            .iter()
            .find(|a| a.class == Class::Gift)
            .expect("gift");
        // Both in the bucket up to 3 ms.
        assert_eq!(gift.counts, vec![(3, 2)]);
        assert_eq!(ACK_BUCKETS_US[3], 3_000);
        let chat = first
            .acks
            .iter()
            .find(|a| a.class == Class::Chat)
            .expect("chat");
        assert_eq!(chat.counts, vec![(18, 1)], "over 10 s: the last bucket");
        let second = r
            .poll_report(
                at_us(20_000_000),
                Some(1_300),
                Some(Duration::from_micros(4_000)),
            )
            .expect("due");
        assert!(second.acks.is_empty(), "acks are reported once");
        assert_eq!(second.clock_error_us, Some(2_300), "plus the offset's move");
    }
}
