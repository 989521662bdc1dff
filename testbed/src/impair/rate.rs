//! The bottleneck: a link of fixed rate behind a drop-tail queue, modelled
//! from arrival times alone.

use std::collections::VecDeque;
use std::time::Duration;

use super::profile::Rate;

/// Packets accepted but not yet fully sent, tracked by departure time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bottleneck {
    /// `(departure, len)` of each packet still queued or on the wire, in
    /// departure order (the link is FIFO, so departures only grow).
    in_flight: VecDeque<(Duration, u64)>,
    /// Sum of the lengths in `in_flight`.
    queued_bytes: u64,
}

impl Bottleneck {
    /// Offers a packet of `len` bytes arriving at `now`: its departure time
    /// (when its last bit has left) or `None` if the queue is full.
    ///
    /// An unlimited rate passes packets through at `now` without queueing.
    pub(crate) fn admit(&mut self, now: Duration, len: u64, rate: Rate) -> Option<Duration> {
        while let Some(&(departs, n)) = self.in_flight.front() {
            if departs > now {
                break;
            }
            self.in_flight.pop_front();
            self.queued_bytes -= n;
        }
        if rate.bps == 0 {
            return Some(now);
        }
        if self.queued_bytes.saturating_add(len) > rate.queue_bytes
            || self.in_flight.len() >= rate.queue_packets
        {
            return None;
        }
        let starts = match self.in_flight.back() {
            Some(&(last, _)) => last.max(now),
            None => now,
        };
        let departs = starts + serialisation(len, rate.bps);
        self.in_flight.push_back((departs, len));
        self.queued_bytes += len;
        Some(departs)
    }

    /// Bytes accepted and not yet fully sent, as of the last `admit`.
    pub(crate) fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }
}

/// Time to put `len` bytes on a link of `bps` bits per second, rounded up to
/// the nanosecond.
pub(crate) fn serialisation(len: u64, bps: u64) -> Duration {
    let nanos = (u128::from(len) * 8 * 1_000_000_000).div_ceil(u128::from(bps));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rate(bps: u64, queue_bytes: u64) -> Rate {
        Rate {
            bps,
            queue_bytes,
            queue_packets: usize::MAX,
        }
    }

    #[test]
    fn serialisation_time_is_len_times_8_over_rate() {
        assert_eq!(serialisation(1000, 1_000_000), 8 * MS);
        assert_eq!(serialisation(1, 3), Duration::from_nanos(2_666_666_667));
    }

    #[test]
    fn back_to_back_packets_queue_behind_each_other() {
        let mut b = Bottleneck::default();
        let r = rate(1_000_000, 3000);
        assert_eq!(b.admit(Duration::ZERO, 1000, r), Some(8 * MS));
        assert_eq!(b.admit(Duration::ZERO, 1000, r), Some(16 * MS));
        assert_eq!(b.admit(Duration::ZERO, 1000, r), Some(24 * MS));
        // 3000 bytes queued: the fourth does not fit.
        assert_eq!(b.admit(Duration::ZERO, 1000, r), None);
        // At 8 ms the first has left: room for one more, after the third.
        assert_eq!(b.admit(8 * MS, 1000, r), Some(32 * MS));
        assert_eq!(b.queued_bytes(), 3000);
        // Long after, the link is idle again.
        assert_eq!(b.admit(100 * MS, 500, r), Some(104 * MS));
        assert_eq!(b.queued_bytes(), 500);
    }
}
