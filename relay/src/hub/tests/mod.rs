//! The hub's stories: network-free, driven by hand-fed inputs and a
//! virtual clock ([`Sim`]). Here: security properties and bounds;
//! `timers.rs`: heads and resends as time passes; `stories.rs`: resume, gap
//! repair, goaway and the link to the origin coming back; `standby.rs`:
//! standby connections told of their session's lost relay.

mod standby;
mod stories;
mod timers;

use super::state::RESYNC_EVERY;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::tests::event;
use protocol::codec;
use protocol::message::ServerMsg;
use protocol::message::{ActionMsg, Actor, DownMsg, UpMsg};
use protocol::room::Grant;
use protocol::Event;
use protocol::{Action, GiftId, Outcome, ServerTime};
use protocol::{ActionId, RoomId, RoomState, Seq, SessionId, UserId};

/// Virtual time: `us` microseconds after the tests' origin.
fn at(us: u64) -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now) + Duration::from_micros(us)
}

fn drain(h: &mut Hub) -> Vec<Output> {
    std::iter::from_fn(|| h.poll_output()).collect()
}

fn gift(session: SessionId, n: u64, gift: u32) -> ActionMsg {
    ActionMsg {
        id: ActionId { session, n },
        room: RoomId(1),
        sent_at: ServerTime(0),
        action: Action::Gift {
            gift: GiftId(gift),
            count: 1,
        },
    }
}

fn viewer(user: u64) -> Actor {
    Actor {
        user: UserId(user),
        grant: Grant::Viewer,
    }
}

/// A hub on a virtual clock: time moves only when a test says so, jumping
/// from one due timer of the hub's to the next.
struct Sim {
    hub: Hub,
    /// The tests' origin of time.
    t0: Instant,
    now: Instant,
}

impl Sim {
    fn new(settings: Settings) -> Sim {
        let t0 = at(0);
        Sim {
            hub: Hub::new(settings),
            t0,
            now: t0,
        }
    }

    /// Time since the start, for assertions.
    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Let `d` pass, running every timer that falls due on the way; the
    /// outputs with when they came.
    fn advance(&mut self, d: Duration) -> Vec<(Duration, Output)> {
        let end = self.now + d;
        let mut got = Vec::new();
        for _ in 0..100_000 {
            match self.hub.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.hub.handle_timeout(self.now);
                    let when = self.elapsed();
                    got.extend(drain(&mut self.hub).into_iter().map(|o| (when, o)));
                }
                _ => {
                    self.now = end;
                    return got;
                }
            }
        }
        panic!("the hub's timers never settle");
    }

    /// The hub's outputs now.
    fn drain(&mut self) -> Vec<Output> {
        drain(&mut self.hub)
    }

    /// The origin's events `seqs` of room 1 arrive now; the outputs.
    fn events(&mut self, seqs: impl IntoIterator<Item = u64>) -> Vec<Output> {
        let events = seqs.into_iter().map(event).collect();
        let room = RoomId(1);
        self.hub
            .handle_down(self.now, DownMsg::Events { room, events });
        self.drain()
    }

    /// What the hub has for the origin now.
    fn upstream(&mut self) -> Vec<UpMsg> {
        upstream(&mut self.hub)
    }
}

/// A server message as the client would read it.
fn decoded(out: &Out) -> Option<ServerMsg> {
    match out {
        Out::Datagram(item) => codec::decode(&item.payload).ok(),
        Out::Reliable(b) | Out::Snapshot(_, b) => codec::decode(b.get(4..)?).ok(),
        Out::Close(..) => None,
    }
}

/// The messages for `client`, decoded.
fn to_client(outputs: &[Output], client: ClientId) -> Vec<ServerMsg> {
    (outputs.iter())
        .filter_map(|Output::Client(c, o)| (*c == client).then(|| decoded(o)).flatten())
        .collect()
}

/// The origin's ack of action `n` of `session` (user `user`), applied at `seq`.
fn ack(user: u64, session: SessionId, n: u64, seq: u64) -> DownMsg {
    DownMsg::Ack {
        user: UserId(user),
        id: ActionId { session, n },
        outcome: Outcome::Applied { seq: Seq(seq) },
    }
}

/// The origin's snapshot of room 1 at `head`, with events 1..=head.
fn snapshot_at_head(head: u64) -> DownMsg {
    let mut state = RoomState::new(RoomId(1));
    let recent: Vec<Event> = (1..=head).map(event).collect();
    for e in &recent {
        state.apply(e).expect("in order");
    }
    DownMsg::Snapshot {
        room: RoomId(1),
        state: Box::new(state),
        recent,
    }
}

/// The seqs of the events in `msgs`.
fn seqs(msgs: &[ServerMsg]) -> Vec<u64> {
    (msgs.iter())
        .flat_map(|m| match m {
            ServerMsg::Events { events, .. } => events.iter().map(|e| e.seq.0).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn another_user_cannot_take_a_session_over() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    let s = SessionId(0xfeed);
    h.handle_client_up(at(0), 1, s, UserId(7));
    h.handle_action(at(0), 1, viewer(7), gift(s, 1, 1), false);
    drain(&mut h);
    // Another user says hello with the victim's session id (ids are
    // public: every event's cause carries one).
    h.handle_client_up(at(1), 2, s, UserId(666));
    let out = drain(&mut h);
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Client(1, Out::Close(..)))),
        "the victim was closed"
    );
    let ack = DownMsg::Ack {
        user: UserId(7),
        id: ActionId { session: s, n: 1 },
        outcome: Outcome::Applied { seq: Seq(2) },
    };
    h.handle_down(at(2), ack);
    let out = drain(&mut h);
    assert!(
        out.iter().any(|o| matches!(o, Output::Client(1, _))),
        "the victim gets its ack"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Client(2, _))),
        "the other user gets nothing"
    );
}

#[test]
fn a_forged_id_does_not_preempt_the_owners_action() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    let s = SessionId(0xfeed);
    h.handle_client_up(at(0), 1, s, UserId(7));
    h.handle_client_up(at(0), 2, SessionId(1), UserId(666));
    drain(&mut h);
    h.handle_action(at(0), 2, viewer(666), gift(s, 5, 1), false);
    h.handle_action(at(1), 1, viewer(7), gift(s, 5, 5), false);
    drain(&mut h);
    let owners: Vec<UserId> = std::iter::from_fn(|| h.poll_upstream())
        .filter_map(|m| match m {
            UpMsg::Action { actor, .. } => Some(actor.user),
            _ => None,
        })
        .collect();
    assert_eq!(
        owners,
        vec![UserId(666), UserId(7)],
        "both go upstream, each as its own"
    );
}

#[test]
fn repairs_are_rate_limited_per_client_and_room() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    h.handle_client_up(at(0), 1, SessionId(1), UserId(7));
    h.handle_join(at(0), 1, RoomId(1), None);
    h.handle_down(
        at(0),
        DownMsg::Snapshot {
            room: RoomId(1),
            state: Box::new(RoomState::new(RoomId(1))),
            recent: vec![],
        },
    );
    drain(&mut h);
    h.handle_resync(at(1_000), 1, RoomId(1), Seq(1));
    assert_eq!(drain(&mut h).len(), 1);
    h.handle_resync(at(2_000), 1, RoomId(1), Seq(1));
    assert!(
        drain(&mut h).is_empty(),
        "a second repair within the limit is ignored"
    );
    h.handle_resync(at(1_000) + RESYNC_EVERY, 1, RoomId(1), Seq(1));
    assert_eq!(drain(&mut h).len(), 1);
}

fn snapshot(h: &mut Hub, room: RoomId) {
    h.handle_down(
        at(0),
        DownMsg::Snapshot {
            room,
            state: Box::new(RoomState::new(room)),
            recent: vec![],
        },
    );
}

fn upstream(h: &mut Hub) -> Vec<UpMsg> {
    std::iter::from_fn(|| h.poll_upstream()).collect()
}

#[test]
fn a_repeated_join_is_answered_once_and_rooms_per_client_are_capped() {
    let mut h = Hub::new(Settings {
        rooms_per_client: 2,
        ..Settings::default()
    });
    h.handle_upstream_up(at(0));
    h.handle_client_up(at(0), 1, SessionId(1), UserId(7));
    snapshot(&mut h, RoomId(1));
    h.handle_join(at(0), 1, RoomId(1), None);
    snapshot(&mut h, RoomId(1));
    drain(&mut h);
    for _ in 0..100 {
        h.handle_join(at(1), 1, RoomId(1), None);
    }
    assert!(
        drain(&mut h).is_empty(),
        "a room already followed is not served again"
    );
    h.handle_join(at(1), 1, RoomId(2), None);
    h.handle_join(at(1), 1, RoomId(3), None);
    let refused = drain(&mut h)
        .into_iter()
        .filter(|o| matches!(o, Output::Client(1, Out::Reliable(_))))
        .count();
    assert_eq!(refused, 1, "the third room is refused");
    assert_eq!(h.rooms.len(), 2);
}

#[test]
fn membership_is_reconciled_on_a_new_link_not_replayed() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    h.handle_client_up(at(0), 1, SessionId(1), UserId(7));
    h.handle_client_up(at(0), 2, SessionId(2), UserId(8));
    h.handle_join(at(0), 1, RoomId(1), None);
    h.handle_join(at(0), 2, RoomId(1), None);
    let first = upstream(&mut h);
    assert_eq!(first.len(), 3, "subscribe and two presences: {first:?}");
    // The link drops; meanwhile user 8 leaves and user 7 joins room 2.
    h.handle_upstream_down(at(1));
    h.handle_leave(at(2), 2, RoomId(1));
    h.handle_join(at(2), 1, RoomId(2), None);
    assert!(
        upstream(&mut h).is_empty(),
        "nothing goes up while the link is down"
    );
    h.handle_upstream_up(at(3));
    let again = upstream(&mut h);
    let online: Vec<(RoomId, UserId)> = (again.iter())
        .filter_map(|m| match m {
            UpMsg::Presence {
                room,
                user,
                online: true,
            } => Some((*room, *user)),
            _ => None,
        })
        .collect();
    assert_eq!(online, vec![(RoomId(1), UserId(7)), (RoomId(2), UserId(7))]);
    assert!(
        !again
            .iter()
            .any(|m| matches!(m, UpMsg::Presence { online: false, .. })),
        "no stale offline from the old link: {again:?}"
    );
    let subs = again
        .iter()
        .filter(|m| matches!(m, UpMsg::Subscribe { .. }))
        .count();
    assert_eq!(subs, 2);
}

#[test]
fn membership_changes_wait_for_the_link_and_are_never_dropped() {
    let mut h = Hub::new(Settings::default());
    h.handle_upstream_up(at(0));
    h.handle_client_up(at(0), 1, SessionId(1), UserId(7));
    for r in 0..10_000 {
        h.handle_join(at(0), 1, RoomId(r), None);
    }
    // Nothing is taken for a while (a slow link): it all waits here.
    assert!(h.has_upstream());
    let subs = upstream(&mut h)
        .into_iter()
        .filter(|m| matches!(m, UpMsg::Subscribe { .. }))
        .count();
    assert_eq!(subs, 16, "only the rooms the client may follow");
    h.handle_client_gone(at(1), 1, true);
    let gone = upstream(&mut h);
    let unsubs = gone
        .iter()
        .filter(|m| matches!(m, UpMsg::Unsubscribe { .. }))
        .count();
    let offline = (gone.iter())
        .filter(|m| matches!(m, UpMsg::Presence { online: false, .. }))
        .count();
    assert_eq!((unsubs, offline), (16, 16));
}

#[test]
fn waiting_actions_are_bounded_and_leave_with_their_client() {
    let mut h = Hub::new(Settings {
        pending_per_client: 3,
        ..Settings::default()
    });
    let s = SessionId(1);
    h.handle_client_up(at(0), 1, s, UserId(7));
    // The origin is out of reach: actions wait.
    for n in 1..=5 {
        h.handle_action(at(0), 1, viewer(7), gift(s, n, 1), false);
    }
    assert_eq!(h.pending(), 3);
    let throttled = drain(&mut h)
        .into_iter()
        .filter(|o| matches!(o, Output::Client(1, Out::Datagram(_))))
        .count();
    assert_eq!(throttled, 2, "the two past the bound are answered");
    h.handle_client_gone(at(1), 1, true);
    assert_eq!(
        h.pending(),
        0,
        "dropped with the client; the SDK resends on resume"
    );
    h.handle_upstream_up(at(2));
    assert!(upstream(&mut h).is_empty());
}
