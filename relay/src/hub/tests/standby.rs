//! Standby connections: told at once, and only they, when the origin loses
//! the relay their session is live on.

use super::*;

#[test]
fn only_the_standbys_of_the_lost_relay_are_told() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    // Client 1 stands by for relay-a, client 2 for relay-c, client 3 is a
    // session live here.
    for (c, user) in [(1, 11), (2, 12), (3, 13)] {
        h.handle_client_up(at(0), c, SessionId(c), UserId(user));
    }
    h.handle_standby(1, "relay-a".into());
    h.handle_standby(2, "relay-c".into());
    h.handle_join(at(0), 3, RoomId(1), None);
    drain(&mut h);

    h.handle_down(
        at(1),
        DownMsg::RelayGone {
            relay: "relay-a".into(),
        },
    );
    let out = drain(&mut h);
    let gone = |c| {
        to_client(&out, c)
            .iter()
            .any(|m| matches!(m, ServerMsg::RelayGone { relay } if relay == "relay-a"))
    };
    assert!(gone(1), "the standby of relay-a's session is told");
    assert!(!gone(2), "a standby for another relay is not");
    assert!(!gone(3), "a session live here is not");
    // Told once: the notice is not repeated for the same loss.
    h.handle_down(
        at(2),
        DownMsg::RelayGone {
            relay: "relay-a".into(),
        },
    );
    assert!(to_client(&drain(&mut h), 1).is_empty());
}

#[test]
fn a_standby_follows_its_sessions_moves_and_a_gone_client_is_not_told() {
    let mut h = Hub::new(Settings::default());
    h.handle_client_up(at(0), 1, SessionId(1), UserId(11));
    h.handle_client_up(at(0), 2, SessionId(2), UserId(12));
    h.handle_standby(1, "relay-a".into());
    // The session moved to relay-c: its standby says so.
    h.handle_standby(1, "relay-c".into());
    h.handle_standby(2, "relay-a".into());
    h.handle_client_gone(at(1), 2, true);
    // A name no relay has is not kept.
    h.handle_client_up(at(1), 3, SessionId(3), UserId(13));
    h.handle_standby(3, "x".repeat(10_000));
    drain(&mut h);
    h.handle_down(
        at(2),
        DownMsg::RelayGone {
            relay: "relay-a".into(),
        },
    );
    let out = drain(&mut h);
    assert!(out.is_empty(), "{} outputs", out.len());
    h.handle_down(
        at(3),
        DownMsg::RelayGone {
            relay: "relay-c".into(),
        },
    );
    let told = to_client(&drain(&mut h), 1);
    assert!(matches!(told.as_slice(), [ServerMsg::RelayGone { .. }]));
}
