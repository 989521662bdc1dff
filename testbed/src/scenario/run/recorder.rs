//! The [`Recorder`] the run's tasks share, and the [`Tracker`] of actions in
//! flight: a handful of `std` mutexes held for a push each, so any task (or
//! thread) can record. What they record is [`crate::scenario::run::record`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use client_sdk::Acked;
use protocol::{Class, Event, Reason, RoomId, ServerTime};

use crate::scenario::run::record::{
    micros, ActionRecord, ActionResult, BattleRecord, ClockReading, ConnEvent, ConnRecord,
    Countdown, GiftSent, Marker, Recorded, RefClock, SeenEvents, Stall, StallKind, STALL_MS,
};

/// An action sent and not yet resolved.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Which client.
    pub client: u32,
    /// The room.
    pub room: RoomId,
    /// The action's class.
    pub class: Class,
    /// The action's name.
    pub name: &'static str,
    /// When sent, µs.
    pub sent_us: u64,
    /// The gift, for gifts.
    pub gift: Option<GiftSent>,
}

/// Most recent ack latencies kept for the progress line.
const RECENT: usize = 2_000;

#[derive(Debug, Default)]
struct TrackerInner {
    next: u64,
    pending: HashMap<u64, Pending>,
    done: Vec<ActionRecord>,
    recent: VecDeque<u64>,
    acked: u64,
    closed: bool,
}

/// Every action from send to outcome: what resolved, and what never did.
#[derive(Debug, Default)]
pub struct Tracker {
    inner: Mutex<TrackerInner>,
}

impl Tracker {
    /// A new, empty tracker.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    fn lock(&self) -> MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An action is sent; returns its token for [`Tracker::end`].
    pub fn begin(&self, p: Pending) -> u64 {
        let mut t = self.lock();
        t.next += 1;
        let token = t.next;
        t.pending.insert(token, p);
        token
    }

    /// The action of `token` resolved with `r`. Ignored once the tracker is
    /// [finished](Tracker::finish).
    pub fn end(&self, token: u64, r: &Result<Acked, client_sdk::Error>) {
        let mut t = self.lock();
        if t.closed {
            return;
        }
        let Some(p) = t.pending.remove(&token) else {
            return;
        };
        let (result, latency_us) = match r {
            Ok(a) => (
                match a.outcome {
                    client_sdk::Outcome::Applied { seq } => ActionResult::Applied { id: a.id, seq },
                    client_sdk::Outcome::Rejected { reason } => {
                        ActionResult::Rejected { id: a.id, reason }
                    }
                    client_sdk::Outcome::Unknown => ActionResult::Rejected {
                        id: a.id,
                        reason: Reason::Stale,
                    },
                },
                micros(a.latency),
            ),
            Err(client_sdk::Error::Busy { .. }) => (ActionResult::Busy, 0),
            Err(e) => (ActionResult::Failed(e.to_string()), 0),
        };
        if latency_us > 0 {
            t.acked += 1;
            if t.recent.len() == RECENT {
                t.recent.pop_front();
            }
            t.recent.push_back(latency_us);
        }
        t.done.push(ActionRecord {
            client: p.client,
            room: p.room,
            class: p.class,
            name: p.name,
            sent_us: p.sent_us,
            latency_us,
            result,
            gift: p.gift,
        });
    }

    /// Actions sent and not resolved yet.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// Actions acked so far.
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// p99 of the most recent ack latencies, µs.
    pub fn recent_p99(&self) -> Option<u64> {
        let mut v: Vec<u64> = self.lock().recent.iter().copied().collect();
        v.sort_unstable();
        (!v.is_empty()).then(|| crate::scenario::verdict::stats::quantile(&v, 0.99))
    }

    /// Every action: resolved ones, and the rest as `Unresolved`. Later
    /// resolutions are ignored.
    pub fn finish(&self) -> Vec<ActionRecord> {
        let mut t = self.lock();
        t.closed = true;
        let mut pending: Vec<(u64, Pending)> = t.pending.drain().collect();
        pending.sort_by_key(|(token, _)| *token);
        let mut out = std::mem::take(&mut t.done);
        out.extend(pending.into_iter().map(|(_, p)| ActionRecord {
            client: p.client,
            room: p.room,
            class: p.class,
            name: p.name,
            sent_us: p.sent_us,
            latency_us: 0,
            result: ActionResult::Unresolved,
            gift: p.gift,
        }));
        out.sort_by_key(|a| a.sent_us);
        out
    }
}

/// Everything the run's tasks record into, shared behind an `Arc`.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    clock: RwLock<RefClock>,
    /// Actions from send to outcome.
    pub tracker: Tracker,
    seen: Mutex<SeenEvents>,
    conns: Mutex<Vec<ConnRecord>>,
    readings: Mutex<Vec<ClockReading>>,
    countdowns: Mutex<Vec<Countdown>>,
    battles: Mutex<Vec<BattleRecord>>,
    markers: Mutex<Vec<Marker>>,
    stalls: Mutex<Vec<Stall>>,
    notes: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// A recorder whose time zero is `start`, with the origin's clock.
    pub fn new(start: Instant, clock: RefClock) -> Recorder {
        Recorder {
            start,
            clock: RwLock::new(clock),
            tracker: Tracker::new(),
            seen: Mutex::default(),
            conns: Mutex::default(),
            readings: Mutex::default(),
            countdowns: Mutex::default(),
            battles: Mutex::default(),
            markers: Mutex::default(),
            stalls: Mutex::default(),
            notes: Mutex::default(),
        }
    }

    /// Time zero of the run.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// µs since time zero (0 before it).
    pub fn elapsed_us(&self) -> u64 {
        micros(self.start.elapsed())
    }

    /// The origin's clock.
    pub fn clock(&self) -> RefClock {
        *self.clock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Origin time now.
    pub fn origin_now(&self) -> ServerTime {
        self.clock().now()
    }

    /// Re-anchor the origin's clock (after a restart); returns how far the
    /// new origin's clock is from the old one's continuation, µs.
    pub fn reanchor(&self, clock: RefClock) -> i64 {
        let mut c = self.clock.write().unwrap_or_else(PoisonError::into_inner);
        let step = clock.now().diff_micros(c.now());
        *c = clock;
        step
    }

    /// The run time (µs) at which the origin's clock reads `t`.
    pub fn run_us(&self, t: ServerTime) -> u64 {
        let i = self.clock().instant(t);
        micros(i.saturating_duration_since(self.start))
    }

    /// A client received an event (its delivery is recorded by the caller).
    pub fn saw(&self, room: RoomId, e: &Event) {
        lock(&self.seen).handle(room, e);
    }

    /// A client's connection changed.
    pub fn conn(&self, client: u32, event: ConnEvent) {
        let t_us = self.elapsed_us();
        lock(&self.conns).push(ConnRecord {
            t_us,
            client,
            event,
        });
    }

    /// A clock reading.
    pub fn reading(&self, client: u32, error_us: i64) {
        let t_ms = (self.elapsed_us() / 1000) as u32;
        lock(&self.readings).push(ClockReading {
            t_ms,
            client,
            error_us,
        });
    }

    /// A countdown result.
    pub fn countdown(&self, c: Countdown) {
        lock(&self.countdowns).push(c);
    }

    /// A battle started.
    pub fn battle(&self, b: BattleRecord) {
        lock(&self.battles).push(b);
    }

    /// The battles started so far.
    pub fn battles(&self) -> Vec<BattleRecord> {
        lock(&self.battles).clone()
    }

    /// A timeline entry was played.
    pub fn marker(&self, m: Marker) {
        lock(&self.markers).push(m);
    }

    /// A sleep of `asked` that took `took`: recorded as a stall when it
    /// woke more than [`STALL_MS`] late.
    pub fn woke(&self, kind: StallKind, asked: Duration, took: Duration) {
        let late = took.saturating_sub(asked);
        if late > Duration::from_millis(STALL_MS) {
            let t_ms = (self.elapsed_us() / 1000) as u32;
            lock(&self.stalls).push(Stall {
                t_ms,
                late_ms: late.as_millis() as u32,
                kind,
            });
        }
    }

    /// Something worth telling in the report that is not a figure.
    pub fn note(&self, s: impl Into<String>) {
        lock(&self.notes).push(s.into());
    }

    /// Everything recorded, the tracker finished.
    pub fn take(&self) -> Recorded {
        Recorded {
            actions: self.tracker.finish(),
            seen: std::mem::take(&mut *lock(&self.seen)),
            conns: std::mem::take(&mut *lock(&self.conns)),
            readings: std::mem::take(&mut *lock(&self.readings)),
            countdowns: std::mem::take(&mut *lock(&self.countdowns)),
            battles: std::mem::take(&mut *lock(&self.battles)),
            markers: std::mem::take(&mut *lock(&self.markers)),
            stalls: std::mem::take(&mut *lock(&self.stalls)),
            notes: std::mem::take(&mut *lock(&self.notes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ActionId, Seq, SessionId};

    fn pending(name: &'static str, sent_us: u64) -> Pending {
        Pending {
            client: 1,
            room: RoomId(1),
            class: Class::Gift,
            name,
            sent_us,
            gift: None,
        }
    }

    #[test]
    fn the_tracker_knows_what_never_resolved() {
        let t = Tracker::new();
        let a = t.begin(pending("a", 1));
        let b = t.begin(pending("b", 2));
        let c = t.begin(pending("c", 3));
        let id = ActionId {
            session: SessionId(9),
            n: 1,
        };
        t.end(
            a,
            &Ok(Acked {
                id,
                outcome: client_sdk::Outcome::Applied { seq: Seq(4) },
                latency: Duration::from_millis(3),
            }),
        );
        t.end(c, &Err(client_sdk::Error::Busy { id }));
        assert_eq!((t.in_flight(), t.acked()), (1, 1));
        assert_eq!(t.recent_p99(), Some(3_000));
        let all = t.finish();
        // A resolution after the end does not count.
        t.end(b, &Err(client_sdk::Error::Closed));
        let names: Vec<(&str, &ActionResult)> = all.iter().map(|a| (a.name, &a.result)).collect();
        assert_eq!(
            names,
            vec![
                ("a", &ActionResult::Applied { id, seq: Seq(4) }),
                ("b", &ActionResult::Unresolved),
                ("c", &ActionResult::Busy),
            ]
        );
    }
}
