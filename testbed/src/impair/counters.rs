//! What an [`Impairment`](super::Impairment) did.

use std::fmt;

use super::verdict::DropReason;

/// Running totals for one direction. Two invariants hold at all times:
/// `packets_in == delivered + dropped()`, and the number of copies handed
/// out is `delivered + duplicated`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets offered to the engine.
    pub packets_in: u64,
    /// Bytes offered to the engine.
    pub bytes_in: u64,
    /// Packets delivered (at least once).
    pub delivered: u64,
    /// Bytes of the delivered packets (copies not counted).
    pub bytes_delivered: u64,
    /// Independent (Bernoulli) losses.
    pub dropped_loss: u64,
    /// Gilbert–Elliott losses.
    pub dropped_burst: u64,
    /// Packets that found the bottleneck queue full.
    pub dropped_queue: u64,
    /// Packets that arrived during a blackhole.
    pub dropped_blackhole: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Packets deliberately held back by the `reorder` impairment.
    pub held_back: u64,
    /// Delivered packets released before a packet that arrived earlier (they
    /// overtook it), whatever the cause: held-back packets or jitter that may
    /// reorder.
    pub reordered: u64,
}

impl Counters {
    /// All drops, whatever the cause.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_burst + self.dropped_queue + self.dropped_blackhole
    }

    /// Drops for one cause.
    pub fn dropped_by(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Loss => self.dropped_loss,
            DropReason::BurstLoss => self.dropped_burst,
            DropReason::QueueOverflow => self.dropped_queue,
            DropReason::Blackhole => self.dropped_blackhole,
        }
    }

    /// Counts one drop.
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        *match reason {
            DropReason::Loss => &mut self.dropped_loss,
            DropReason::BurstLoss => &mut self.dropped_burst,
            DropReason::QueueOverflow => &mut self.dropped_queue,
            DropReason::Blackhole => &mut self.dropped_blackhole,
        } += 1;
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in {} delivered {} (+{} dup) dropped {} [loss {} burst {} queue {} blackhole {}] reordered {}",
            self.packets_in,
            self.delivered,
            self.duplicated,
            self.dropped(),
            self.dropped_loss,
            self.dropped_burst,
            self.dropped_queue,
            self.dropped_blackhole,
            self.reordered,
        )
    }
}
