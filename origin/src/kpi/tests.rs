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
fn a_battle_moved_to_another_node_is_forgotten_uncounted_and_followed_there() {
    let mut s = Story::new();
    s.presence(A, 11, true);
    s.battle(10);
    assert_eq!(s.kpi.live(), 1);
    // Cluster mode: its rooms go to another node, which goes on with it.
    s.kpi.handle_moved(A);
    assert_eq!((s.kpi.live(), s.kpi.tracked()), (0, 0));
    assert_eq!(s.kpi.poll_timeout(), None, "nothing left to abort here");
    for outcome in [Completion::Aborted, Completion::Settled] {
        assert_eq!(s.completions(Kind::Pk, outcome), 0, "{outcome:?}");
    }
    // The other node: seeded from the rooms' state, it counts the end
    // (not a second start).
    let m = Metrics::new();
    let mut there = Kpi::new(m.clone(), Duration::from_secs(300));
    let states: Vec<RoomState> = [A, B]
        .iter()
        .filter_map(|r| s.auth.room(*r).cloned())
        .collect();
    there.seed(s.now, states.iter());
    assert_eq!(there.live(), 1, "one battle, though both rooms hold it");
    s.kpi = there;
    s.m = m;
    s.advance(Duration::from_secs(12));
    assert_eq!(s.completions(Kind::Pk, Completion::Settled), 1);
    assert_eq!(s.kpi.live(), 0);
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
