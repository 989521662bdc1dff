//! A room as the relay keeps it: the latest state (a mirror of the origin's,
//! moved by the same `apply`) and a ring of recent events, so that joins and
//! gap repairs are served without a trip to the origin.

use std::collections::VecDeque;

use protocol::room::ApplyError;
use protocol::{Event, RoomState, Seq};

/// What a client that has the room at `since` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serve {
    /// The events after `since` (possibly none: it is current).
    Events(Vec<Event>),
    /// The whole state: `since` is unknown or older than the ring.
    Snapshot(Box<RoomState>),
}

/// Latest state and recent events of one room.
#[derive(Debug, Clone)]
pub struct RoomCache {
    state: RoomState,
    ring: VecDeque<Event>,
    cap: usize,
}

impl RoomCache {
    /// Start from a snapshot, keeping up to `cap` events.
    pub fn new(state: RoomState, cap: usize) -> Self {
        RoomCache {
            state,
            ring: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Start from a snapshot and the events that led up to it (consecutive,
    /// ending at the snapshot's seq; anything else is ignored).
    pub fn with_recent(state: RoomState, recent: Vec<Event>, cap: usize) -> Self {
        let mut c = RoomCache::new(state, cap);
        let consecutive = recent.windows(2).all(|w| w[1].seq == w[0].seq.next());
        if consecutive && recent.last().is_some_and(|e| e.seq == c.state.seq) {
            let skip = recent.len().saturating_sub(c.cap);
            c.ring = recent.into_iter().skip(skip).collect();
        }
        c
    }

    /// The latest state.
    pub fn state(&self) -> &RoomState {
        &self.state
    }

    /// The latest seq.
    pub fn seq(&self) -> Seq {
        self.state.seq
    }

    /// Apply events from the origin. Ones already applied (a resubscription
    /// overlapping what we have) are skipped; a gap is an error and nothing
    /// after it is applied. Returns the events that were new.
    pub fn handle_events(&mut self, events: &[Event]) -> Result<Vec<Event>, ApplyError> {
        let mut new = Vec::new();
        for e in events {
            match self.state.apply(e) {
                Ok(()) => {
                    self.ring.push_back(e.clone());
                    if self.ring.len() > self.cap {
                        self.ring.pop_front();
                    }
                    new.push(e.clone());
                }
                Err(ApplyError::Stale { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(new)
    }

    /// What a client holding the room at `since` (or nothing) needs.
    pub fn serve(&self, since: Option<Seq>) -> Serve {
        match since.and_then(|s| self.events_after(s)) {
            Some(events) => Serve::Events(events),
            None => Serve::Snapshot(Box::new(self.state.clone())),
        }
    }

    /// Events after `since`, if the ring still holds all of them.
    pub fn events_after(&self, since: Seq) -> Option<Vec<Event>> {
        let head = self.state.seq;
        if since > head {
            return None;
        }
        let first = self.ring.front().map_or(head.next(), |e| e.seq);
        if since.next() < first {
            return None;
        }
        Some(
            self.ring
                .iter()
                .filter(|e| e.seq > since)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::{EventKind, RoomId, ServerTime, UserId};

    /// Event `seq` of a room (the first opens it, the others are chat).
    pub(crate) fn event(seq: u64) -> Event {
        let kind = if seq == 1 {
            EventKind::Opened { seats: 2 }
        } else {
            EventKind::Chat {
                from: UserId(1),
                text: format!("m{seq}"),
            }
        };
        Event {
            seq: Seq(seq),
            at: ServerTime(seq),
            cause: None,
            kind,
        }
    }

    fn cache(n: u64, cap: usize) -> RoomCache {
        let mut c = RoomCache::new(RoomState::new(RoomId(1)), cap);
        let events: Vec<_> = (1..=n).map(event).collect();
        c.handle_events(&events).expect("in order");
        c
    }

    #[test]
    fn a_client_inside_the_ring_gets_only_what_it_missed() {
        let c = cache(10, 5);
        match c.serve(Some(Seq(7))) {
            Serve::Events(e) => assert_eq!(
                e.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
                vec![8, 9, 10]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.serve(Some(Seq(10))), Serve::Events(vec![]));
        assert_eq!(
            c.serve(Some(Seq(5))).clone(),
            Serve::Events((6..=10).map(event).collect())
        );
    }

    #[test]
    fn a_client_behind_the_ring_or_new_gets_a_snapshot() {
        let c = cache(10, 5);
        assert!(matches!(c.serve(Some(Seq(4))), Serve::Snapshot(s) if s.seq == Seq(10)));
        assert!(matches!(c.serve(None), Serve::Snapshot(_)));
        assert!(matches!(c.serve(Some(Seq(11))), Serve::Snapshot(_)));
    }

    #[test]
    fn a_snapshot_with_its_recent_events_serves_resumes() {
        let full = cache(10, 100);
        let recent: Vec<Event> = (6..=10).map(event).collect();
        let c = RoomCache::with_recent(full.state().clone(), recent, 100);
        assert_eq!(
            c.serve(Some(Seq(7))),
            Serve::Events((8..=10).map(event).collect())
        );
        assert!(matches!(c.serve(Some(Seq(4))), Serve::Snapshot(_)));
        // Events that do not end at the snapshot are not trusted.
        let c = RoomCache::with_recent(full.state().clone(), (5..=9).map(event).collect(), 100);
        assert!(matches!(c.serve(Some(Seq(7))), Serve::Snapshot(_)));
    }

    #[test]
    fn overlapping_events_are_skipped_and_gaps_refused() {
        let mut c = cache(5, 5);
        let new = c
            .handle_events(&(4..=7).map(event).collect::<Vec<_>>())
            .expect("overlap");
        assert_eq!(new.len(), 2);
        assert!(matches!(
            c.handle_events(&[event(9)]),
            Err(ApplyError::Gap { .. })
        ));
        assert_eq!(c.seq(), Seq(7));
    }
}
