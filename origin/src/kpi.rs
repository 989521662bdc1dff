//! The interaction KPIs the origin alone can see, as a network-free tracker:
//! it takes `now` with every input, reads no clock and does no IO. The
//! authority task feeds it every record the rules make, every refused
//! start, every presence change and every unloaded room, asks
//! [`Kpi::poll_timeout`] when to call [`Kpi::handle_timeout`], and lends it
//! the presence map ([`Present`]) to look at.
//!
//! What it counts (into [`Metrics`]):
//! - **starts**: a `PkStarted` (once per battle, though both rooms log it)
//!   or a `ChallengeStarted` is `started`; a `PkAccept` or `ChallengeStart`
//!   the rules refuse is `failed`, with the refusal as `reason`.
//! - **completions**: a `PkSettled` is `settled`, or `forfeited` when a
//!   host gave up (once per battle); a `ChallengeEnded` is `settled`
//!   (reached or not). An interaction that disappears without ending is
//!   `aborted`: its room unloaded while it ran, or no end seen
//!   [`ABORT_SLACK`] after it was due (the rules never do either today; the
//!   series exists so an alert can watch for it).
//! - **gifts by window**: a `Gift` that counted in a battle is `pk`; else,
//!   sent while its room ran a challenge, `challenge`; else `none`.
//! - **conversion**: the users present in an interaction's room(s) at any
//!   time while it ran (present at its start, or coming online during it),
//!   and of those the ones who gifted in it (a gift that counted in the
//!   battle; any gift in the room during a challenge). Both are added when
//!   it ends normally (not when aborted), so the ratio of the two counters
//!   is the share of viewers who gifted. A gifter the presence map never
//!   showed counts as a viewer too, so gifters never exceed viewers.
//! - **retention**: the users present in each room of a battle when it
//!   settles; `retention_window` later, how many of them are still present
//!   in that room. Both counters move then, together.
//!
//! Presence carries no roles, so "viewers" are every user present,
//! hosts and seated guests included. After a restart the tracker starts
//! empty: [`Kpi::seed`] picks up the interactions still running (their
//! starts were counted by the previous process), and their audience from
//! then on, as relays announce their users again.
//!
//! # Memory
//!
//! State is kept per running interaction (at most one battle and one
//! challenge per live room) and per settled battle awaiting its retention
//! check (at most the battles settled in the last `retention_window`). Each
//! holds user ids: an interaction's audience is bounded by the users its
//! rooms saw while it ran, a retention cohort by the presence of its two
//! rooms at settlement. On top of that, all of them together hold at most
//! [`MAX_TRACKED`] user entries (about 40 bytes each, so under 50 MiB): an
//! interaction that would go over it stops growing and is left out of the
//! conversion counters when it ends, and a cohort that would go over it is
//! not checked; both are logged. The ratios stay honest (nothing is
//! half-counted); only their sample shrinks under extreme load.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use protocol::room::BattlePhase;
use protocol::{
    Action, BattleId, EventKind, Outcome, Reason, RoomId, RoomState, ServerTime, UserId,
};

use crate::metrics::{Completion, Kind, Metrics, Window};
use crate::rules::Record;

/// Most user entries held in all (audiences and retention cohorts).
pub const MAX_TRACKED: usize = 1 << 20;

/// How long after its due end an interaction with no end seen counts as
/// aborted (and leaves memory).
pub const ABORT_SLACK: Duration = Duration::from_secs(60);

/// Who is online where: the authority task's presence map.
pub trait Present {
    /// Call `f` with every user present in `room`.
    fn for_each_in(&self, room: RoomId, f: &mut dyn FnMut(UserId));
    /// Whether `user` is present in `room`.
    fn is_present(&self, room: RoomId, user: UserId) -> bool;
}

/// A running interaction's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Battle(BattleId),
    Challenge(RoomId),
}

impl Key {
    fn kind(self) -> Kind {
        match self {
            Key::Battle(_) => Kind::Pk,
            Key::Challenge(_) => Kind::Challenge,
        }
    }
}

/// A running interaction.
#[derive(Debug)]
struct Live {
    rooms: [RoomId; 2],
    viewers: BTreeSet<UserId>,
    gifters: BTreeSet<UserId>,
    /// It hit [`MAX_TRACKED`]: left out of the conversion counters.
    overflow: bool,
    /// When it counts as aborted if no end was seen.
    expires_at: ServerTime,
}

/// Viewers of a settled battle, checked again at `due`.
#[derive(Debug)]
struct Cohort {
    due: ServerTime,
    users: Vec<(RoomId, UserId)>,
}

/// The KPI tracker (see the module docs).
#[derive(Debug)]
pub struct Kpi {
    metrics: Metrics,
    retention_window: Duration,
    live: BTreeMap<Key, Live>,
    /// The keys running in each room (at most a battle and a challenge).
    by_room: BTreeMap<RoomId, BTreeSet<Key>>,
    /// `(expires_at, key)` of every running interaction.
    expiries: BTreeSet<(ServerTime, Key)>,
    /// Retention checks, by due time (a constant window after settlements
    /// that come in time order).
    cohorts: VecDeque<Cohort>,
    /// User entries held in `live` and `cohorts`.
    tracked: usize,
}

impl Kpi {
    /// A tracker counting into `metrics`; retention is checked
    /// `retention_window` after each settlement.
    pub fn new(metrics: Metrics, retention_window: Duration) -> Kpi {
        Kpi {
            metrics,
            retention_window,
            live: BTreeMap::new(),
            by_room: BTreeMap::new(),
            expiries: BTreeSet::new(),
            cohorts: VecDeque::new(),
            tracked: 0,
        }
    }

    /// After a restart: follow the battles and challenges still running in
    /// `rooms` (not counted as started again).
    pub fn seed<'a>(&mut self, now: ServerTime, rooms: impl Iterator<Item = &'a RoomState>) {
        for s in rooms {
            if let Some(b) = &s.battle {
                if matches!(b.phase, BattlePhase::Running | BattlePhase::Grace) {
                    let key = Key::Battle(b.id);
                    if !self.live.contains_key(&key) {
                        self.track(key, b.rooms, b.settles_at.max(now), None);
                    }
                }
            }
            if let Some(c) = &s.challenge {
                self.track(
                    Key::Challenge(s.room),
                    [s.room, s.room],
                    c.ends_at.max(now),
                    None,
                );
            }
        }
    }

    /// The rules decided a new action: `record` is what they stored. A
    /// refused `PkAccept` or `ChallengeStart` is a failed start.
    pub fn handle_decided(
        &mut self,
        now: ServerTime,
        action: &Action,
        record: &Record,
        present: &dyn Present,
    ) {
        if let Some(ack) = &record.ack {
            if let Outcome::Rejected { reason } = ack.outcome {
                self.handle_refused(action, reason);
            }
        }
        self.handle_record(now, record, present);
    }

    /// An action was refused with `reason` (only starts count).
    pub fn handle_refused(&mut self, action: &Action, reason: Reason) {
        // Not an attempt that failed: someone without the right to start
        // it (a viewer's accept), or an action that could never start one.
        if matches!(
            reason,
            Reason::NotAllowed | Reason::BadArgument | Reason::NoGrant | Reason::Stale
        ) {
            return;
        }
        match action {
            Action::PkAccept { .. } => self.metrics.failed(Kind::Pk, reason),
            Action::ChallengeStart { .. } => self.metrics.failed(Kind::Challenge, reason),
            _ => {}
        }
    }

    /// The rules stored `record` (an action's, a timer's, a presence
    /// change's): look at its events, in order.
    pub fn handle_record(&mut self, now: ServerTime, record: &Record, present: &dyn Present) {
        for (room, event) in &record.events {
            self.event(now, *room, &event.kind, present);
        }
    }

    fn event(&mut self, now: ServerTime, room: RoomId, kind: &EventKind, present: &dyn Present) {
        match kind {
            // Both rooms log a battle's events: act on the inviting room's.
            EventKind::PkStarted(b) if b.rooms[0] == room => {
                self.metrics.started(Kind::Pk);
                self.track(Key::Battle(b.id), b.rooms, b.settles_at, Some(present));
            }
            EventKind::PkSettled { result, .. } if result.rooms[0] == room => {
                let outcome = match result.forfeited_by {
                    Some(_) => Completion::Forfeited,
                    None => Completion::Settled,
                };
                self.end(Key::Battle(result.battle), outcome);
                self.retention_cohort(now, result.rooms, present);
            }
            EventKind::ChallengeStarted(c) => {
                self.metrics.started(Kind::Challenge);
                self.track(Key::Challenge(room), [room, room], c.ends_at, Some(present));
            }
            EventKind::ChallengeEnded { .. } => {
                self.end(Key::Challenge(room), Completion::Settled);
            }
            EventKind::Gift {
                from,
                count,
                value,
                pk,
                ..
            } => {
                let challenge = Key::Challenge(room);
                let window = match pk {
                    Some(_) => Window::Pk,
                    None if self.live.contains_key(&challenge) => Window::Challenge,
                    None => Window::None,
                };
                self.metrics.gift(window, *count, *value);
                if let Some((battle, _)) = pk {
                    self.gifted(Key::Battle(*battle), *from);
                }
                self.gifted(challenge, *from);
            }
            _ => {}
        }
    }

    /// A user came online (`true`) or went offline in `room` (on every relay).
    pub fn handle_presence(&mut self, _now: ServerTime, room: RoomId, user: UserId, online: bool) {
        if !online {
            return;
        }
        let Some(keys) = self.by_room.get(&room) else {
            return;
        };
        for key in keys.clone() {
            self.viewer(key, user);
        }
    }

    /// `room` left memory: whatever ran in it is aborted.
    pub fn handle_unloaded(&mut self, _now: ServerTime, room: RoomId) {
        let keys = self.by_room.get(&room).cloned().unwrap_or_default();
        for key in keys {
            tracing::warn!(?key, %room, "an interaction's room unloaded while it ran");
            self.end(key, Completion::Aborted);
        }
    }

    /// Cluster mode: `room` is served by another node now. What ran in it
    /// is forgotten here, uncounted: it goes on there (that node follows
    /// it from the room's state, [`Kpi::seed`], and counts its end). The
    /// audience seen here is lost with it, so a battle that changed nodes
    /// counts only the viewers and gifters its last node saw.
    pub fn handle_moved(&mut self, room: RoomId) {
        let keys = self.by_room.get(&room).cloned().unwrap_or_default();
        for key in keys {
            self.forget(key);
        }
    }

    /// When [`Kpi::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<ServerTime> {
        let cohort = self.cohorts.front().map(|c| c.due);
        let expiry = self.expiries.first().map(|(t, _)| *t);
        cohort.into_iter().chain(expiry).min()
    }

    /// Check the retention cohorts due at `now`, and abort interactions
    /// whose end never came.
    pub fn handle_timeout(&mut self, now: ServerTime, present: &dyn Present) {
        // Each pass removes one cohort or one expiry: bounded by their number.
        while self.cohorts.front().is_some_and(|c| c.due <= now) {
            let Some(cohort) = self.cohorts.pop_front() else {
                break;
            };
            let retained = (cohort.users.iter())
                .filter(|(room, user)| present.is_present(*room, *user))
                .count();
            self.tracked -= cohort.users.len();
            self.metrics
                .post_event_viewers
                .inc_by(cohort.users.len() as u64);
            self.metrics.post_event_retained.inc_by(retained as u64);
        }
        while let Some(&(at, key)) = self.expiries.first() {
            if at > now {
                break;
            }
            tracing::warn!(?key, "an interaction never ended; counted as aborted");
            self.end(key, Completion::Aborted);
        }
    }

    /// Interactions followed now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// User entries held now (at most [`MAX_TRACKED`]).
    pub fn tracked(&self) -> usize {
        self.tracked
    }

    /// Start following `key`, with the users present in its rooms now
    /// (`None` after a restart: nobody is known to be present yet).
    fn track(
        &mut self,
        key: Key,
        rooms: [RoomId; 2],
        due: ServerTime,
        present: Option<&dyn Present>,
    ) {
        if self.live.contains_key(&key) {
            // A battle or challenge id is never reused; a repeat is a bug
            // upstream: keep the one followed.
            return;
        }
        let expires_at = due + ABORT_SLACK;
        self.live.insert(
            key,
            Live {
                rooms,
                viewers: BTreeSet::new(),
                gifters: BTreeSet::new(),
                overflow: false,
                expires_at,
            },
        );
        self.expiries.insert((expires_at, key));
        for room in rooms {
            self.by_room.entry(room).or_default().insert(key);
        }
        if let Some(present) = present {
            let mut users = Vec::new();
            for room in distinct(rooms) {
                present.for_each_in(room, &mut |u| users.push(u));
            }
            for user in users {
                self.viewer(key, user);
            }
        }
    }

    /// `user` is in the audience of `key` (if it runs).
    fn viewer(&mut self, key: Key, user: UserId) {
        let full = self.tracked >= MAX_TRACKED;
        let Some(live) = self.live.get_mut(&key) else {
            return;
        };
        if live.overflow || live.viewers.contains(&user) {
            return;
        }
        if full {
            tracing::warn!(
                ?key,
                "KPI memory full: this interaction is left out of conversion"
            );
            live.overflow = true;
            return;
        }
        live.viewers.insert(user);
        self.tracked += 1;
    }

    /// `user` gifted in `key` (if it runs).
    fn gifted(&mut self, key: Key, user: UserId) {
        self.viewer(key, user);
        let full = self.tracked >= MAX_TRACKED;
        let Some(live) = self.live.get_mut(&key) else {
            return;
        };
        if live.overflow || live.gifters.contains(&user) {
            return;
        }
        if full {
            live.overflow = true;
            return;
        }
        live.gifters.insert(user);
        self.tracked += 1;
    }

    /// `key` ended with `outcome` (counted even if it was not followed: a
    /// battle started before a restart). Conversion counts unless aborted.
    fn end(&mut self, key: Key, outcome: Completion) {
        self.metrics.completed(key.kind(), outcome);
        let Some(live) = self.forget(key) else {
            return;
        };
        if outcome != Completion::Aborted && !live.overflow {
            self.metrics.conversion(
                key.kind(),
                live.viewers.len() as u64,
                live.gifters.len() as u64,
            );
        }
    }

    /// Stop following `key`; what was followed, if it was.
    fn forget(&mut self, key: Key) -> Option<Live> {
        let live = self.live.remove(&key)?;
        self.expiries.remove(&(live.expires_at, key));
        for room in distinct(live.rooms) {
            if let Some(keys) = self.by_room.get_mut(&room) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.by_room.remove(&room);
                }
            }
        }
        self.tracked -= live.viewers.len() + live.gifters.len();
        Some(live)
    }

    /// Remember who is present in `rooms` now, to check again later.
    fn retention_cohort(&mut self, now: ServerTime, rooms: [RoomId; 2], present: &dyn Present) {
        let mut users = Vec::new();
        for room in distinct(rooms) {
            present.for_each_in(room, &mut |u| users.push((room, u)));
        }
        if users.is_empty() {
            return;
        }
        if self.tracked + users.len() > MAX_TRACKED {
            tracing::warn!(
                viewers = users.len(),
                "KPI memory full: a settled battle's retention is not checked"
            );
            return;
        }
        self.tracked += users.len();
        self.cohorts.push_back(Cohort {
            due: now + self.retention_window,
            users,
        });
    }
}

/// The rooms of a pair, each once (a challenge's pair is its room twice).
fn distinct(rooms: [RoomId; 2]) -> impl Iterator<Item = RoomId> {
    let second = (rooms[1] != rooms[0]).then_some(rooms[1]);
    std::iter::once(rooms[0]).chain(second)
}

#[cfg(test)]
mod tests;
