//! The session on a virtual clock, no sockets: each test is a story told to
//! a [`Harness`] that plays the driver (feed an input, run the timers,
//! drain what the session asks) and a relay or two.

use std::net::SocketAddr;

use net::token::{Claims, TokenKey};
use protocol::{EventKind, GiftId, UserId};

use std::time::{Duration, Instant};

use protocol::message::{ClientMsg, ErrorCode, ServerMsg};
use protocol::{Action, ActionId, Outcome, RoomId, RoomState, Seq, ServerTime, SessionId};

use super::*;
use crate::config::Config;
use crate::error::Error;
use crate::event::Continuity;
use crate::event::{Acked, ClientEvent, RelayInfo};
use crate::outcome::Outcome as AppOutcome;
use crate::retry::Path;
use crate::time::virtual_clock::t0;
use crate::token::TokenProvider;

mod standby;

const ROOM: RoomId = RoomId(1);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn relay(port: u16) -> RelayInfo {
    RelayInfo {
        addr: addr(port),
        name: format!("relay-{port}"),
        region: "test".into(),
    }
}

fn link(gen: u64, port: u16) -> Link {
    Link {
        gen,
        relay: relay(port),
    }
}

/// The wall clock the tests start at (seconds since the epoch).
const UNIX_START: u64 = 1_800_000_000;

fn token(expires: u64) -> Vec<u8> {
    TokenKey::new(b"test secret").mint(&Claims::client(UserId(9), Vec::new(), expires))
}

fn ev(seq: u64) -> protocol::Event {
    let kind = match seq {
        1 => EventKind::Opened { seats: 2 },
        _ => EventKind::Chat {
            from: UserId(1),
            text: seq.to_string(),
        },
    };
    protocol::Event {
        seq: Seq(seq),
        at: ServerTime(seq),
        cause: None,
        kind,
    }
}

fn state_at(seq: u64) -> RoomState {
    let mut s = RoomState::new(ROOM);
    for n in 1..=seq {
        s.apply(&ev(n)).expect("in order");
    }
    s
}

/// Events of the room, as the relay sends them.
fn events(events: Vec<protocol::Event>) -> ServerMsg {
    ServerMsg::Events { room: ROOM, events }
}

fn id(n: u64) -> ActionId {
    ActionId {
        session: SessionId(7),
        n,
    }
}

fn gift(n: u64) -> Command {
    Command::Act {
        id: id(n),
        room: ROOM,
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
        deadline: None,
    }
}

fn applied(n: u64, seq: u64) -> ServerMsg {
    ServerMsg::Ack {
        id: id(n),
        outcome: Outcome::Applied { seq: Seq(seq) },
    }
}

/// The driver and the clock, played by the test: a virtual clock that
/// starts at `t0` and moves only when the test says.
struct Harness {
    s: Session,
    t0: Instant,
    now: Instant,
    sent: Vec<Transmit>,
    events: Vec<Event>,
}

impl Harness {
    /// A session on relay :1 (connection 1), relays :1, :2, :3 ranked in
    /// that order.
    fn new(config: Config, token: Vec<u8>) -> Harness {
        let setup = Setup {
            session: SessionId(7),
            token,
            ranking: vec![addr(1), addr(2), addr(3)],
            first: link(1, 1),
            unix_now: Duration::from_secs(UNIX_START),
        };
        let t0 = t0();
        let mut h = Harness {
            s: Session::new(&config, setup, t0),
            t0,
            now: t0,
            sent: Vec::new(),
            events: Vec::new(),
        };
        h.step();
        h
    }

    fn plain() -> Harness {
        Harness::new(Config::default(), token(UNIX_START + 3600))
    }

    /// `ms` milliseconds after the session's start.
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// What the driver does after every input: the timers, then drain.
    fn step(&mut self) {
        self.s.handle_timeout(self.now);
        while let Some(t) = self.s.poll_transmit() {
            self.sent.push(t);
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    /// Let `d` pass, waking at every timeout on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..100_000 {
            match self.s.poll_timeout() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => break,
            }
            self.step();
        }
        self.now = end;
        self.step();
    }

    fn command(&mut self, c: Command) {
        self.s.handle_command(self.now, c);
        self.step();
    }

    fn feed(&mut self, gen: u64, path: Path, m: ServerMsg) {
        self.s.handle_msg(self.now, gen, path, m);
        self.step();
    }

    fn closed(&mut self, gen: u64, code: Option<ErrorCode>) {
        let reason = "lost".to_string();
        self.s.handle_closed(self.now, gen, reason, code);
        self.step();
    }

    fn connected(&mut self, r: Result<Link, Error>) {
        self.s.handle_connected(self.now, r);
        self.step();
    }

    fn token(&mut self, r: Result<Vec<u8>, String>) {
        self.s.handle_token(self.now, r);
        self.step();
    }

    /// Join the room and answer with its state at `seq`.
    fn joined_at(&mut self, seq: u64) {
        self.command(Command::Join { room: ROOM });
        let state = Box::new(state_at(seq));
        self.feed(1, Path::Stream, ServerMsg::Snapshot { room: ROOM, state });
        self.take();
    }

    /// Everything asked and told so far, forgotten.
    fn take(&mut self) -> (Vec<Transmit>, Vec<Event>) {
        (
            std::mem::take(&mut self.sent),
            std::mem::take(&mut self.events),
        )
    }

    /// Messages sent so far (on any connection, by any path), not taken.
    fn messages(&self) -> Vec<(u64, Path, &ClientMsg)> {
        (self.sent.iter())
            .filter_map(|t| match t {
                Transmit::Datagram { gen, msg } => Some((*gen, Path::Datagram, msg)),
                Transmit::Reliable { gen, msg } => Some((*gen, Path::Stream, msg)),
                _ => None,
            })
            .collect()
    }

    /// How action `n` went out so far: connection and path of each send.
    fn sends_of(&self, n: u64) -> Vec<(u64, Path)> {
        (self.messages().into_iter())
            .filter(|(_, _, m)| matches!(m, ClientMsg::Action(a) if a.id == id(n)))
            .map(|(gen, path, _)| (gen, path))
            .collect()
    }

    /// The orders (everything but messages) so far.
    fn orders(&self) -> Vec<&Transmit> {
        (self.sent.iter())
            .filter(|t| !matches!(t, Transmit::Datagram { .. } | Transmit::Reliable { .. }))
            .collect()
    }

    fn client_events(&self) -> Vec<&ClientEvent> {
        (self.events.iter())
            .filter_map(|e| match e {
                Event::Client(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn answer(&self, n: u64) -> Option<&Result<Acked, Error>> {
        self.events.iter().find_map(|e| match e {
            Event::Answer { id: i, result } if *i == id(n) => Some(result),
            _ => None,
        })
    }
}

#[test]
fn a_session_starts_connected_and_pings_at_once() {
    let mut h = Harness::plain();
    assert!(matches!(
        h.client_events()[..],
        [ClientEvent::Connected { relay: ref r }] if *r == relay(1)
    ));
    let pings = |h: &Harness| {
        (h.messages().iter())
            .filter(|(_, _, m)| matches!(m, ClientMsg::Ping { .. }))
            .count()
    };
    assert_eq!(pings(&h), 1, "the first clock exchange goes out at once");
    h.take();
    // Pongs sample the clock: an offset for the app, and stamps on actions.
    h.advance(Duration::from_millis(10));
    h.feed(
        1,
        Path::Datagram,
        ServerMsg::Pong {
            nonce: 1,
            origin_time: ServerTime(5_000_000),
        },
    );
    assert!(h.events.iter().any(|e| matches!(e, Event::Offset(_))));
    assert_eq!(
        h.s.origin_time(h.at(10)),
        Some(ServerTime(5_005_000)),
        "the pong's time at the exchange's midpoint"
    );
    // Fast pings until the estimate's window is full, 100 ms apart.
    h.take();
    h.advance(Duration::from_millis(100));
    assert_eq!(pings(&h), 1);
}

#[test]
fn a_gift_unanswered_by_datagram_falls_back_to_the_stream_once() {
    let mut h = Harness::plain();
    h.joined_at(2);
    // The connection lost a packet lately: every copy goes.
    h.s.handle_path_loss(h.now);
    h.command(gift(1));
    assert_eq!(h.sends_of(1), vec![(1, Path::Datagram)], "at once");
    h.advance(Duration::from_millis(8));
    assert_eq!(
        h.sends_of(1),
        vec![(1, Path::Datagram); 2],
        "and a copy 8 ms later"
    );
    h.advance(Duration::from_millis(8));
    assert_eq!(
        h.sends_of(1),
        vec![(1, Path::Datagram); 3],
        "and another 16 ms after the first, past a burst of losses"
    );
    h.advance(Duration::from_millis(16));
    assert_eq!(
        h.sends_of(1),
        vec![(1, Path::Datagram); 4],
        "and a third 32 ms after the first, past a long burst"
    );
    // No answer within the timeout (250 ms before any sample): the stream.
    h.advance(Duration::from_millis(232));
    assert_eq!(h.sends_of(1).last(), Some(&(1, Path::Stream)));
    assert_eq!(h.sends_of(1).len(), 5);
    assert_eq!(h.s.stats().fallbacks, 1);
    h.advance(Duration::from_millis(20));
    h.feed(1, Path::Stream, applied(1, 3));
    let acked = h.answer(1).expect("answered").clone().expect("applied");
    assert_eq!(acked.outcome, AppOutcome::Applied { seq: Seq(3) });
    assert_eq!(acked.latency, Duration::from_millis(284));
    // Answered: nothing more goes out for it.
    h.advance(Duration::from_secs(10));
    assert_eq!(h.sends_of(1).len(), 5);
}

#[test]
fn a_missing_seq_is_repaired_by_a_resync() {
    let mut h = Harness::plain();
    h.joined_at(3);
    // Event 5 arrives, 4 does not.
    h.feed(1, Path::Datagram, events(vec![ev(5)]));
    let resyncs = |h: &Harness| {
        (h.messages().into_iter())
            .filter_map(|(gen, path, m)| match m {
                ClientMsg::Resync { room, from } => Some((gen, path, *room, *from)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // A little reordering is normal: nothing asked within the tolerance.
    h.advance(Duration::from_millis(4));
    assert!(resyncs(&h).is_empty());
    h.advance(Duration::from_millis(2));
    assert_eq!(resyncs(&h), vec![(1, Path::Stream, ROOM, Seq(4))]);
    assert_eq!(h.s.stats().resyncs, 1);
    h.take();
    // The answer fills the gap; the held event follows it.
    h.feed(1, Path::Stream, events(vec![ev(4)]));
    let [Event::Room { state, updates, .. }] = &h.events[..] else {
        panic!("one room update: {:?}", h.events);
    };
    assert_eq!(state.seq, Seq(5));
    assert_eq!(updates.len(), 2, "event 4, then the held 5");
    h.advance(Duration::from_secs(1));
    assert!(resyncs(&h).is_empty(), "repaired: asked no more");
}

#[test]
fn when_the_relay_dies_the_session_resumes_on_the_next_with_nothing_lost() {
    let mut h = Harness::plain();
    h.joined_at(2);
    h.command(gift(1));
    h.take();
    // The connection to relay :1 dies.
    h.advance(Duration::from_millis(30));
    h.closed(1, None);
    assert!(matches!(
        h.client_events()[..],
        [ClientEvent::Moving { ref from, goaway: false }] if *from == relay(1)
    ));
    // It closes, and the next round tries :2, :3, the dead one last.
    let token = token(UNIX_START + 3600);
    assert_eq!(
        h.orders(),
        vec![
            &Transmit::Close {
                gen: 1,
                code: ErrorCode::Normal,
                reason: "lost",
                finish: false
            },
            &Transmit::Connect {
                gen: 2,
                relays: vec![addr(2), addr(3), addr(1)],
                token
            }
        ]
    );
    h.take();
    // Nothing is sent while there is no connection.
    h.advance(Duration::from_millis(300));
    assert!(h.messages().is_empty());
    h.connected(Ok(link(2, 2)));
    // The room resumes from its seq; the unanswered gift goes again, once,
    // on the new stream.
    let joins: Vec<_> = (h.messages().into_iter())
        .filter(|(_, _, m)| matches!(m, ClientMsg::Join { .. }))
        .collect();
    assert_eq!(
        joins,
        vec![(
            2,
            Path::Stream,
            &ClientMsg::Join {
                room: ROOM,
                since: Some(Seq(2))
            }
        )]
    );
    assert_eq!(h.sends_of(1), vec![(2, Path::Stream)]);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::Relay(r) if *r == relay(2))));
    // The room answers with what it missed: gap-free.
    h.advance(Duration::from_millis(5));
    h.feed(2, Path::Stream, events(vec![ev(3)]));
    let reconnected = (h.client_events().into_iter()).find_map(|e| match e {
        ClientEvent::Reconnected {
            relay: r,
            continuity,
            took,
        } => Some((r.clone(), *continuity, *took)),
        _ => None,
    });
    assert_eq!(
        reconnected,
        Some((relay(2), Continuity::GapFree, Duration::from_millis(305)))
    );
    h.feed(2, Path::Stream, applied(1, 3));
    assert!(matches!(h.answer(1), Some(Ok(_))));
    assert_eq!(h.sends_of(1).len(), 1, "resent once");
    // A late message from the dead connection is ignored.
    h.take();
    h.feed(1, Path::Stream, events(vec![ev(4)]));
    assert!(h.events.is_empty());
    assert_eq!(h.s.stats().moves, 1);
}

#[test]
fn when_no_relay_answers_it_tries_again_after_a_backoff() {
    let mut h = Harness::plain();
    h.closed(1, None);
    h.take();
    h.connected(Err(Error::Unreachable("all down".into())));
    assert!(h.orders().is_empty(), "not at once");
    // 200 ms plus jitter below 200 ms.
    h.advance(Duration::from_millis(400));
    assert!(matches!(h.orders()[..], [Transmit::Connect { gen: 3, .. }]));
}

#[test]
fn a_goaway_moves_to_the_alternative_before_leaving_and_says_bye() {
    let mut h = Harness::plain();
    h.command(gift(1));
    h.take();
    h.feed(
        1,
        Path::Stream,
        ServerMsg::GoAway {
            alternatives: vec![addr(3).to_string()],
        },
    );
    assert!(matches!(
        h.client_events()[..],
        [ClientEvent::Moving { goaway: true, .. }]
    ));
    // The alternative first, the relay being left last; it stays open.
    assert!(matches!(
        h.orders()[..],
        [Transmit::Connect { gen: 2, ref relays, .. }] if *relays == vec![addr(3), addr(2), addr(1)]
    ));
    h.take();
    // Make before break: the old connection still delivers.
    h.feed(1, Path::Stream, applied(1, 1));
    assert!(matches!(h.answer(1), Some(Ok(_))));
    h.connected(Ok(link(2, 3)));
    let byes: Vec<_> = (h.messages().into_iter())
        .filter(|(_, _, m)| matches!(m, ClientMsg::Bye))
        .collect();
    assert_eq!(byes, vec![(1, Path::Stream, &ClientMsg::Bye)]);
    assert!(h.orders().contains(&&Transmit::Close {
        gen: 1,
        code: ErrorCode::Normal,
        reason: "moved",
        finish: true,
    }));
    // No room to wait for: reconnected at once.
    assert!(h.client_events().iter().any(|e| matches!(
        e,
        ClientEvent::Reconnected { relay: r, continuity: Continuity::GapFree, .. } if *r == relay(3)
    )));
    assert_eq!(h.s.relay(), Some(&relay(3)));
}

fn with_provider() -> Config {
    Config {
        token_provider: Some(TokenProvider::new(|| async { Ok(Vec::new()) })),
        ..Config::default()
    }
}

#[test]
fn a_refused_token_is_fetched_afresh_and_the_session_resumes() {
    let mut h = Harness::new(with_provider(), token(UNIX_START + 3600));
    h.joined_at(2);
    h.command(gift(1));
    h.take();
    h.closed(1, Some(ErrorCode::TokenExpired));
    // No connection attempt with the spent token: the provider first.
    assert_eq!(
        h.orders()[1..],
        [&Transmit::FetchToken],
        "after closing :1: {:?}",
        h.orders()
    );
    h.take();
    h.advance(Duration::from_millis(50));
    let fresh = token(UNIX_START + 7200);
    h.token(Ok(fresh.clone()));
    assert!(matches!(
        h.orders()[..],
        [Transmit::Connect { gen: 2, ref token, .. }] if *token == fresh
    ));
    h.take();
    h.connected(Ok(link(2, 2)));
    assert_eq!(h.sends_of(1), vec![(2, Path::Stream)]);
    h.feed(2, Path::Stream, events(vec![]));
    assert!(h.client_events().iter().any(|e| matches!(
        e,
        ClientEvent::Reconnected {
            continuity: Continuity::GapFree,
            ..
        }
    )));
    assert!(!h
        .client_events()
        .iter()
        .any(|e| matches!(e, ClientEvent::Failed { .. })));
}

#[test]
fn without_a_provider_an_expired_token_ends_the_session() {
    let mut h = Harness::plain();
    h.command(gift(1));
    h.take();
    h.closed(1, Some(ErrorCode::TokenExpired));
    assert!(matches!(
        h.answer(1),
        Some(Err(Error::Unresolved { cause, .. })) if matches!(**cause, Error::Refused { .. })
    ));
    assert!(matches!(
        h.client_events()[..],
        [ClientEvent::Moving { .. }, ClientEvent::Failed { .. }]
    ));
    assert!(!h
        .orders()
        .iter()
        .any(|t| matches!(t, Transmit::Connect { .. })));
    // New calls fail at once.
    h.take();
    h.command(gift(2));
    assert!(matches!(h.answer(2), Some(Err(Error::Unresolved { .. }))));
}

#[test]
fn a_token_is_renewed_ahead_of_its_expiry_on_the_live_connection() {
    // Two minutes left: renewed 30 s before.
    let mut h = Harness::new(with_provider(), token(UNIX_START + 120));
    h.advance(Duration::from_secs(89));
    assert!(!h.orders().contains(&&Transmit::FetchToken));
    h.advance(Duration::from_secs(1));
    assert!(h.orders().contains(&&Transmit::FetchToken));
    h.take();
    let fresh = token(UNIX_START + 3600);
    h.token(Ok(fresh.clone()));
    let renew = ClientMsg::Renew { token: fresh };
    assert!(h.messages().contains(&(1, Path::Stream, &renew)));
    assert_eq!(h.s.stats().renewals, 1);
}

#[test]
fn close_says_bye_and_answers_every_waiting_action() {
    let mut h = Harness::plain();
    h.command(gift(1));
    h.take();
    h.command(Command::Close);
    assert!(h.s.is_closed());
    assert_eq!(h.messages(), vec![(1, Path::Stream, &ClientMsg::Bye)]);
    assert!(matches!(
        h.answer(1),
        Some(Err(Error::Unresolved { cause, .. })) if matches!(**cause, Error::Closed)
    ));
    assert_eq!(h.s.poll_timeout(), None);
}
