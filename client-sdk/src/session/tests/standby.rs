//! The warm standby on a virtual clock: opened after the live connection,
//! told when the origin lost the live relay, resumed on without a
//! handshake; and the quiet session's slow pings.

use super::*;
use crate::session::state::{PING_FAST_SAMPLES, PING_QUIET, PING_SLOW, QUIET_AFTER};

/// The standby orders so far.
fn standby_orders(h: &Harness) -> Vec<(u64, Vec<SocketAddr>)> {
    (h.sent.iter())
        .filter_map(|t| match t {
            Transmit::ConnectStandby { gen, relays, .. } => Some((*gen, relays.clone())),
            _ => None,
        })
        .collect()
}

/// A session in the room at seq 2 with a standby on relay :2 (connection 2).
fn with_standby() -> Harness {
    let mut h = Harness::plain();
    h.joined_at(2);
    h.advance(Duration::from_millis(199));
    assert!(
        standby_orders(&h).is_empty(),
        "the live connection's joins go first"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(standby_orders(&h), vec![(2, vec![addr(2), addr(3)])]);
    h.take();
    h.s.handle_standby_connected(h.now, Ok(link(2, 2)));
    h.step();
    assert_eq!(
        h.messages(),
        vec![(
            2,
            Path::Stream,
            &ClientMsg::Standby {
                primary: "relay-1".into()
            }
        )],
        "the standby says whose standby it is"
    );
    assert_eq!(h.s.standby_relay(), Some(&relay(2)));
    h.take();
    h
}

#[test]
fn told_by_the_standby_that_the_relay_is_lost_it_resumes_there_at_once() {
    let mut h = with_standby();
    h.command(gift(1));
    h.advance(Duration::from_millis(50));
    h.take();
    // What comes on the standby before is not the session's.
    h.feed(2, Path::Stream, ServerMsg::Upstream { connected: true });
    assert!(h.client_events().is_empty());
    h.feed(
        2,
        Path::Stream,
        ServerMsg::RelayGone {
            relay: "relay-1".into(),
        },
    );
    assert!(matches!(
        h.client_events()[..],
        [ClientEvent::Moving { ref from, goaway: false }] if *from == relay(1)
    ));
    // No handshake: the old connection closes, nothing connects, and the
    // room and the gift go again on the standby at once.
    assert!(h.orders().iter().all(|t| matches!(
        t,
        Transmit::Close { gen: 1, .. } | Transmit::ConnectStandby { .. }
    )));
    assert!(h.messages().contains(&(
        2,
        Path::Stream,
        &ClientMsg::Join {
            room: ROOM,
            since: Some(Seq(2))
        }
    )));
    assert_eq!(h.sends_of(1), vec![(2, Path::Stream)]);
    h.advance(Duration::from_millis(3));
    h.feed(2, Path::Stream, events(vec![ev(3)]));
    assert!(h.client_events().iter().any(|e| matches!(
        e,
        ClientEvent::Reconnected { relay: r, continuity: Continuity::GapFree, took }
            if *r == relay(2) && *took == Duration::from_millis(3)
    )));
    assert_eq!(h.s.relay(), Some(&relay(2)));
    assert_eq!(h.s.standby_relay(), None);
    // A new standby, to a relay other than the new live one.
    h.take();
    h.advance(Duration::from_millis(200));
    assert_eq!(standby_orders(&h), vec![(3, vec![addr(1), addr(3)])]);
}

#[test]
fn a_notice_about_another_relay_moves_nothing() {
    let mut h = with_standby();
    h.feed(
        2,
        Path::Stream,
        ServerMsg::RelayGone {
            relay: "relay-3".into(),
        },
    );
    assert!(h.client_events().is_empty());
    assert_eq!(h.s.relay(), Some(&relay(1)));
    // And on the live connection, such a notice means nothing either.
    h.feed(
        1,
        Path::Stream,
        ServerMsg::RelayGone {
            relay: "relay-1".into(),
        },
    );
    assert!(h.client_events().is_empty());
}

#[test]
fn when_the_live_connection_dies_the_standby_is_resumed_on_without_connecting() {
    let mut h = with_standby();
    h.closed(1, None);
    assert!(
        !h.orders()
            .iter()
            .any(|t| matches!(t, Transmit::Connect { .. })),
        "{:?}",
        h.orders()
    );
    assert_eq!(h.s.relay(), Some(&relay(2)));
    assert_eq!(h.s.stats().moves, 1);
}

#[test]
fn a_lost_standby_is_opened_again_and_a_failed_one_after_a_backoff() {
    let mut h = with_standby();
    h.closed(2, None);
    assert_eq!(h.s.relay(), Some(&relay(1)), "the live connection stays");
    assert_eq!(h.s.standby_relay(), None);
    h.take();
    h.advance(Duration::from_millis(999));
    assert!(standby_orders(&h).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(standby_orders(&h), vec![(3, vec![addr(2), addr(3)])]);
    h.take();
    h.s.handle_standby_connected(h.now, Err(Error::Unreachable("down".into())));
    h.step();
    h.advance(Duration::from_millis(999));
    assert!(standby_orders(&h).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(standby_orders(&h).len(), 1);
}

#[test]
fn a_goaway_resumes_on_the_standby_and_says_bye_to_the_relay_left() {
    let mut h = with_standby();
    h.feed(
        1,
        Path::Stream,
        ServerMsg::GoAway {
            alternatives: Vec::new(),
        },
    );
    assert!(!h
        .orders()
        .iter()
        .any(|t| matches!(t, Transmit::Connect { .. })));
    assert!(h.messages().contains(&(1, Path::Stream, &ClientMsg::Bye)));
    assert_eq!(h.s.relay(), Some(&relay(2)));
}

#[test]
fn a_single_relay_has_no_standby() {
    let setup = Setup {
        session: SessionId(7),
        token: token(UNIX_START + 3600),
        ranking: vec![addr(1)],
        first: link(1, 1),
        unix_now: Duration::from_secs(UNIX_START),
    };
    let mut s = Session::new(&Config::default(), setup, t0());
    s.handle_timeout(t0() + Duration::from_secs(5));
    let orders: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert!(!orders
        .iter()
        .any(|t| matches!(t, Transmit::ConnectStandby { .. })));
}

#[test]
fn a_quiet_session_pings_seldom_and_an_action_brings_the_pings_back() {
    let mut h = Harness::plain();
    h.joined_at(2);
    let pings = |h: &Harness| {
        (h.messages().iter())
            .filter(|(_, _, m)| matches!(m, ClientMsg::Ping { .. }))
            .count()
    };
    // The first exchanges are answered (a full window of them): the fast
    // pings end.
    for _ in 0..PING_FAST_SAMPLES + 4 {
        let nonces: Vec<u64> = (h.messages().iter())
            .filter_map(|(_, _, m)| match m {
                ClientMsg::Ping { nonce } => Some(*nonce),
                _ => None,
            })
            .collect();
        h.take();
        for nonce in nonces {
            let origin_time = ServerTime(1_000_000);
            h.feed(1, Path::Datagram, ServerMsg::Pong { nonce, origin_time });
        }
        h.advance(Duration::from_millis(100));
    }
    h.advance(QUIET_AFTER);
    h.take();
    // Quiet now: one ping in PING_QUIET, and the report rides with it.
    h.advance(PING_QUIET * 2 - PING_SLOW);
    assert!((1..=2).contains(&pings(&h)), "{} pings", pings(&h));
    let reports = (h.messages().iter())
        .filter(|(_, _, m)| matches!(m, ClientMsg::Report(_)))
        .count();
    assert_eq!(reports, pings(&h), "one report per quiet ping, no more");
    h.take();
    h.command(gift(1));
    h.advance(PING_SLOW);
    assert_eq!(pings(&h), 1, "the action brought the pings back");
}
