//! When a client's writer is woken for what the hub queued for it (pure:
//! takes `now`, does no IO).
//!
//! Every datagram costs the relay the same whatever it carries (a quinn
//! driver wake, a packet built and sealed, a `sendmsg`: MEASURED.md), so a
//! client of a busy room should get its events several to a datagram. The
//! rule, per client: a client whose writer was woken less than `window` ago
//! waits until `window` after that wake, and what queued meanwhile goes
//! together; any other client is woken at once. So a client that has had
//! nothing for `window` (a quiet room's viewer) gets its next event at
//! once, a room sending faster than one event per `window` costs one wake
//! and (usually) one datagram per client per `window`, and no event waits
//! more than `window` plus the timer's granularity (tokio's, 1 ms). A
//! client following a busy room and a quiet one gets the quiet room's
//! events on the busy room's schedule. Answers to the client itself (acks,
//! pongs, anything on a stream, a close) are urgent: they wake it at once
//! and take whatever else waits with them (the hub's answers through
//! [`Linger::queued`], the connection reader's through
//! `queue::OutTx::push`, which always wakes).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::hub::ClientId;

/// The wake schedule of every client's writer.
#[derive(Debug)]
pub struct Linger {
    window: Duration,
    clients: HashMap<ClientId, Entry>,
    /// Deferred wakes by due time; an entry whose client was woken or
    /// forgotten since is stale and skipped.
    due: BinaryHeap<Reverse<(Instant, ClientId)>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    woken_at: Instant,
    due: Option<Instant>,
}

impl Linger {
    /// Wakes at most once per `window` for a busy client (zero: always at once).
    pub fn new(window: Duration) -> Self {
        Linger {
            window,
            clients: HashMap::new(),
            due: BinaryHeap::new(),
        }
    }

    /// Something was queued for `id` that its writer has not been told
    /// about: `true` when the writer is to be woken now; otherwise
    /// [`Linger::take_due`] hands it out when its wait is over.
    pub fn queued(&mut self, now: Instant, id: ClientId, urgent: bool) -> bool {
        if self.window.is_zero() {
            return true;
        }
        let Some(e) = self.clients.get_mut(&id) else {
            let first = Entry {
                woken_at: now,
                due: None,
            };
            self.clients.insert(id, first);
            return true;
        };
        let quiet = now.saturating_duration_since(e.woken_at) >= self.window;
        if urgent || quiet {
            e.woken_at = now;
            e.due = None;
            return true;
        }
        if e.due.is_none() {
            let due = e.woken_at + self.window;
            e.due = Some(due);
            self.due.push(Reverse((due, id)));
        }
        false
    }

    /// When the next deferred wake falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((t, _))| *t)
    }

    /// Append to `out` every client whose deferred wake is due by `now`.
    pub fn take_due(&mut self, now: Instant, out: &mut Vec<ClientId>) {
        while let Some(&Reverse((t, id))) = self.due.peek() {
            if t > now {
                break;
            }
            self.due.pop();
            if let Some(e) = self.clients.get_mut(&id) {
                if e.due == Some(t) {
                    e.due = None;
                    e.woken_at = now;
                    out.push(id);
                }
            }
        }
        if self.due.is_empty() && self.due.capacity() > 1024 {
            self.due.shrink_to(1024);
        }
    }

    /// The client has gone.
    pub fn forget(&mut self, id: ClientId) {
        self.clients.remove(&id);
        // Give back what a crowd that has left held.
        let cap = self.clients.capacity();
        if cap > 1024 && self.clients.len() < cap / 4 {
            self.clients.shrink_to(self.clients.len() * 2);
        }
    }

    /// Clients known (for bounds in tests).
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is known.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_client_is_woken_at_once() {
        let t0 = Instant::now();
        let mut l = Linger::new(W);
        assert!(l.queued(t0, 1, false), "first event");
        assert!(
            l.queued(t0 + ms(5), 1, false),
            "quiet for longer than the window"
        );
        assert!(
            l.queued(t0 + ms(10), 2, false),
            "another client, first event"
        );
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_busy_client_is_woken_once_per_window_with_all_that_waited() {
        let t0 = Instant::now();
        let mut l = Linger::new(W);
        assert!(l.queued(t0, 1, false));
        // Two more events inside the window: deferred to t0 + W, once.
        assert!(!l.queued(t0 + ms(1), 1, false));
        assert_eq!(l.poll_timeout(), Some(t0 + W));
        assert!(!l.queued(t0 + Duration::from_micros(1500), 1, false));
        let mut out = Vec::new();
        l.take_due(t0 + ms(1), &mut out);
        assert!(out.is_empty(), "not due yet");
        l.take_due(t0 + W, &mut out);
        assert_eq!(out, vec![1], "one wake for both");
        assert_eq!(l.poll_timeout(), None);
        // The next event inside the new window waits for it too.
        assert!(!l.queued(t0 + ms(3), 1, false));
        assert_eq!(l.poll_timeout(), Some(t0 + W + W));
    }

    #[test]
    fn an_answer_wakes_a_deferred_client_at_once_and_cancels_its_wait() {
        let t0 = Instant::now();
        let mut l = Linger::new(W);
        assert!(l.queued(t0, 1, false));
        assert!(!l.queued(t0 + ms(1), 1, false));
        assert!(l.queued(t0 + ms(1), 1, true), "an ack does not wait");
        let mut out = Vec::new();
        l.take_due(t0 + W, &mut out);
        assert!(out.is_empty(), "the deferred wake was taken by the answer");
    }

    #[test]
    fn no_wait_at_all_with_a_zero_window_and_none_for_a_gone_client() {
        let t0 = Instant::now();
        let mut l = Linger::new(Duration::ZERO);
        assert!(l.queued(t0, 1, false));
        assert!(l.queued(t0, 1, false));
        assert!(l.is_empty(), "nothing tracked");
        let mut l = Linger::new(W);
        assert!(l.queued(t0, 1, false));
        assert!(!l.queued(t0 + ms(1), 1, false));
        l.forget(1);
        let mut out = Vec::new();
        l.take_due(t0 + W, &mut out);
        assert!(out.is_empty());
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
    }
}
