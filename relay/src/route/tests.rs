//! The router on a virtual clock: rooms placed, moved, re-homed when a
//! link dies; redirected actions resent, held, bounded.

use std::sync::OnceLock;

use protocol::room::Grant;
use protocol::{Action, GiftId, Seq, ServerTime, SessionId};

use super::*;

fn at(ms: u64) -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now) + Duration::from_millis(ms)
}

fn actor(user: u64) -> Actor {
    Actor {
        user: UserId(user),
        grant: Grant::Viewer,
    }
}

fn gift(room: RoomId, n: u64) -> ActionMsg {
    ActionMsg {
        id: ActionId {
            session: SessionId(1),
            n,
        },
        room,
        sent_at: ServerTime(0),
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    }
}

fn subscribe(room: RoomId) -> UpMsg {
    UpMsg::Subscribe {
        room,
        since: Some(Seq(7)),
        history: None,
    }
}

fn outs(r: &mut Router) -> Vec<RouteOut> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

/// The actions sent, as (node, action number).
fn actions_sent(outs: &[RouteOut]) -> Vec<(String, u64)> {
    (outs.iter())
        .filter_map(|o| match o {
            RouteOut::Send(node, UpMsg::Action { msg, .. }) => Some((node.clone(), msg.id.n)),
            _ => None,
        })
        .collect()
}

/// A router with links to "a" and "b" up, the hub told once.
fn two_nodes() -> Router {
    let mut r = Router::new(RouteSettings::default(), Metrics::default());
    r.handle_link_up(at(0), "a");
    r.handle_link_up(at(0), "b");
    assert_eq!(outs(&mut r), vec![RouteOut::HubUp]);
    r
}

/// A room the placement gives to `node` among "a" and "b".
fn room_on(node: &str) -> RoomId {
    (1..1000)
        .map(RoomId)
        .find(|room| placement::owner(*room, ["a", "b"]) == Some(node))
        .expect("some room lands on each node")
}

/// Run every timer due up to `ms`; the outputs.
fn run_until(r: &mut Router, ms: u64) -> Vec<RouteOut> {
    let mut got = Vec::new();
    for _ in 0..10_000 {
        match r.poll_timeout() {
            Some(t) if t <= at(ms) => {
                r.handle_timeout(t);
                got.extend(outs(r));
            }
            _ => break,
        }
    }
    got
}

#[test]
fn a_room_goes_to_the_placements_node_and_its_messages_follow() {
    let mut r = two_nodes();
    let room = room_on("b");
    r.handle_up(at(1), subscribe(room));
    let presence = UpMsg::Presence {
        room,
        user: UserId(3),
        online: true,
    };
    r.handle_up(at(1), presence.clone());
    r.handle_up(
        at(1),
        UpMsg::Action {
            actor: actor(3),
            msg: gift(room, 1),
        },
    );
    r.handle_up(at(1), UpMsg::Unsubscribe { room });
    let got = outs(&mut r);
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|o| matches!(o, RouteOut::Send(n, _) if n == "b")),
        "{got:?}"
    );
    assert_eq!(r.node_of(room), None, "forgotten once unsubscribed");
}

#[test]
fn moved_to_a_live_owner_rehomes_at_once() {
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(1), subscribe(room));
    outs(&mut r);
    r.handle_moved(at(2), "a", room, Some("b".into()));
    assert_eq!(
        outs(&mut r),
        vec![RouteOut::Rehome {
            room,
            requeue: false
        }]
    );
    assert_eq!(r.node_of(room), Some("b"));
    // The hub's subscribe from its last seq now goes to b.
    r.handle_up(at(2), subscribe(room));
    assert_eq!(
        outs(&mut r),
        vec![RouteOut::Send("b".into(), subscribe(room))]
    );
    // A late Moved from a (stale) changes nothing.
    r.handle_moved(at(3), "a", room, None);
    assert!(outs(&mut r).is_empty());
    assert_eq!(r.node_of(room), Some("b"));
}

#[test]
fn moved_with_an_unknown_owner_retries_with_backoff_then_succeeds() {
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(0), subscribe(room));
    outs(&mut r);
    // "a" lost the room; the owner is not known yet (a dead node's lease).
    r.handle_moved(at(0), "a", room, None);
    assert!(outs(&mut r).is_empty());
    assert_eq!(r.node_of(room), None);
    // Meanwhile its membership is dropped (the re-home states it again),
    // its actions held.
    r.handle_up(at(10), subscribe(room));
    r.handle_up(
        at(10),
        UpMsg::Action {
            actor: actor(3),
            msg: gift(room, 1),
        },
    );
    assert!(outs(&mut r).is_empty());
    assert_eq!(r.held(room), 1);
    // 50 ms later: the placement's choice ("a" again), with the held action.
    assert!(run_until(&mut r, 49).is_empty());
    let got = run_until(&mut r, 50);
    assert_eq!(
        got[0],
        RouteOut::Rehome {
            room,
            requeue: false
        }
    );
    assert_eq!(actions_sent(&got), vec![("a".to_string(), 1)]);
    // Still not the owner: 100 ms, then 200, 400, 400.
    let mut when = 50;
    for wait in [100, 200, 400, 400] {
        r.handle_moved(at(when), "a", room, Some("dead".into()));
        assert!(
            run_until(&mut r, when + wait - 1).is_empty(),
            "not before {wait} ms"
        );
        let got = run_until(&mut r, when + wait);
        assert_eq!(
            got,
            vec![RouteOut::Rehome {
                room,
                requeue: false
            }]
        );
        when += wait;
    }
    // It owns it now: no more Moved, nothing more happens.
    assert!(run_until(&mut r, when + 5_000).is_empty());
    assert_eq!(r.node_of(room), Some("a"));
    // Long after, a move starts the backoff over (the first try is 50 ms).
    r.handle_moved(at(when + 5_000), "a", room, None);
    assert!(run_until(&mut r, when + 5_049).is_empty());
    assert_eq!(run_until(&mut r, when + 5_050).len(), 1);
}

#[test]
fn a_link_going_down_rehomes_its_rooms_on_the_others() {
    let mut r = two_nodes();
    let on_a = room_on("a");
    let on_b = room_on("b");
    r.handle_up(at(0), subscribe(on_a));
    r.handle_up(at(0), subscribe(on_b));
    outs(&mut r);
    r.handle_link_down(at(5), "a");
    assert_eq!(
        outs(&mut r),
        vec![RouteOut::Rehome {
            room: on_a,
            requeue: true
        }]
    );
    assert_eq!(r.node_of(on_a), Some("b"));
    assert_eq!(r.node_of(on_b), Some("b"));
    // b answers Moved until the dead node's lease runs out: retries at b.
    r.handle_moved(at(6), "b", on_a, Some("a".into()));
    assert_eq!(r.node_of(on_a), None);
    let got = run_until(&mut r, 6 + 100);
    assert_eq!(
        got,
        vec![RouteOut::Rehome {
            room: on_a,
            requeue: false
        }]
    );
    assert_eq!(r.node_of(on_a), Some("b"));
    // The last link down is the hub's link down; the first up its link up.
    r.handle_link_down(at(200), "b");
    assert_eq!(outs(&mut r), vec![RouteOut::HubDown]);
    assert_eq!(r.node_of(on_b), None);
    r.handle_link_up(at(300), "a");
    assert_eq!(outs(&mut r), vec![RouteOut::HubUp]);
    r.handle_up(at(300), subscribe(on_b));
    assert_eq!(
        outs(&mut r),
        vec![RouteOut::Send("a".into(), subscribe(on_b))]
    );
}

#[test]
fn a_redirect_goes_to_the_owner_once() {
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(0), subscribe(room));
    outs(&mut r);
    r.handle_redirect(at(1), "a", actor(3), gift(room, 1), Some("b".into()));
    let got = outs(&mut r);
    assert_eq!(actions_sent(&got), vec![("b".to_string(), 1)]);
    assert_eq!(got.len(), 1);
    // Nothing is held for it, so nothing goes again later, not even when
    // the room moves.
    assert_eq!(r.held(room), 0);
    r.handle_moved(at(2), "a", room, Some("b".into()));
    let later = [outs(&mut r), run_until(&mut r, 10_000)].concat();
    assert!(actions_sent(&later).is_empty(), "{later:?}");
    // Redirected to a node with no link: held, then sent once to the room's
    // node when it has one.
    r.handle_moved(at(10_000), "b", room, None);
    r.handle_redirect(at(10_000), "b", actor(3), gift(room, 2), Some("c".into()));
    assert!(outs(&mut r).is_empty());
    assert_eq!(r.held(room), 1);
    let got = run_until(&mut r, 20_000);
    assert_eq!(actions_sent(&got), vec![("a".to_string(), 2)], "{got:?}");
    assert_eq!(r.held(room), 0);
    assert_eq!(r.metrics.redirects.get(), 2);
}

#[test]
fn held_actions_are_bounded_in_count_and_time() {
    let settings = RouteSettings {
        held_per_room: 3,
        ..RouteSettings::default()
    };
    let mut r = Router::new(settings, Metrics::default());
    r.handle_link_up(at(0), "a");
    let room = RoomId(1);
    r.handle_up(at(0), subscribe(room));
    r.handle_moved(at(0), "a", room, None);
    outs(&mut r);
    for n in 1..=5 {
        r.handle_redirect(at(0), "a", actor(3), gift(room, n), None);
    }
    assert_eq!(r.held(room), 3, "at most held_per_room");
    assert_eq!(r.metrics.held_dropped.get(), 2);
    // The same action again is held once.
    r.handle_redirect(at(0), "a", actor(3), gift(room, 1), None);
    assert_eq!(r.held(room), 3);
    // An action that keeps bouncing is held no longer than held_for in all.
    let mut r = Router::new(RouteSettings::default(), Metrics::default());
    r.handle_link_up(at(0), "a");
    r.handle_up(at(0), subscribe(room));
    outs(&mut r);
    let mut sent = 0;
    let mut now = 0;
    while now < 10_000 {
        r.handle_redirect(at(now), "a", actor(3), gift(room, 9), None);
        let got = run_until(&mut r, now + 150);
        sent += actions_sent(&got).len();
        now += 150;
    }
    // Sent on every 100 ms retry within 3 s, then dropped for good.
    assert!((15..=21).contains(&sent), "{sent}");
    assert_eq!(r.held(room), 0);
    assert!(r.metrics.held_dropped.get() > 0);
    // A held action's time bound runs out while its room waits for a node.
    let slow = RouteSettings {
        retry_min: Duration::from_secs(10),
        retry_max: Duration::from_secs(10),
        ..RouteSettings::default()
    };
    let mut r = Router::new(slow, Metrics::default());
    r.handle_link_up(at(0), "a");
    r.handle_up(at(0), subscribe(room));
    r.handle_moved(at(0), "a", room, None);
    r.handle_redirect(at(0), "a", actor(3), gift(room, 1), None);
    outs(&mut r);
    assert!(run_until(&mut r, 2_999).is_empty());
    assert_eq!(r.held(room), 1);
    assert!(run_until(&mut r, 3_000).is_empty());
    assert_eq!(r.held(room), 0, "dropped after held_for");
    let got = run_until(&mut r, 10_000);
    assert_eq!(
        got,
        vec![RouteOut::Rehome {
            room,
            requeue: false
        }]
    );
}

#[test]
fn the_first_redirect_answered_by_the_current_node_is_sent_there() {
    // A redirect from a stale node, owner unknown: the room's node is
    // another one, so the action goes there at once.
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(0), subscribe(room));
    r.handle_moved(at(0), "a", room, Some("b".into()));
    outs(&mut r);
    r.handle_redirect(at(1), "a", actor(3), gift(room, 1), None);
    assert_eq!(actions_sent(&outs(&mut r)), vec![("b".to_string(), 1)]);
}

#[test]
fn a_dead_nodes_room_gets_its_actions_from_the_hub_not_twice() {
    // Room on "a"; an action "a" handed back undecided (no owner) waits
    // for its retry when "a" dies: the hub resends the room's actions, so
    // the held copy is not sent too.
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(0), subscribe(room));
    r.handle_redirect(at(1), "a", actor(3), gift(room, 1), None);
    outs(&mut r);
    assert_eq!(r.held(room), 1);
    r.handle_link_down(at(2), "a");
    let got = [outs(&mut r), run_until(&mut r, 5_000)].concat();
    assert_eq!(
        got,
        vec![RouteOut::Rehome {
            room,
            requeue: true
        }]
    );
    assert_eq!(r.held(room), 0);
}

#[test]
fn a_node_that_won_a_waiting_room_gets_it_at_once_with_its_held_actions() {
    let mut r = two_nodes();
    let room = room_on("a");
    r.handle_up(at(0), subscribe(room));
    outs(&mut r);
    // "a" does not serve it and knows no owner (its holder died, its lease
    // has not run out yet): the room waits, its action is held.
    r.handle_moved(at(0), "a", room, None);
    r.handle_up(
        at(5),
        UpMsg::Action {
            actor: actor(3),
            msg: gift(room, 1),
        },
    );
    assert!(outs(&mut r).is_empty());
    // "b" wins it 20 ms later: the room goes there now, not at the 50 ms retry.
    r.handle_serving(at(20), "b", &[room, RoomId(999_999)]);
    let got = outs(&mut r);
    assert_eq!(
        got[0],
        RouteOut::Rehome {
            room,
            requeue: false
        }
    );
    assert_eq!(actions_sent(&got), vec![("b".to_string(), 1)]);
    assert_eq!(r.node_of(room), Some("b"));
    assert_eq!(r.held(room), 0);
    // Said again, or by a node that is not linked: nothing more.
    r.handle_serving(at(30), "b", &[room]);
    r.handle_serving(at(30), "gone", &[room]);
    assert!(outs(&mut r).is_empty());
    // The retry timer that was set finds the room served.
    assert!(run_until(&mut r, 5_000).is_empty());
    // A room routed to "a" moves to "b" when "b" says it won it.
    let third = (1..1000)
        .map(RoomId)
        .find(|x| *x != room && placement::owner(*x, ["a", "b"]) == Some("a"))
        .expect("another room on a");
    r.handle_up(at(40), subscribe(third));
    outs(&mut r);
    r.handle_serving(at(41), "b", &[third]);
    assert_eq!(r.node_of(third), Some("b"));
}
