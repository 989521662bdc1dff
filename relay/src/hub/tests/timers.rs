//! Heads and resends as virtual time passes: the hub wakes only when it
//! has something due, and does at those times what the old 200 ms tick did.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// When heads reached `client`.
fn heads(got: &[(Duration, Output)], client: ClientId) -> Vec<Duration> {
    (got.iter())
        .filter(|(_, Output::Client(c, o))| {
            *c == client && matches!(decoded(o), Some(ServerMsg::Head { .. }))
        })
        .map(|(t, _)| *t)
        .collect()
}

/// A hub with client 1 following room 1, its snapshot in hand at `t0`.
fn following() -> Sim {
    let mut s = Sim::new(Settings::default());
    s.hub.handle_upstream_up(s.now);
    s.hub.handle_client_up(s.now, 1, SessionId(1), UserId(7));
    s.hub.handle_join(s.now, 1, RoomId(1), None);
    snapshot_at(&mut s.hub, s.now, RoomId(1));
    s.drain();
    s.upstream();
    s
}

fn snapshot_at(h: &mut Hub, now: Instant, room: RoomId) {
    let state = Box::new(RoomState::new(room));
    let recent = vec![];
    h.handle_down(
        now,
        DownMsg::Snapshot {
            room,
            state,
            recent,
        },
    );
}

#[test]
fn an_idle_hub_has_nothing_due() {
    let mut s = Sim::new(Settings::default());
    assert_eq!(s.hub.poll_timeout(), None);
    s.hub.handle_upstream_up(s.now);
    s.hub.handle_client_up(s.now, 1, SessionId(1), UserId(7));
    s.hub.handle_join(s.now, 1, RoomId(1), None);
    assert_eq!(
        s.hub.poll_timeout(),
        None,
        "a room without a cache has no heads"
    );
}

#[test]
fn heads_go_every_200ms_while_a_room_changed_within_the_window_then_stop() {
    let mut s = following();
    let t0 = s.now;
    assert_eq!(s.hub.poll_timeout(), Some(t0 + 200 * MS));
    let got = s.advance(Duration::from_secs(10));
    let expected: Vec<Duration> = (1..=15).map(|k| k * 200 * MS).collect();
    assert_eq!(heads(&got, 1), expected, "to the end of the 3 s window");
    assert_eq!(s.hub.poll_timeout(), None, "quiet room: nothing due");
    // A new event starts them again, 200 ms after it.
    s.events([1]);
    let restart = s.elapsed();
    let got = s.advance(Duration::from_millis(450));
    assert_eq!(heads(&got, 1), vec![restart + 200 * MS, restart + 400 * MS]);
}

#[test]
fn a_room_whose_events_flow_gets_no_heads_until_it_falls_quiet() {
    let mut s = following();
    let mut got = Vec::new();
    // An event every 50 ms for a second: its next event shows any gap, so
    // no heads while they flow.
    for k in 1..=20 {
        got.extend(s.advance(50 * MS));
        s.events([k]);
    }
    assert!(heads(&got, 1).is_empty(), "no heads while events flow");
    // The last event at 1 s: the rounds keep their 200 ms cadence, and the
    // first round after half a round of quiet carries a head (a lost last
    // event is noticed within 300 ms of it).
    let last = s.elapsed();
    let got = s.advance(Duration::from_millis(650));
    let first = heads(&got, 1)[0];
    assert!(
        first > last + 100 * MS && first <= last + 300 * MS,
        "first head {first:?} after the last event {last:?}"
    );
    assert_eq!(
        heads(&got, 1),
        vec![first, first + 200 * MS, first + 400 * MS]
    );
}

#[test]
fn an_action_without_an_ack_is_sent_again_when_resend_after_passes() {
    let mut s = following();
    let sess = SessionId(1);
    s.hub
        .handle_action(s.now, 1, viewer(7), gift(sess, 1, 1), false);
    assert_eq!(s.upstream().len(), 1, "sent at once");
    s.advance(1_499 * MS);
    assert!(s.upstream().is_empty(), "not yet overdue");
    s.advance(MS);
    assert_eq!(s.elapsed(), 1_500 * MS);
    let again = s.upstream();
    assert!(
        matches!(again.as_slice(), [UpMsg::Action { msg, .. }] if msg.id.n == 1),
        "{again:?}"
    );
    s.advance(1_499 * MS);
    assert!(s.upstream().is_empty());
    s.advance(MS);
    assert_eq!(s.upstream().len(), 1, "and again 1.5 s later");
    s.hub.handle_down(s.now, ack(7, sess, 1, 2));
    s.advance(Duration::from_secs(10));
    assert!(s.upstream().is_empty(), "acked: never again");
    assert_eq!(s.hub.poll_timeout(), None);
}

#[test]
fn while_the_link_is_down_nothing_is_resent_until_it_returns() {
    let mut s = following();
    s.hub.handle_upstream_down(s.now);
    let sess = SessionId(1);
    s.hub
        .handle_action(s.now, 1, viewer(7), gift(sess, 1, 1), false);
    s.advance(Duration::from_secs(10));
    assert!(s.upstream().is_empty());
    assert_eq!(s.hub.poll_timeout(), None, "nothing to wake for");
    s.hub.handle_upstream_up(s.now);
    let back = s.upstream();
    let actions = back
        .iter()
        .filter(|m| matches!(m, UpMsg::Action { .. }))
        .count();
    assert_eq!(actions, 1, "the waiting action goes as the link returns");
    s.advance(1_500 * MS);
    assert_eq!(s.upstream().len(), 1, "and again when its ack is overdue");
}
