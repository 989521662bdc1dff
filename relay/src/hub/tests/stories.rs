//! The stories a relay lives through: a session resuming here, a client
//! repairing a gap, a drain, the link to the origin coming back, and a
//! room moving to another origin node (cluster mode).

use std::collections::BTreeSet;

use super::*;
use protocol::message::ErrorCode;

/// A hub with the link up and room 1 cached at seq `head` (events 1..=head
/// in its ring), followed by client 1 (user 7) and client 9 (user 9).
fn room_at(head: u64) -> Sim {
    let mut s = Sim::new(Settings::default());
    s.hub.handle_upstream_up(s.now);
    for (client, user) in [(1, 7), (9, 9)] {
        s.hub
            .handle_client_up(s.now, client, SessionId(client), UserId(user));
        s.hub.handle_join(s.now, client, RoomId(1), None);
    }
    s.hub.handle_down(s.now, snapshot_at_head(head));
    s.drain();
    s.upstream();
    s
}

#[test]
fn a_session_resuming_here_replaces_its_old_connection_and_is_served_from_since() {
    let mut s = room_at(10);
    let sess = SessionId(1);
    s.hub
        .handle_action(s.now, 1, viewer(7), gift(sess, 1, 1), false);
    s.upstream();
    s.advance(Duration::from_millis(100));
    // The same session says hello on a new connection.
    s.hub.handle_client_up(s.now, 2, sess, UserId(7));
    let out = s.drain();
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Client(1, Out::Close(ErrorCode::Normal, _)))),
        "the old connection is closed: {out:?}"
    );
    assert_eq!(s.hub.clients(), 2, "the new one and client 9");
    // It holds the room at 7: it gets 8..=10 from the ring, not a snapshot.
    s.hub.handle_join(s.now, 2, RoomId(1), Some(Seq(7)));
    let served = to_client(&s.drain(), 2);
    assert_eq!(seqs(&served), vec![8, 9, 10]);
    assert!(!served
        .iter()
        .any(|m| matches!(m, ServerMsg::Snapshot { .. })));
    // Its waiting action, sent again on the new connection, is acked there.
    s.hub
        .handle_action(s.now, 2, viewer(7), gift(sess, 1, 1), false);
    s.hub.handle_down(s.now, ack(7, sess, 1, 11));
    let out = s.drain();
    assert!(to_client(&out, 2)
        .iter()
        .any(|m| matches!(m, ServerMsg::Ack { .. })));
    assert!(to_client(&out, 1).is_empty(), "nothing for the old one");
}

#[test]
fn a_gap_is_repaired_from_the_ring_at_most_once_per_interval() {
    let mut s = room_at(10);
    // The client lost 6..=10 and asks from 6.
    s.hub.handle_resync(s.now, 1, RoomId(1), Seq(6));
    assert_eq!(seqs(&to_client(&s.drain(), 1)), vec![6, 7, 8, 9, 10]);
    s.advance(Duration::from_millis(10));
    s.hub.handle_resync(s.now, 1, RoomId(1), Seq(6));
    assert!(s.drain().is_empty(), "again within 20 ms: nothing");
    s.advance(Duration::from_millis(10));
    s.hub.handle_resync(s.now, 1, RoomId(1), Seq(9));
    assert_eq!(seqs(&to_client(&s.drain(), 1)), vec![9, 10]);
    // Asking for what the ring no longer holds gets the whole state.
    let mut small = Sim::new(Settings {
        ring: 3,
        ..Settings::default()
    });
    small
        .hub
        .handle_client_up(small.now, 1, SessionId(1), UserId(7));
    small.hub.handle_join(small.now, 1, RoomId(1), None);
    small.hub.handle_down(small.now, snapshot_at_head(10));
    small.drain();
    small.hub.handle_resync(small.now, 1, RoomId(1), Seq(2));
    let served = to_client(&small.drain(), 1);
    assert!(
        matches!(served.as_slice(), [ServerMsg::Snapshot { state, .. }] if state.seq == Seq(10)),
        "{served:?}"
    );
}

#[test]
fn a_drain_tells_every_client_to_go_away() {
    let mut s = Sim::new(Settings::default());
    for c in 1..=3 {
        s.hub.handle_client_up(s.now, c, SessionId(c), UserId(c));
    }
    s.drain();
    s.hub.handle_drain(&["relay-b".to_string()]);
    let out = s.drain();
    for c in 1..=3 {
        assert_eq!(
            to_client(&out, c),
            vec![ServerMsg::GoAway {
                alternatives: vec!["relay-b".to_string()]
            }],
            "client {c}"
        );
    }
}

#[test]
fn when_the_link_returns_rooms_are_resubscribed_from_what_is_held_and_actions_resent() {
    let mut s = room_at(5);
    let sess = SessionId(1);
    s.hub.handle_upstream_down(s.now);
    assert_eq!(
        to_client(&s.drain(), 1),
        vec![ServerMsg::Upstream { connected: false }]
    );
    // While it is down, an action waits.
    s.hub
        .handle_action(s.now, 1, viewer(7), gift(sess, 1, 1), false);
    s.advance(Duration::from_secs(5));
    assert!(s.upstream().is_empty());
    s.hub.handle_upstream_up(s.now);
    assert_eq!(
        to_client(&s.drain(), 1),
        vec![ServerMsg::Upstream { connected: true }]
    );
    let back = s.upstream();
    assert!(
        back.iter().any(|m| matches!(
            m,
            UpMsg::Subscribe {
                room: RoomId(1),
                since: Some(Seq(5)),
                ..
            }
        )),
        "resubscribed from the cached head: {back:?}"
    );
    assert!(back.iter().any(|m| matches!(
        m,
        UpMsg::Presence {
            room: RoomId(1),
            user: UserId(7),
            online: true
        }
    )));
    let last = back.last();
    assert!(
        matches!(last, Some(UpMsg::Action { msg, .. }) if msg.id.n == 1),
        "the action goes after the membership: {back:?}"
    );
    // Events after the head reach the client as datagrams.
    assert_eq!(seqs(&to_client(&s.events([6]), 1)), vec![6]);
}

#[test]
fn a_rehomed_room_is_stated_again_from_its_head_and_only_its_actions_resent() {
    let mut s = room_at(5);
    let sess = SessionId(1);
    s.hub
        .handle_action(s.now, 1, viewer(7), gift(sess, 1, 1), false);
    let mut other = gift(sess, 2, 1);
    other.room = RoomId(2);
    s.hub.handle_action(s.now, 1, viewer(7), other, false);
    assert_eq!(s.upstream().len(), 2, "both actions went up once");
    // Room 1 moves to another node (no resend asked): subscribe from the
    // cached head and presence again, no action, clients not told.
    s.hub.handle_rehome(s.now, RoomId(1), false);
    let moved = s.upstream();
    assert_eq!(
        moved.first(),
        Some(&UpMsg::Subscribe {
            room: RoomId(1),
            since: Some(Seq(5)),
            history: None
        }),
        "{moved:?}"
    );
    let present: BTreeSet<UserId> = (moved.iter())
        .filter_map(|m| match m {
            UpMsg::Presence {
                user, online: true, ..
            } => Some(*user),
            _ => None,
        })
        .collect();
    assert_eq!(present, BTreeSet::from([UserId(7), UserId(9)]));
    assert!(!moved.iter().any(|m| matches!(m, UpMsg::Action { .. })));
    assert!(s.drain().is_empty(), "clients see nothing of a move");
    // Its node died: the same again, and room 1's action (only) resent.
    s.hub.handle_rehome(s.now, RoomId(1), true);
    let again = s.upstream();
    let actions: Vec<RoomId> = (again.iter())
        .filter_map(|m| match m {
            UpMsg::Action { msg, .. } => Some(msg.room),
            _ => None,
        })
        .collect();
    assert_eq!(actions, vec![RoomId(1)], "{again:?}");
    // A room nobody follows, or a link that is down: nothing.
    s.hub.handle_rehome(s.now, RoomId(3), true);
    assert!(s.upstream().is_empty());
    s.hub.handle_upstream_down(s.now);
    s.hub.handle_rehome(s.now, RoomId(1), true);
    assert!(s.upstream().is_empty());
}
