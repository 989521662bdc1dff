//! The per-client send scheduler (pure: takes `now`, does no IO).
//!
//! Messages wait in one queue per class and leave in class order, packed
//! several to a datagram. Ambient messages with a coalescing key (heads,
//! counters) replace their predecessor (the latest wins) and are the first
//! dropped when the queue is over its byte budget; nothing sequenced is ever
//! dropped — a client that cannot take it is over budget and gets cut off,
//! then resumes from a snapshot.
//!
//! With redundancy on, messages marked for it go twice, the copy a few
//! milliseconds later in a separate datagram, so that one lost packet costs
//! nothing. Acks are always marked; fanned-out authority and gift events only
//! while the client's path is losing packets (doubling every event for every
//! client would double the relay's fan-out cost for nothing on a clean path).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::codec::Packer;
use protocol::Class;

/// Whether a message goes twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// Once (pongs, heads, ambient traffic: lost ones are re-asked or coalesced).
    Once,
    /// Twice while the path is losing packets (fanned-out events).
    IfLossy,
    /// Always twice (acks: a lost ack costs a whole timeout).
    Twice,
}

/// One encoded message waiting to go out as (part of) a datagram.
#[derive(Debug, Clone)]
pub struct Item {
    /// Priority class.
    pub class: Class,
    /// The encoded message (`codec::encode`).
    pub payload: Bytes,
    /// Ambient only: a queued item with the same key is replaced.
    pub coalesce: Option<u64>,
    /// Whether it goes twice.
    pub copies: Copies,
}

/// The client's queue is over budget with nothing left to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Per-client datagram scheduler.
#[derive(Debug)]
pub struct Scheduler {
    queues: [VecDeque<Item>; 5],
    /// Copies of critical messages and when they are due.
    copies: VecDeque<(Instant, Bytes)>,
    bytes: usize,
    budget: usize,
    redundancy: Option<Duration>,
    lossy: bool,
    dropped: u64,
}

impl Scheduler {
    /// A scheduler holding at most `budget` bytes, sending critical messages
    /// twice `redundancy` apart when set.
    pub fn new(budget: usize, redundancy: Option<Duration>) -> Self {
        Scheduler {
            queues: Default::default(),
            copies: VecDeque::new(),
            bytes: 0,
            budget,
            redundancy,
            lossy: false,
            dropped: 0,
        }
    }

    /// Whether the path is losing packets now (decides [`Copies::IfLossy`]).
    pub fn set_lossy(&mut self, lossy: bool) {
        self.lossy = lossy;
    }

    /// Queue a message.
    pub fn push(&mut self, item: Item) -> Result<(), Overflow> {
        let q = &mut self.queues[item.class.rank()];
        if let Some(key) = item.coalesce {
            if let Some(old) = q.iter_mut().find(|i| i.coalesce == Some(key)) {
                self.bytes = self.bytes - old.payload.len() + item.payload.len();
                *old = item;
                return Ok(());
            }
        }
        self.bytes += item.payload.len();
        q.push_back(item);
        while self.bytes > self.budget {
            // Shed coalescible ambient traffic (heads, counters), oldest
            // first; never anything else. Sequenced events — likes
            // included — carry a room seq: dropping one would stall every
            // later event behind a gap.
            let ambient = &mut self.queues[Class::Ambient.rank()];
            match ambient.iter().position(|i| i.coalesce.is_some()) {
                Some(at) => {
                    if let Some(old) = ambient.remove(at) {
                        self.bytes -= old.payload.len();
                        self.dropped += 1;
                    }
                }
                None => return Err(Overflow),
            }
        }
        Ok(())
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.bytes
    }

    /// Ambient messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether anything waits (queued, or copies not yet due).
    pub fn is_idle(&self) -> bool {
        self.bytes == 0 && self.copies.is_empty()
    }

    /// When the next copy falls due, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.copies.front().map(|(t, _)| *t)
    }

    /// Datagrams to send now, at most `budget` bytes of them, each at most
    /// `max` bytes: due copies first, then queued messages in class order.
    pub fn poll_datagrams(&mut self, now: Instant, max: usize, budget: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut spent = 0usize;
        // Copies travel in their own datagrams, apart from the originals.
        let mut p = Packer::new(max);
        while let Some((due, payload)) = self.copies.front() {
            if *due > now || spent + p.total() + payload.len() + 5 > budget {
                break;
            }
            if p.push_encoded(payload).is_err() {
                self.copies.pop_front();
                continue;
            }
            self.copies.pop_front();
        }
        for d in p.finish() {
            spent += d.len();
            out.push(d);
        }
        let mut p = Packer::new(max);
        'classes: for q in &mut self.queues {
            while let Some(item) = q.front() {
                let need = item.payload.len() + 5;
                // Everything packed so far counts, not only the datagram
                // being filled: quinn makes room for an over-budget datagram
                // by dropping the oldest queued ones, our most urgent.
                if spent + p.total() + need > budget {
                    break 'classes;
                }
                let Some(item) = q.pop_front() else { break };
                self.bytes -= item.payload.len();
                if p.push_encoded(&item.payload).is_err() {
                    // Larger than any datagram: it should have gone on a stream.
                    continue;
                }
                let twice = match item.copies {
                    Copies::Once => false,
                    Copies::IfLossy => self.lossy,
                    Copies::Twice => true,
                };
                if let (Some(delay), true) = (self.redundancy, twice) {
                    self.copies.push_back((now + delay, item.payload));
                }
            }
        }
        for d in p.finish() {
            out.push(d);
        }
        self.trim();
        out
    }

    /// Give back what a burst left: an emptied queue keeps a few slots.
    fn trim(&mut self) {
        const KEEP: usize = 16;
        for q in &mut self.queues {
            if q.is_empty() && q.capacity() > 4 * KEEP {
                q.shrink_to(KEEP);
            }
        }
        if self.copies.is_empty() && self.copies.capacity() > 4 * KEEP {
            self.copies.shrink_to(KEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Virtual time: `us` microseconds after the tests' origin.
    fn at(us: u64) -> Instant {
        static T0: OnceLock<Instant> = OnceLock::new();
        *T0.get_or_init(Instant::now) + Duration::from_micros(us)
    }

    fn item(class: Class, tag: u8, len: usize, coalesce: Option<u64>) -> Item {
        let mut v = vec![tag; len];
        v[0] = tag;
        let copies = if class.is_critical() {
            Copies::IfLossy
        } else {
            Copies::Once
        };
        Item {
            class,
            payload: Bytes::from(v),
            coalesce,
            copies,
        }
    }

    /// The first byte of every payload in the datagrams, in order.
    fn tags(ds: &[Bytes]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in ds {
            // Entries are varint length + payload; payloads here are < 128 bytes.
            let mut rest = &d[..];
            while !rest.is_empty() {
                let len = rest[0] as usize;
                out.push(rest[1]);
                rest = &rest[1 + len..];
            }
        }
        out
    }

    #[test]
    fn higher_classes_leave_first_and_pack_together() {
        let mut s = Scheduler::new(10_000, None);
        s.push(item(Class::Ambient, 5, 10, None)).expect("fits");
        s.push(item(Class::Chat, 4, 10, None)).expect("fits");
        s.push(item(Class::Authority, 2, 10, None)).expect("fits");
        s.push(item(Class::Gift, 3, 10, None)).expect("fits");
        let ds = s.poll_datagrams(at(0), 1200, 100_000);
        assert_eq!(ds.len(), 1);
        assert_eq!(tags(&ds), vec![2, 3, 4, 5]);
        assert!(s.is_idle());
    }

    #[test]
    fn ambient_coalesces_and_is_shed_first() {
        let mut s = Scheduler::new(100, None);
        s.push(item(Class::Ambient, 1, 30, Some(7))).expect("fits");
        s.push(item(Class::Ambient, 2, 30, Some(7)))
            .expect("replaces");
        assert_eq!(s.queued_bytes(), 30);
        s.push(item(Class::Ambient, 3, 30, Some(8))).expect("fits");
        s.push(item(Class::Gift, 4, 60, None))
            .expect("sheds ambient");
        assert_eq!(s.dropped(), 1);
        assert_eq!(tags(&s.poll_datagrams(at(0), 1200, 10_000)), vec![4, 3]);
    }

    #[test]
    fn sequenced_ambient_events_are_never_shed() {
        let mut s = Scheduler::new(100, None);
        s.push(item(Class::Ambient, 1, 60, None)).expect("fits");
        assert_eq!(s.push(item(Class::Ambient, 2, 60, None)), Err(Overflow));
        assert_eq!(s.dropped(), 0);
    }

    #[test]
    fn critical_traffic_is_never_shed_but_overflows() {
        let mut s = Scheduler::new(100, None);
        s.push(item(Class::Gift, 1, 60, None)).expect("fits");
        assert_eq!(s.push(item(Class::Authority, 2, 60, None)), Err(Overflow));
    }

    #[test]
    fn the_byte_budget_holds_the_rest_back() {
        let mut s = Scheduler::new(10_000, None);
        for tag in 0..10 {
            s.push(item(Class::Chat, tag, 50, None)).expect("fits");
        }
        let first = s.poll_datagrams(at(0), 1200, 200);
        assert!(first.iter().map(|d| d.len()).sum::<usize>() <= 200);
        let rest = s.poll_datagrams(at(0), 1200, 10_000);
        assert_eq!(
            [tags(&first), tags(&rest)].concat(),
            (0..10).collect::<Vec<u8>>()
        );
    }

    #[test]
    fn events_go_once_on_a_clean_path() {
        let mut s = Scheduler::new(10_000, Some(Duration::from_micros(5_000)));
        s.push(item(Class::Gift, 1, 10, None)).expect("fits");
        assert_eq!(tags(&s.poll_datagrams(at(0), 1200, 10_000)), vec![1]);
        assert!(s.is_idle());
        let mut ack = item(Class::Session, 2, 10, None);
        ack.copies = Copies::Twice;
        s.push(ack).expect("fits");
        s.poll_datagrams(at(0), 1200, 10_000);
        assert_eq!(tags(&s.poll_datagrams(at(5_000), 1200, 10_000)), vec![2]);
    }

    #[test]
    fn a_backlog_larger_than_the_budget_stays_queued() {
        let mut s = Scheduler::new(100_000, None);
        for tag in 0..40 {
            s.push(item(Class::Chat, tag, 100, None)).expect("fits");
        }
        let sent = s.poll_datagrams(at(0), 1200, 2000);
        assert!(sent.iter().map(|d| d.len()).sum::<usize>() <= 2000);
        assert!(s.queued_bytes() >= 2000, "the rest waits for room");
    }

    #[test]
    fn critical_messages_go_twice_in_separate_datagrams() {
        let mut s = Scheduler::new(10_000, Some(Duration::from_micros(5_000)));
        s.set_lossy(true);
        s.push(item(Class::Gift, 1, 10, None)).expect("fits");
        s.push(item(Class::Chat, 2, 10, None)).expect("fits");
        let first = s.poll_datagrams(at(1_000), 1200, 10_000);
        assert_eq!(tags(&first), vec![1, 2]);
        assert_eq!(s.poll_timeout(), Some(at(6_000)));
        assert!(s.poll_datagrams(at(5_999), 1200, 10_000).is_empty());
        let copy = s.poll_datagrams(at(6_000), 1200, 10_000);
        assert_eq!(tags(&copy), vec![1]);
        assert!(s.is_idle());
    }
}
