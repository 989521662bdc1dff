//! The engine's vocabulary: a link's direction, and what happens to one
//! packet (dropped, and why, or delivered, and when).

use std::fmt;
use std::time::Duration;

/// A direction of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the peers towards the upstream service.
    Up,
    /// From the upstream service back to the peers.
    Down,
}

impl Direction {
    /// Both directions, up first.
    pub const BOTH: [Direction; 2] = [Direction::Up, Direction::Down];
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The packet is lost.
    Drop(DropReason),
    /// The packet is delivered, once or twice.
    Deliver(Delivery),
}

impl Verdict {
    /// The delivery, if the packet is not dropped.
    pub fn delivery(&self) -> Option<Delivery> {
        match self {
            Verdict::Deliver(d) => Some(*d),
            Verdict::Drop(_) => None,
        }
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Independent (Bernoulli) loss.
    Loss,
    /// Gilbert–Elliott burst loss.
    BurstLoss,
    /// The bottleneck's queue was full.
    QueueOverflow,
    /// The packet arrived during a blackhole.
    Blackhole,
}

/// When to release a delivered packet, in the same time base as `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Release time of the packet.
    pub at: Duration,
    /// Release time of a duplicate copy, if one is made (never before `at`).
    pub copy_at: Option<Duration>,
}

impl Delivery {
    /// Every release time: one, or two for a duplicated packet.
    pub fn times(&self) -> impl Iterator<Item = Duration> {
        std::iter::once(self.at).chain(self.copy_at)
    }
}
