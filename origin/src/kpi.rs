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
        let Some(live) = self.live.remove(&key) else {
            return;
        };
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
        if outcome != Completion::Aborted && !live.overflow {
            self.metrics.conversion(
                key.kind(),
                live.viewers.len() as u64,
                live.gifters.len() as u64,
            );
        }
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
mod tests {
    use super::*;
    use crate::metrics::{CompletionLabels, KindLabels, StartLabels, WindowLabels};
    use crate::rules::{Authority, Config, Decision};
    use protocol::message::{ActionMsg, Actor};
    use protocol::room::{Goal, Grant};
    use protocol::{ActionId, GiftId, SessionId};

    const A: RoomId = RoomId(1);
    const B: RoomId = RoomId(2);

    /// Presence in a test: a set of (room, user).
    #[derive(Default)]
    struct Online(BTreeSet<(RoomId, UserId)>);

    impl Present for Online {
        fn for_each_in(&self, room: RoomId, f: &mut dyn FnMut(UserId)) {
            for (_, u) in self.0.range((room, UserId(0))..=(room, UserId(u64::MAX))) {
                f(*u);
            }
        }
        fn is_present(&self, room: RoomId, user: UserId) -> bool {
            self.0.contains(&(room, user))
        }
    }

    /// The rules and the tracker on a virtual clock, glued the way the
    /// authority task glues them.
    struct Story {
        auth: Authority,
        kpi: Kpi,
        m: Metrics,
        online: Online,
        now: ServerTime,
        n: u64,
    }

    fn host(room: RoomId) -> UserId {
        UserId(room.0 * 1000)
    }

    impl Story {
        fn new() -> Story {
            let rules = Config {
                pk_min_duration: Duration::from_secs(10),
                pk_grace: Duration::from_secs(2),
                pk_punishment: Duration::from_secs(5),
                challenge_min_window: Duration::from_secs(5),
                ..Config::default()
            };
            let m = Metrics::new();
            let mut s = Story {
                auth: Authority::new(rules),
                kpi: Kpi::new(m.clone(), Duration::from_secs(300)),
                m,
                online: Online::default(),
                now: ServerTime(1_000_000_000),
                n: 0,
            };
            for room in [A, B] {
                let rec = s.auth.handle_open(s.now, room);
                s.kpi.handle_record(s.now, &rec, &s.online);
            }
            s
        }

        fn act(&mut self, user: UserId, grant: Grant, room: RoomId, action: Action) -> Outcome {
            self.n += 1;
            let msg = ActionMsg {
                id: ActionId {
                    session: SessionId(user.0),
                    n: self.n,
                },
                room,
                sent_at: self.now,
                action,
            };
            match self
                .auth
                .handle_action(self.now, Actor { user, grant }, &msg)
            {
                Decision::Decided(rec) => {
                    self.kpi
                        .handle_decided(self.now, &msg.action, &rec, &self.online);
                    rec.ack.expect("an ack").outcome
                }
                other => panic!("not decided: {other:?}"),
            }
        }

        fn host_acts(&mut self, room: RoomId, action: Action) -> Outcome {
            self.act(host(room), Grant::Host, room, action)
        }

        fn gift(&mut self, user: u64, room: RoomId, count: u32) -> Outcome {
            let gift = Action::Gift {
                gift: GiftId(3), // worth 100
                count,
            };
            self.act(UserId(user), Grant::Viewer, room, gift)
        }

        fn presence(&mut self, room: RoomId, user: u64, online: bool) {
            let user = UserId(user);
            if online {
                self.online.0.insert((room, user));
            } else {
                self.online.0.remove(&(room, user));
            }
            self.kpi.handle_presence(self.now, room, user, online);
            let rec = self.auth.handle_presence(self.now, room, user, online);
            self.kpi.handle_record(self.now, &rec, &self.online);
        }

        /// Let time pass, firing both timers at their exact deadlines.
        fn advance(&mut self, d: Duration) {
            let until = self.now + d;
            for _ in 0..10_000 {
                let next = [self.auth.poll_timeout(), self.kpi.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= until => {
                        self.now = self.now.max(t);
                        let rec = self.auth.handle_timeout(self.now);
                        self.kpi.handle_record(self.now, &rec, &self.online);
                        self.kpi.handle_timeout(self.now, &self.online);
                    }
                    _ => break,
                }
            }
            self.now = until;
        }

        fn battle(&mut self, secs: u32) -> BattleId {
            let invite = Action::PkInvite {
                to: B,
                duration_secs: secs,
            };
            assert!(self.host_acts(A, invite).is_applied());
            let battle = (self.auth.room(B))
                .and_then(|s| s.pk_invite.as_ref())
                .expect("pending")
                .battle;
            assert!(self.host_acts(B, Action::PkAccept { battle }).is_applied());
            battle
        }

        fn starts(&self, kind: Kind, reason: Option<&'static str>) -> u64 {
            let labels = StartLabels {
                kind,
                outcome: if reason.is_some() {
                    "failed"
                } else {
                    "started"
                },
                reason: reason.unwrap_or("none"),
            };
            self.m.starts.get_or_create(&labels).get()
        }

        fn completions(&self, kind: Kind, outcome: Completion) -> u64 {
            let labels = CompletionLabels { kind, outcome };
            self.m.completions.get_or_create(&labels).get()
        }

        fn gifts(&self, window: Window) -> (u64, u64) {
            let l = WindowLabels { window };
            (
                self.m.gifts.get_or_create(&l).get(),
                self.m.gift_value.get_or_create(&l).get(),
            )
        }

        fn conversion(&self, kind: Kind) -> (u64, u64) {
            let l = KindLabels { kind };
            (
                self.m.viewers.get_or_create(&l).get(),
                self.m.gifters.get_or_create(&l).get(),
            )
        }

        fn retention(&self) -> (u64, u64) {
            (
                self.m.post_event_viewers.get(),
                self.m.post_event_retained.get(),
            )
        }
    }

    #[test]
    fn a_battle_counts_one_start_and_one_settlement_though_both_rooms_log_it() {
        let mut s = Story::new();
        s.battle(10);
        assert_eq!(s.starts(Kind::Pk, None), 1);
        assert_eq!(s.kpi.live(), 1);
        s.advance(Duration::from_secs(12));
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
        assert_eq!(s.completions(Kind::Pk, Completion::Forfeited), 0);
        assert_eq!(s.kpi.live(), 0);
        // The punishment phase and the close count nothing more.
        s.advance(Duration::from_secs(10));
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
        assert_eq!(s.starts(Kind::Pk, None), 1);
    }

    #[test]
    fn a_forfeit_is_counted_as_such() {
        let mut s = Story::new();
        let battle = s.battle(60);
        assert!(s.host_acts(B, Action::PkForfeit { battle }).is_applied());
        assert_eq!(s.completions(Kind::Pk, Completion::Forfeited), 1);
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 0);
    }

    #[test]
    fn a_refused_accept_is_a_failed_start_with_its_reason() {
        let mut s = Story::new();
        let invite = Action::PkInvite {
            to: B,
            duration_secs: 30,
        };
        assert!(s.host_acts(A, invite).is_applied());
        let battle = s
            .auth
            .room(B)
            .and_then(|r| r.pk_invite.clone())
            .expect("invite")
            .battle;
        // Nobody answers: the invitation lapses, then the accept comes.
        s.advance(Duration::from_secs(20));
        let late = s.host_acts(B, Action::PkAccept { battle });
        assert!(!late.is_applied());
        assert_eq!(s.starts(Kind::Pk, Some("expired")), 1);
        // A viewer may not accept: not a start that failed (an operator
        // would be paged for viewers pressing buttons they do not have).
        let viewer = s.act(UserId(5), Grant::Viewer, B, Action::PkAccept { battle });
        assert!(!viewer.is_applied());
        assert_eq!(s.starts(Kind::Pk, Some("not_allowed")), 0);
        assert_eq!(s.starts(Kind::Pk, None), 0);
        // Other refusals are not starts.
        assert!(!s.gift(5, A, 0).is_applied());
        assert_eq!(s.starts(Kind::Pk, Some("bad_argument")), 0);
    }

    #[test]
    fn challenges_start_fail_and_settle() {
        let mut s = Story::new();
        let start = |target| Action::ChallengeStart {
            goal: Goal::GiftValue(target),
            window_secs: 10,
        };
        assert!(s.host_acts(A, start(1_000)).is_applied());
        assert_eq!(s.starts(Kind::Challenge, None), 1);
        assert!(!s.host_acts(A, start(1_000)).is_applied());
        assert_eq!(s.starts(Kind::Challenge, Some("challenge_running")), 1);
        // Reached at once by a big gift: settled.
        assert!(s.gift(5, A, 10).is_applied());
        assert_eq!(s.completions(Kind::Challenge, Completion::Settled), 1);
        // A second one runs out: settled as well (reached or not).
        assert!(s.host_acts(A, start(1_000_000)).is_applied());
        s.advance(Duration::from_secs(11));
        assert_eq!(s.completions(Kind::Challenge, Completion::Settled), 2);
        assert_eq!(s.kpi.live(), 0);
    }

    #[test]
    fn gifts_fall_in_the_window_they_were_sent_in() {
        let mut s = Story::new();
        assert!(s.gift(5, A, 1).is_applied());
        assert_eq!(s.gifts(Window::None), (1, 100));
        let challenge = Action::ChallengeStart {
            goal: Goal::GiftCount(1_000),
            window_secs: 30,
        };
        assert!(s.host_acts(A, challenge).is_applied());
        assert!(s.gift(5, A, 2).is_applied());
        assert_eq!(s.gifts(Window::Challenge), (2, 200));
        // Room A runs a challenge and a battle: the battle wins.
        s.battle(10);
        assert!(s.gift(5, A, 3).is_applied());
        assert!(s.gift(6, B, 4).is_applied());
        assert_eq!(s.gifts(Window::Pk), (7, 700));
        assert_eq!(s.gifts(Window::Challenge), (2, 200));
        // After the bell (and the grace) a gift no longer counts in the battle.
        s.advance(Duration::from_secs(13));
        assert!(s.gift(6, B, 1).is_applied());
        assert_eq!(s.gifts(Window::None), (2, 200));
        assert_eq!(s.gifts(Window::Pk), (7, 700));
    }

    #[test]
    fn conversion_counts_everyone_who_watched_and_those_who_gifted() {
        let mut s = Story::new();
        s.presence(A, 11, true);
        s.presence(B, 21, true);
        s.presence(A, 12, true);
        s.battle(10);
        // 13 comes during the battle and leaves again: still a viewer.
        s.presence(B, 13, true);
        s.presence(B, 13, false);
        // 11 gifts twice (one gifter), 21 once; 12 only watches.
        assert!(s.gift(11, A, 1).is_applied());
        assert!(s.gift(11, A, 1).is_applied());
        assert!(s.gift(21, B, 1).is_applied());
        // 99 gifts without the presence map knowing: a viewer too.
        assert!(s.gift(99, B, 1).is_applied());
        assert_eq!(s.conversion(Kind::Pk), (0, 0), "added when it ends");
        s.advance(Duration::from_secs(12));
        assert_eq!(s.conversion(Kind::Pk), (5, 3));
        assert_eq!(
            s.kpi.tracked(),
            3,
            "only the retention cohort (11, 12, 21) is left"
        );
        // Someone who arrives after the battle (once it closed) watches
        // only the next one.
        s.advance(Duration::from_secs(5));
        s.presence(A, 14, true);
        s.battle(10);
        s.advance(Duration::from_secs(12));
        assert!(s.completions(Kind::Pk, Completion::Settled) == 2);
        let (viewers, gifters) = s.conversion(Kind::Pk);
        assert_eq!(
            (viewers, gifters),
            (5 + 4, 3),
            "11, 12, 21, 14 watched the second"
        );
    }

    #[test]
    fn challenge_conversion_counts_its_room_only() {
        let mut s = Story::new();
        s.presence(A, 11, true);
        s.presence(B, 21, true);
        let challenge = Action::ChallengeStart {
            goal: Goal::GiftCount(1_000),
            window_secs: 10,
        };
        assert!(s.host_acts(A, challenge).is_applied());
        assert!(s.gift(11, A, 1).is_applied());
        assert!(s.gift(21, B, 1).is_applied());
        s.advance(Duration::from_secs(11));
        assert_eq!(s.conversion(Kind::Challenge), (1, 1));
        assert_eq!(s.conversion(Kind::Pk), (0, 0));
    }

    #[test]
    fn retention_counts_who_is_still_there_after_the_window() {
        let mut s = Story::new();
        for u in [11, 12, 13] {
            s.presence(A, u, true);
        }
        s.presence(B, 21, true);
        s.battle(10);
        s.advance(Duration::from_secs(12));
        let settled = s.now;
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
        assert_eq!(s.retention(), (0, 0), "counted when checked");
        assert_eq!(
            s.kpi.poll_timeout(),
            Some(settled + Duration::from_secs(300))
        );
        // 12 leaves for good; 13 leaves and comes back; 21 moves to room A
        // (not retained in B); 15 arrives (not a post-event viewer).
        s.advance(Duration::from_secs(100));
        s.presence(A, 12, false);
        s.presence(A, 13, false);
        s.presence(B, 21, false);
        s.presence(A, 21, true);
        s.presence(A, 15, true);
        s.advance(Duration::from_secs(100));
        s.presence(A, 13, true);
        s.advance(Duration::from_secs(99));
        assert_eq!(s.retention(), (0, 0), "not yet");
        s.advance(Duration::from_secs(1));
        assert_eq!(
            s.retention(),
            (4, 2),
            "of 11, 12, 13 in A and 21 in B: 11 and 13"
        );
        assert_eq!(s.kpi.poll_timeout(), None);
        assert_eq!(s.kpi.tracked(), 0);
    }

    #[test]
    fn an_interaction_that_vanishes_is_aborted_and_forgotten() {
        let mut s = Story::new();
        s.presence(A, 11, true);
        s.battle(10);
        // The rules never unload a room mid-battle; the tracker still copes.
        s.kpi.handle_unloaded(s.now, B);
        assert_eq!(s.completions(Kind::Pk, Completion::Aborted), 1);
        assert_eq!((s.kpi.live(), s.kpi.tracked()), (0, 0));
        // Its later settlement still counts, but adds no audience twice.
        s.advance(Duration::from_secs(12));
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
        assert_eq!(s.conversion(Kind::Pk), (0, 0), "aborted: no conversion");

        // An end that never comes: aborted ABORT_SLACK after it was due.
        let mut k = Kpi::new(Metrics::new(), Duration::from_secs(300));
        let online = Online::default();
        let mut state = RoomState::new(A);
        state.challenge = Some(protocol::room::Challenge {
            id: protocol::ChallengeId(1),
            goal: Goal::Likes(10),
            by: host(A),
            started_at: ServerTime(0),
            ends_at: ServerTime(10_000_000),
            progress: 0,
        });
        k.seed(ServerTime(0), [&state].into_iter());
        assert_eq!(k.live(), 1);
        let due = ServerTime(10_000_000) + ABORT_SLACK;
        assert_eq!(k.poll_timeout(), Some(due));
        k.handle_timeout(due.saturating_sub(Duration::from_micros(1)), &online);
        assert_eq!(k.live(), 1);
        k.handle_timeout(due, &online);
        assert_eq!(k.live(), 0);
        let aborted = CompletionLabels {
            kind: Kind::Challenge,
            outcome: Completion::Aborted,
        };
        assert_eq!(k.metrics.completions.get_or_create(&aborted).get(), 1);
        assert_eq!(k.poll_timeout(), None);
    }

    #[test]
    fn memory_is_capped_and_an_overflowing_battle_is_left_out() {
        let mut s = Story::new();
        s.presence(A, 11, true);
        s.battle(10);
        // Pretend the rest of the budget is taken.
        s.kpi.tracked = MAX_TRACKED;
        s.presence(B, 21, true);
        assert!(s.gift(11, A, 1).is_applied());
        s.kpi.tracked = 1;
        s.advance(Duration::from_secs(12));
        assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
        assert_eq!(s.conversion(Kind::Pk), (0, 0), "left out, not half-counted");
        // The cohort (11 in A, 21 in B) was within budget again.
        assert_eq!(s.kpi.tracked(), 2);
    }

    #[test]
    fn every_expected_series_exists_at_zero() {
        let m = Metrics::new();
        let mut registry = Metrics::registry("origin-test");
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"ringside_interaction_starts_total{node="origin-test",kind="pk",outcome="started",reason="none"} 0"#,
            r#"ringside_interaction_starts_total{node="origin-test",kind="challenge",outcome="failed",reason="challenge_running"} 0"#,
            r#"ringside_interaction_completions_total{node="origin-test",kind="pk",outcome="aborted"} 0"#,
            r#"ringside_gifts_total{node="origin-test",window="none"} 0"#,
            r#"ringside_gift_value_total{node="origin-test",window="challenge"} 0"#,
            r#"ringside_interaction_viewers_total{node="origin-test",kind="pk"} 0"#,
            r#"ringside_interaction_gifters_total{node="origin-test",kind="challenge"} 0"#,
            r#"ringside_post_event_viewers_total{node="origin-test"} 0"#,
            r#"ringside_post_event_retained_total{node="origin-test"} 0"#,
            r#"ringside_wal_sync_seconds_count{node="origin-test"} 0"#,
            r#"ringside_wal_group_size_count{node="origin-test"} 0"#,
            r#"ringside_wal_commit_seconds_count{node="origin-test"} 0"#,
            r#"ringside_checkpoint_seconds_count{node="origin-test"} 0"#,
            r#"ringside_rooms_live{node="origin-test"} 0"#,
            r#"ringside_origin_applied_total{node="origin-test"} 0"#,
            r#"ringside_origin_relays{node="origin-test"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("user") && !text.contains("room="));
    }
}
