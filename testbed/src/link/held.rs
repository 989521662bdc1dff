//! Packets waiting for their release time.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::impair::Direction;

/// Where a released packet goes.
#[derive(Clone, Debug)]
pub(crate) enum Via {
    /// Back to a peer, from the listening socket.
    Listen(SocketAddr),
    /// To the upstream service, from the peer's session socket (connected).
    Session(Arc<UdpSocket>),
}

/// One copy of a packet, waiting.
#[derive(Debug)]
pub(crate) struct Held {
    /// Release time, in link time.
    pub(crate) at: Duration,
    /// Arrival order: equal release times go out in arrival order.
    pub(crate) seq: u64,
    /// For the counters.
    pub(crate) direction: Direction,
    /// Where it goes.
    pub(crate) via: Via,
    /// The datagram.
    pub(crate) payload: Vec<u8>,
}

impl Held {
    /// The ordering key.
    fn key(&self) -> (Duration, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed, so that the max-heap pops the earliest release first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// The held packets, earliest release first, within a packet and a byte cap.
#[derive(Debug)]
pub(crate) struct Releases {
    /// Min-heap by `(at, seq)`.
    heap: BinaryHeap<Held>,
    /// Most packets held at once.
    max_packets: usize,
    /// Most payload bytes held at once.
    max_bytes: usize,
    /// Payload bytes held now.
    bytes: usize,
    /// Next arrival number.
    next_seq: u64,
}

impl Releases {
    /// An empty set holding at most `max_packets` packets and `max_bytes`
    /// bytes of payload.
    pub(crate) fn new(max_packets: usize, max_bytes: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            max_packets,
            max_bytes,
            bytes: 0,
            next_seq: 0,
        }
    }

    /// Holds a copy until `at`; gives it back if either cap would be passed.
    pub(crate) fn push(
        &mut self,
        at: Duration,
        direction: Direction,
        via: Via,
        payload: Vec<u8>,
    ) -> Result<(), Vec<u8>> {
        if self.heap.len() >= self.max_packets || self.bytes + payload.len() > self.max_bytes {
            return Err(payload);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += payload.len();
        self.heap.push(Held {
            at,
            seq,
            direction,
            via,
            payload,
        });
        Ok(())
    }

    /// The earliest release time.
    pub(crate) fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|h| h.at)
    }

    /// The earliest packet, if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Duration) -> Option<Held> {
        if self.heap.peek()?.at > now {
            return None;
        }
        let held = self.heap.pop()?;
        self.bytes -= held.payload.len();
        Some(held)
    }

    /// Empties the set, returning what was held.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Held> + '_ {
        self.bytes = 0;
        self.heap.drain()
    }
}
