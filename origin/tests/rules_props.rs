//! Random action sequences against the room rules. After every step:
//! mirrors that follow the log equal the authority (checked by the harness);
//! each battle's scores equal the sum of the gifts it counted; a seat holds
//! at most one user and a user sits on at most one seat; a repeated action
//! changes nothing and gets its original outcome (or `Stale`, once its
//! session was forgotten: never a second decision); idle rooms unload and
//! come back unchanged; and at the end, replaying the log from the start
//! reproduces every room (live or archived).

mod common;

use common::*;
use proptest::prelude::*;
use protocol::message::{ActionMsg, Actor};
use protocol::room::{Goal, Grant, SeatMode};
use protocol::{Action, ActionId, BattleId, EventKind, GiftId, Outcome, RoomId, SessionId, UserId};
use std::collections::BTreeMap;
use std::time::Duration;

const ROOMS: [RoomId; 3] = [A, B, C];

#[derive(Clone, Debug)]
enum Step {
    Act {
        user: u64,
        host: bool,
        room: usize,
        action: Action,
        late_ms: u64,
    },
    Repeat(prop::sample::Index),
    Advance(u64),
    Presence {
        user: u64,
        room: usize,
        online: bool,
    },
    /// The host of `from` invites `to`, whose host accepts at once.
    Battle {
        from: usize,
        to: usize,
    },
    /// Unload whatever is idle.
    Sweep,
    /// A relay follows a room, or stops.
    Follow {
        room: usize,
        followed: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let user = (1u64..=6).prop_map(UserId);
    let seat = 0u8..5; // seat 4 does not exist (4 seats)
                       // Mostly "the battle or invitation of the acting room" (resolved when the
                       // step runs, see `resolve`), sometimes an arbitrary id.
    let battle = prop_oneof![4 => Just(BattleId(0)), 1 => (1u64..=6).prop_map(BattleId)];
    prop_oneof![
        6 => ((1u32..=5), (1u32..=3)).prop_map(|(g, count)| Action::Gift { gift: GiftId(g), count }),
        1 => Just(Action::Chat { text: "gg".into() }),
        1 => (1u32..=20).prop_map(|count| Action::Like { count }),
        2 => (0usize..3, prop::sample::select(vec![10u32, 20, 30])).prop_map(|(r, d)| Action::PkInvite { to: ROOMS[r], duration_secs: d }),
        2 => battle.clone().prop_map(|battle| Action::PkAccept { battle }),
        1 => battle.clone().prop_map(|battle| Action::PkReject { battle }),
        1 => battle.clone().prop_map(|battle| Action::PkCancel { battle }),
        1 => battle.prop_map(|battle| Action::PkForfeit { battle }),
        1 => prop::bool::ANY.prop_map(|f| Action::SeatMode { mode: if f { SeatMode::FreeTake } else { SeatMode::ApplyToTake } }),
        2 => (user.clone(), prop::option::of(seat.clone())).prop_map(|(user, seat)| Action::SeatInvite { user, seat }),
        2 => Just(Action::SeatAccept),
        1 => Just(Action::SeatDecline),
        2 => Just(Action::SeatApply),
        1 => Just(Action::SeatWithdraw),
        2 => user.clone().prop_map(|user| Action::SeatApprove { user }),
        1 => user.clone().prop_map(|user| Action::SeatDeny { user }),
        1 => user.prop_map(|user| Action::SeatCancelInvite { user }),
        3 => seat.clone().prop_map(|seat| Action::SeatTake { seat }),
        1 => seat.clone().prop_map(|seat| Action::SeatKick { seat }),
        1 => (seat.clone(), prop::bool::ANY).prop_map(|(seat, muted)| Action::SeatMute { seat, muted }),
        1 => (seat, prop::bool::ANY).prop_map(|(seat, locked)| Action::SeatLock { seat, locked }),
        1 => Just(Action::SeatLeave),
        1 => (1u64..=500, prop::sample::select(vec![5u32, 10])).prop_map(|(n, w)| Action::ChallengeStart { goal: Goal::GiftValue(n), window_secs: w }),
    ]
}

/// Whether an action is the host's business: such actions are mostly sent by
/// the host, the rest mostly by viewers (both are sometimes wrong on purpose).
fn hosts_business(a: &Action) -> bool {
    !matches!(
        a,
        Action::Gift { .. }
            | Action::Chat { .. }
            | Action::Like { .. }
            | Action::SeatAccept
            | Action::SeatDecline
            | Action::SeatApply
            | Action::SeatWithdraw
            | Action::SeatTake { .. }
            | Action::SeatLeave
    )
}

/// Replace the placeholder battle id 0 with the acting room's invitation or battle.
fn resolve(w: &World, room: RoomId, action: Action) -> Action {
    let current = || {
        let s = w.auth.room(room);
        (s.and_then(|s| s.pk_invite.as_ref().map(|i| i.battle)))
            .or_else(|| s.and_then(|s| s.battle.as_ref().map(|b| b.id)))
            .unwrap_or(BattleId(0))
    };
    match action {
        Action::PkAccept {
            battle: BattleId(0),
        } => Action::PkAccept { battle: current() },
        Action::PkReject {
            battle: BattleId(0),
        } => Action::PkReject { battle: current() },
        Action::PkCancel {
            battle: BattleId(0),
        } => Action::PkCancel { battle: current() },
        Action::PkForfeit {
            battle: BattleId(0),
        } => Action::PkForfeit { battle: current() },
        other => other,
    }
}

fn step() -> impl Strategy<Value = Step> {
    let act = (
        1u64..=6,
        0.0f64..1.0,
        0usize..3,
        action(),
        prop_oneof![3 => Just(0u64), 1 => 0u64..4000],
    );
    prop_oneof![
        10 => act.prop_map(|(user, dice, room, action, late_ms)| {
            let host = if hosts_business(&action) { dice < 0.85 } else { dice < 0.1 };
            Step::Act { user, host, room, action, late_ms }
        }),
        2 => any::<prop::sample::Index>().prop_map(Step::Repeat),
        2 => prop_oneof![3 => 0u64..1000, 1 => 1000u64..12_000].prop_map(Step::Advance),
        1 => (1u64..=6, 0usize..3, prop::bool::ANY).prop_map(|(user, room, online)| Step::Presence { user, room, online }),
        1 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Battle { from, to }),
        1 => Just(Step::Sweep),
        1 => (0usize..3, prop::bool::ANY).prop_map(|(room, followed)| Step::Follow { room, followed }),
    ]
}

struct Sent {
    actor: Actor,
    msg: ActionMsg,
    outcome: Outcome,
}

fn check_invariants(w: &World) {
    // Battle scores are the sums of the gifts each side counted.
    for room in ROOMS {
        let Some(s) = w.auth.room(room) else { continue };
        if let Some(b) = &s.battle {
            let mut sums = [0u64; 2];
            for r in b.rooms {
                for e in w.events(r) {
                    if let EventKind::Gift {
                        value,
                        pk: Some((id, _)),
                        ..
                    } = e.kind
                    {
                        if id == b.id {
                            let side = b.side_of(r).expect("a battle room");
                            sums[side] += value;
                        }
                    }
                }
            }
            assert_eq!(b.scores, sums, "scores of {} in {room}", b.id);
            let peer = b.peer_of(room).expect("peer");
            assert_eq!(w.auth.room(peer).and_then(|p| p.battle.as_ref()), Some(b));
        }
        // Seats: one user per seat (by type), one seat per user, locked ⇒ empty.
        let mut seen = BTreeMap::new();
        for (n, seat) in s.seats.seats.iter().enumerate() {
            if let Some(u) = seat.user {
                assert!(seen.insert(u, n).is_none(), "{u} sits twice in {room}");
                assert!(!seat.locked, "locked seat {n} occupied");
            }
        }
    }
}

fn run(steps: Vec<Step>) {
    // Rooms go idle quickly, and sessions are forgotten often: three per
    // user (viewers rotate over them), two per user live, eight in all.
    let mut w = World::with(origin::rules::Config {
        room_idle: Duration::from_secs(3),
        max_user_sessions: 2,
        max_sessions: 8,
        ..test_config()
    });
    let mut sent: Vec<Sent> = Vec::new();
    let mut counters: BTreeMap<u64, u64> = BTreeMap::new();
    let mut queue: std::collections::VecDeque<Step> = steps.into();
    let (mut unloaded, mut stale_repeats) = (0usize, 0usize);
    while let Some(step) = queue.pop_front() {
        match step {
            Step::Battle { from, to } => {
                let invite = Action::PkInvite {
                    to: ROOMS[to],
                    duration_secs: 20,
                };
                let accept = Action::PkAccept {
                    battle: BattleId(0),
                };
                queue.push_front(Step::Act {
                    user: 0,
                    host: true,
                    room: to,
                    action: accept,
                    late_ms: 0,
                });
                queue.push_front(Step::Act {
                    user: 0,
                    host: true,
                    room: from,
                    action: invite,
                    late_ms: 0,
                });
                continue;
            }
            Step::Act {
                user,
                host,
                room,
                action,
                late_ms,
            } => {
                let room = ROOMS[room];
                let (user, grant) = if host {
                    (host_of(room), Grant::Host)
                } else {
                    (UserId(user), Grant::Viewer)
                };
                let n = counters.entry(user.0).or_insert(0);
                *n += 1;
                let session = if host { user.0 } else { user.0 * 10 + *n % 3 };
                let msg = ActionMsg {
                    id: ActionId {
                        session: SessionId(session),
                        n: *n,
                    },
                    room,
                    sent_at: w.now.saturating_sub(Duration::from_millis(late_ms)),
                    action: resolve(&w, room, action),
                };
                let actor = Actor { user, grant };
                let outcome = w.send(actor, &msg);
                sent.push(Sent {
                    actor,
                    msg,
                    outcome,
                });
            }
            Step::Repeat(i) => {
                if sent.is_empty() {
                    continue;
                }
                let s = &sent[i.index(sent.len())];
                // Fire due timers first, so that only the repeat is measured.
                w.advance(Duration::ZERO);
                let state = |w: &World, r: &RoomId| w.auth.room(*r).or(w.archives.get(r)).cloned();
                let before: Vec<_> = ROOMS.iter().map(|r| state(&w, r)).collect();
                let log = w.log.len();
                let again = w.send(s.actor, &s.msg);
                let stale = Outcome::Rejected {
                    reason: protocol::Reason::Stale,
                };
                assert!(
                    again == s.outcome || {
                        stale_repeats += 1;
                        again == stale
                    },
                    "a repeat of {} changed its outcome: {again:?} after {:?}",
                    s.msg.id,
                    s.outcome
                );
                let after: Vec<_> = ROOMS.iter().map(|r| state(&w, r)).collect();
                assert_eq!(before, after, "a repeat of {} changed state", s.msg.id);
                assert_eq!(log, w.log.len());
            }
            Step::Advance(ms) => w.advance(Duration::from_millis(ms)),
            Step::Presence { user, room, online } => w.presence(ROOMS[room], user, online),
            Step::Sweep => {
                for room in w.sweep() {
                    unloaded += 1;
                    assert!(w.auth.room(room).is_none());
                    assert_eq!(w.mirrors.get(&room), w.archives.get(&room));
                }
            }
            Step::Follow { room, followed } => w.follow(ROOMS[room], followed),
        }
        check_invariants(&w);
    }
    if std::env::var("PROPSTATS").is_ok() {
        let applied = sent.iter().filter(|s| s.outcome.is_applied()).count();
        let credited = (w.log.iter().flat_map(|r| r.events.iter()))
            .filter(|(_, e)| matches!(e.kind, EventKind::Gift { pk: Some(_), .. }))
            .count();
        let seated = (w.log.iter().flat_map(|r| r.events.iter()))
            .filter(|(_, e)| matches!(e.kind, EventKind::SeatTaken { .. }))
            .count();
        let settled = (w.log.iter().flat_map(|r| r.events.iter()))
            .filter(|(_, e)| matches!(e.kind, EventKind::PkSettled { .. }))
            .count();
        eprintln!(
            "sent {} applied {applied} credited {credited} seated {seated} settled {settled} \
             unloaded {unloaded} stale repeats {stale_repeats}",
            sent.len()
        );
    }
    // Every applied gift appears exactly once in the log.
    for s in &sent {
        if matches!(s.msg.action, Action::Gift { .. }) && s.outcome.is_applied() {
            let copies = (w.events(s.msg.room).iter())
                .filter(|e| e.cause == Some(s.msg.id) && matches!(e.kind, EventKind::Gift { .. }))
                .count();
            assert_eq!(copies, 1, "gift {} counted {copies} times", s.msg.id);
        }
    }
    // Replaying the log from the start reproduces every room.
    let rebuilt = w.replayed();
    for room in ROOMS {
        let now = w.auth.room(room).or(w.archives.get(&room));
        assert_eq!(rebuilt.room(room), now);
    }
    assert_eq!(rebuilt.poll_timeout(), w.auth.poll_timeout());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_action_sequences_keep_the_invariants(steps in prop::collection::vec(step(), 1..120)) {
        run(steps);
    }
}
