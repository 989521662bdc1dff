//! The SDK's copy of a room (pure: takes `now`, does no IO).
//!
//! It moves with [`RoomState::apply`], like the origin. Events that arrive
//! ahead of a gap wait in a bounded buffer; a gap (or a head further than the
//! state) that lasts longer than a reorder tolerance asks for a resync, and
//! asks again if the answer does not come.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::room::ApplyError;
use protocol::{Event, RoomState, Seq};

/// Most out-of-order events held while a gap is repaired.
const MAX_BUFFER: usize = 4096;

/// What changed in the mirror, in order, for the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// One event, applied.
    Event(Event),
    /// The state was replaced by a snapshot (events in between are not
    /// replayed one by one).
    Snapshot(Box<RoomState>),
}

/// A mirrored room.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    state: Option<RoomState>,
    buffer: BTreeMap<Seq, Event>,
    /// The highest seq known to exist.
    head: Seq,
    /// Since when the mirror has been behind `head`.
    behind_since: Option<Instant>,
    /// When the last resync was asked.
    asked_at: Option<Instant>,
    /// An event contradicted the state: only a fresh snapshot can help.
    broken: bool,
}

impl Mirror {
    /// An empty mirror (no state until a snapshot or a resume).
    pub fn new() -> Self {
        Mirror::default()
    }

    /// A mirror resuming from a state the SDK already holds.
    pub fn from_state(state: RoomState) -> Self {
        let head = state.seq;
        Mirror {
            state: Some(state),
            head,
            ..Mirror::default()
        }
    }

    /// The state, once there is one.
    pub fn state(&self) -> Option<&RoomState> {
        self.state.as_ref()
    }

    /// The last applied seq (`Seq(0)` before any state).
    pub fn seq(&self) -> Seq {
        self.state.as_ref().map_or(Seq(0), |s| s.seq)
    }

    /// Replace the state with a snapshot if it is not older than what we hold.
    pub fn handle_snapshot(&mut self, now: Instant, state: RoomState) -> Vec<Update> {
        if self.state.as_ref().is_some_and(|s| s.seq > state.seq) {
            return Vec::new();
        }
        self.head = self.head.max(state.seq);
        self.broken = false;
        self.state = Some(state.clone());
        let mut updates = vec![Update::Snapshot(Box::new(state))];
        self.drain(&mut updates);
        self.track(now);
        updates
    }

    /// Apply events (from any path, in any order, duplicates included).
    pub fn handle_events(&mut self, now: Instant, events: Vec<Event>) -> Vec<Update> {
        let mut updates = Vec::new();
        for e in events {
            self.head = self.head.max(e.seq);
            let Some(state) = &mut self.state else {
                self.hold(e);
                continue;
            };
            match state.apply(&e) {
                Ok(()) => updates.push(Update::Event(e)),
                Err(ApplyError::Stale { .. }) => {}
                Err(ApplyError::Gap { .. }) => self.hold(e),
                Err(ApplyError::Invalid { .. }) => {
                    // Only a bug or a forged event does this: asking for the
                    // same events again would not help; a snapshot does.
                    self.broken = true;
                }
            }
            self.drain(&mut updates);
        }
        self.track(now);
        updates
    }

    /// The relay says the room is at `seq`: a lost last event shows here.
    pub fn handle_head(&mut self, now: Instant, seq: Seq) {
        self.head = self.head.max(seq);
        self.track(now);
    }

    fn hold(&mut self, e: Event) {
        if self.buffer.len() < MAX_BUFFER {
            self.buffer.insert(e.seq, e);
        }
    }

    fn drain(&mut self, updates: &mut Vec<Update>) {
        let Some(state) = &mut self.state else { return };
        while let Some((&seq, _)) = self.buffer.first_key_value() {
            if seq <= state.seq {
                self.buffer.pop_first();
                continue;
            }
            if seq != state.seq.next() {
                break;
            }
            let Some((_, e)) = self.buffer.pop_first() else {
                break;
            };
            if state.apply(&e).is_ok() {
                updates.push(Update::Event(e));
            }
        }
    }

    fn track(&mut self, now: Instant) {
        if self.seq() >= self.head && self.state.is_some() {
            self.behind_since = None;
            self.asked_at = None;
        } else if self.behind_since.is_none() {
            self.behind_since = Some(now);
        }
    }

    /// Whether the mirror needs a whole snapshot (an event did not fit).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether the mirror is behind what it knows exists.
    pub fn is_behind(&self) -> bool {
        self.behind_since.is_some()
    }

    /// If a gap has lasted `tolerance` (and no resync was asked within
    /// `retry`), the seq to resync from; marks it asked.
    pub fn poll_resync(
        &mut self,
        now: Instant,
        tolerance: Duration,
        retry: Duration,
    ) -> Option<Seq> {
        if self.broken {
            return None;
        }
        let since = self.behind_since?;
        if now.saturating_duration_since(since) < tolerance {
            return None;
        }
        if (self.asked_at).is_some_and(|t| now.saturating_duration_since(t) < retry) {
            return None;
        }
        self.asked_at = Some(now);
        Some(self.seq().next())
    }

    /// When [`Mirror::poll_resync`] may next have something to say.
    pub fn poll_timeout(&self, tolerance: Duration, retry: Duration) -> Option<Instant> {
        let since = self.behind_since?;
        Some(match self.asked_at {
            Some(t) => t + retry,
            None => since + tolerance,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::virtual_clock::at_us as t;
    use protocol::{EventKind, RoomId, ServerTime, UserId};

    fn us(us: u64) -> Duration {
        Duration::from_micros(us)
    }

    fn ev(seq: u64) -> Event {
        let kind = if seq == 1 {
            EventKind::Opened { seats: 2 }
        } else {
            EventKind::Chat {
                from: UserId(1),
                text: seq.to_string(),
            }
        };
        Event {
            seq: Seq(seq),
            at: ServerTime(seq),
            cause: None,
            kind,
        }
    }

    fn snapshot_at(n: u64) -> RoomState {
        let mut s = RoomState::new(RoomId(1));
        for i in 1..=n {
            s.apply(&ev(i)).expect("in order");
        }
        s
    }

    fn seqs(u: &[Update]) -> Vec<u64> {
        u.iter()
            .filter_map(|u| match u {
                Update::Event(e) => Some(e.seq.0),
                Update::Snapshot(_) => None,
            })
            .collect()
    }

    #[test]
    fn out_of_order_events_wait_for_the_gap_to_fill() {
        let mut m = Mirror::from_state(snapshot_at(3));
        assert_eq!(
            seqs(&m.handle_events(t(0), vec![ev(5), ev(6)])),
            Vec::<u64>::new()
        );
        assert!(m.is_behind());
        assert_eq!(seqs(&m.handle_events(t(1), vec![ev(4)])), vec![4, 5, 6]);
        assert!(!m.is_behind());
        // Duplicates change nothing.
        assert!(m.handle_events(t(2), vec![ev(5)]).is_empty());
        assert_eq!(m.seq(), Seq(6));
    }

    #[test]
    fn a_lasting_gap_asks_for_a_resync_and_asks_again() {
        let mut m = Mirror::from_state(snapshot_at(3));
        m.handle_events(t(1_000), vec![ev(6)]);
        assert_eq!(m.poll_resync(t(1_500), us(1_000), us(10_000)), None);
        assert_eq!(m.poll_timeout(us(1_000), us(10_000)), Some(t(2_000)));
        assert_eq!(m.poll_resync(t(2_000), us(1_000), us(10_000)), Some(Seq(4)));
        assert_eq!(m.poll_resync(t(5_000), us(1_000), us(10_000)), None);
        assert_eq!(
            m.poll_resync(t(12_000), us(1_000), us(10_000)),
            Some(Seq(4))
        );
    }

    #[test]
    fn a_head_reveals_a_lost_last_event() {
        let mut m = Mirror::from_state(snapshot_at(3));
        m.handle_head(t(0), Seq(3));
        assert!(!m.is_behind());
        m.handle_head(t(0), Seq(4));
        assert_eq!(
            m.poll_resync(t(50_000), us(20_000), us(100_000)),
            Some(Seq(4))
        );
        m.handle_events(t(60_000), vec![ev(4)]);
        assert!(!m.is_behind());
    }

    #[test]
    fn an_event_that_does_not_fit_asks_for_a_snapshot_not_a_resync() {
        let mut m = Mirror::from_state(snapshot_at(3));
        let bad = Event {
            seq: Seq(4),
            at: ServerTime(4),
            cause: None,
            kind: EventKind::SeatTaken {
                seat: 9,
                user: UserId(1),
            },
        };
        assert!(m.handle_events(t(0), vec![bad]).is_empty());
        assert!(m.is_broken());
        assert_eq!(m.poll_resync(t(1_000_000), us(0), us(0)), None);
        m.handle_snapshot(t(2), snapshot_at(5));
        assert!(!m.is_broken());
        assert_eq!(m.seq(), Seq(5));
    }

    #[test]
    fn a_snapshot_replaces_older_state_and_releases_buffered_events() {
        let mut m = Mirror::new();
        assert!(m.handle_events(t(0), vec![ev(6), ev(7)]).is_empty());
        let u = m.handle_snapshot(t(1), snapshot_at(5));
        assert!(matches!(u[0], Update::Snapshot(_)));
        assert_eq!(seqs(&u), vec![6, 7]);
        // An older snapshot is ignored.
        assert!(m.handle_snapshot(t(2), snapshot_at(4)).is_empty());
        assert_eq!(m.seq(), Seq(7));
    }
}
