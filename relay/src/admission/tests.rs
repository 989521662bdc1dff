//! The admission checks, network-free on a clock the tests move.

use super::*;

fn limits() -> Limits {
    Limits {
        max_connections: 4,
        max_per_addr: 2,
        max_unauthenticated: 3,
        retry_above_per_sec: 3,
        sessions_per_user: 2,
        actions_per_sec: 10,
        action_burst: 5,
        messages_per_sec: 10,
        // Out of the way, but for the test of it.
        handshakes_per_sec: 10_000,
        handshake_burst: 10_000,
        ..Limits::default()
    }
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

#[test]
fn an_address_gets_its_share_and_no_more() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    assert_eq!(a.handle_incoming(t, ip(1), false), Incoming::Accept);
    assert_eq!(a.handle_incoming(t, ip(1), false), Incoming::Accept);
    assert_eq!(a.handle_incoming(t, ip(1), true), Incoming::Refuse);
    a.handle_closed(t, ip(1), None);
    assert_eq!(a.handle_incoming(t, ip(1), true), Incoming::Accept);
}

#[test]
fn unauthenticated_connections_are_capped_until_they_say_hello() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    for n in 1..=3 {
        assert_eq!(a.handle_incoming(t, ip(n), true), Incoming::Accept);
    }
    assert_eq!(a.handle_incoming(t, ip(4), true), Incoming::Refuse);
    a.handle_authenticated(t, UserId(1)).expect("first session");
    assert_eq!(a.handle_incoming(t, ip(4), true), Incoming::Accept);
    assert_eq!(a.connections(), 4);
    assert_eq!(
        a.handle_incoming(t, ip(5), true),
        Incoming::Refuse,
        "the relay's total is a limit too"
    );
}

#[test]
fn past_the_handshake_rate_peers_must_prove_their_address() {
    let t = Instant::now();
    let mut a = Admission::new(
        Limits {
            max_per_addr: 100,
            ..limits()
        },
        t,
    );
    for _ in 0..3 {
        assert_eq!(a.handle_incoming(t, ip(1), false), Incoming::Accept);
        a.handle_closed(t, ip(1), None);
    }
    assert_eq!(a.handle_incoming(t, ip(1), false), Incoming::Retry);
    assert_eq!(a.handle_incoming(t, ip(1), true), Incoming::Accept);
    let later = t + Duration::from_secs(1);
    assert_eq!(a.handle_incoming(later, ip(2), false), Incoming::Accept);
}

#[test]
fn handshakes_are_begun_at_a_bounded_rate_from_all_peers_together() {
    let t = Instant::now();
    let roomy = Limits {
        max_connections: 1_000,
        max_per_addr: 1_000,
        max_unauthenticated: 1_000,
        retry_above_per_sec: 1_000,
        handshakes_per_sec: 100,
        handshake_burst: 10,
        ..limits()
    };
    let mut a = Admission::new(roomy, t);
    // A hundred peers dialing at once: the burst goes ahead, the rest
    // is refused before any handshake work and dials again.
    let accepted = (0..100u8)
        .filter(|n| a.handle_incoming(t, ip(*n), true) == Incoming::Accept)
        .count();
    assert_eq!(accepted, 10);
    let later = t + Duration::from_millis(100);
    let accepted = (0..100u8)
        .filter(|n| a.handle_incoming(later, ip(*n), true) == Incoming::Accept)
        .count();
    assert_eq!(accepted, 10, "100 ms at 100/s");
    // A banned address spends no token.
    for _ in 0..3 {
        a.handle_abuse(later, ip(200));
    }
    let much_later = later + Duration::from_secs(1);
    assert_eq!(
        a.handle_incoming(much_later, ip(200), true),
        Incoming::Refuse
    );
    let accepted = (0..100u8)
        .filter(|n| a.handle_incoming(much_later, ip(*n), true) == Incoming::Accept)
        .count();
    assert_eq!(accepted, 10);
}

#[test]
fn a_user_has_a_limited_number_of_sessions() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    for n in 1..=3 {
        a.handle_incoming(t, ip(n), true);
    }
    assert!(a.handle_authenticated(t, UserId(7)).is_ok());
    assert!(a.handle_authenticated(t, UserId(7)).is_ok());
    assert_eq!(a.handle_authenticated(t, UserId(7)), Err(ErrorCode::Limit));
    a.handle_closed(t, ip(1), Some(UserId(7)));
    a.handle_incoming(t, ip(1), true);
    assert!(a.handle_authenticated(t, UserId(7)).is_ok());
}

#[test]
fn a_churn_of_fresh_sessions_is_refused() {
    let t = Instant::now();
    let mut a = Admission::new(
        Limits {
            max_per_addr: 100,
            max_unauthenticated: 100,
            max_connections: 100,
            ..limits()
        },
        t,
    );
    // Connect, say hello, leave, again: twice the session cap in a burst.
    let mut admitted = 0;
    for _ in 0..10 {
        a.handle_incoming(t, ip(1), true);
        match a.handle_authenticated(t, UserId(7)) {
            Ok(()) => {
                admitted += 1;
                a.handle_closed(t, ip(1), Some(UserId(7)));
            }
            Err(code) => {
                assert_eq!(code, ErrorCode::Limit);
                a.handle_closed(t, ip(1), None);
            }
        }
    }
    assert_eq!(admitted, 4, "a burst of twice sessions_per_user (2)");
    let later = t + Duration::from_secs(1);
    a.handle_incoming(later, ip(1), true);
    assert!(
        a.handle_authenticated(later, UserId(7)).is_ok(),
        "one a second"
    );
}

#[test]
fn the_action_rate_is_per_user_across_connections() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    a.handle_incoming(t, ip(1), true);
    a.handle_incoming(t, ip(2), true);
    a.handle_authenticated(t, UserId(7)).expect("one");
    a.handle_authenticated(t, UserId(7)).expect("two");
    // Burst of 5 shared by both connections.
    for _ in 0..5 {
        assert_eq!(a.handle_action(t, UserId(7)), ActionVerdict::Forward);
    }
    let ActionVerdict::Throttle(wait) = a.handle_action(t, UserId(7)) else {
        panic!("the sixth action is over the burst");
    };
    assert_eq!(wait, Duration::from_millis(100), "one token at 10/s");
    assert_eq!(
        a.handle_action(t + wait, UserId(7)),
        ActionVerdict::Forward,
        "and it may come back when told"
    );
}

#[test]
fn reconnecting_does_not_reset_a_users_rate() {
    let t = Instant::now();
    let slow = Limits {
        actions_per_sec: 1,
        ..limits()
    };
    let mut a = Admission::new(slow, t);
    a.handle_incoming(t, ip(1), true);
    a.handle_authenticated(t, UserId(7)).expect("session");
    for _ in 0..5 {
        a.handle_action(t, UserId(7));
    }
    a.handle_closed(t, ip(1), Some(UserId(7)));
    let soon = t + Duration::from_millis(1_100);
    a.handle_incoming(soon, ip(1), true);
    a.handle_authenticated(soon, UserId(7)).expect("again");
    let forwarded = (0..5)
        .filter(|_| a.handle_action(soon, UserId(7)) == ActionVerdict::Forward)
        .count();
    assert_eq!(forwarded, 1, "one token refilled in 1.1 s, not five");
}

#[test]
fn users_without_connections_are_forgotten_once_their_buckets_refill() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    for n in 0..50u8 {
        a.handle_incoming(t, ip(n), true);
        a.handle_authenticated(t, UserId(u64::from(n)))
            .expect("session");
        a.handle_action(t, UserId(u64::from(n)));
        a.handle_closed(t, ip(n), Some(UserId(u64::from(n))));
    }
    a.handle_incoming(t + Duration::from_secs(5), ip(1), true);
    a.handle_closed(t + Duration::from_secs(5), ip(1), None);
    assert_eq!(a.users(), 0);
    assert_eq!(a.connections(), 0);
}

#[test]
fn a_message_flood_is_detected_per_user() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    a.handle_incoming(t, ip(1), true);
    a.handle_authenticated(t, UserId(7)).expect("session");
    let allowed = (0..100).filter(|_| a.handle_message(t, UserId(7))).count();
    assert_eq!(allowed, 20, "twice the rate as a burst");
    assert!(!a.handle_message(t, UserId(8)), "unknown users get nothing");
}

#[test]
fn an_address_that_keeps_abusing_is_refused_for_a_while() {
    let t = Instant::now();
    let mut a = Admission::new(limits(), t);
    a.handle_abuse(t, ip(9));
    a.handle_abuse(t, ip(9));
    assert_eq!(
        a.handle_incoming(t, ip(9), true),
        Incoming::Accept,
        "two strikes"
    );
    a.handle_closed(t, ip(9), None);
    a.handle_abuse(t, ip(9));
    assert_eq!(a.handle_incoming(t, ip(9), true), Incoming::Refuse);
    assert_eq!(
        a.handle_incoming(t, ip(8), true),
        Incoming::Accept,
        "others are not"
    );
    let later = t + Duration::from_millis(Limits::default().penalty_ms);
    assert_eq!(a.handle_incoming(later, ip(9), true), Incoming::Accept);
    // Strikes far apart never add up.
    for k in 0..5u64 {
        a.handle_abuse(later + Duration::from_secs(11 * (k + 1)), ip(7));
    }
    let end = later + Duration::from_secs(56);
    assert_eq!(a.handle_incoming(end, ip(7), true), Incoming::Accept);
}

#[test]
fn the_request_budget_is_shared_by_joins_and_repairs() {
    let t = Instant::now();
    let l = Limits {
        requests_per_sec: 2,
        request_burst: 3,
        ..Limits::default()
    };
    let mut r = Requests::new(&l, t);
    assert_eq!((0..10).filter(|_| r.take(t)).count(), 3);
    assert!(r.take(t + Duration::from_millis(500)));
}

#[test]
fn a_join_is_refused_over_the_budget_or_without_a_grant() {
    let t = Instant::now();
    let l = Limits {
        requests_per_sec: 1,
        request_burst: 2,
        ..Limits::default()
    };
    let mut r = Requests::new(&l, t);
    assert_eq!(r.handle_join(t, false), Err(Reason::NoGrant));
    assert_eq!(r.handle_join(t, true), Ok(()));
    assert_eq!(
        r.handle_join(t, true),
        Err(Reason::TooMany),
        "the refused one spent a request too"
    );
    assert_eq!(r.handle_join(t + Duration::from_secs(1), true), Ok(()));
}
