//! The client's session, as a network-free state machine (quinn-proto's
//! shape): it decides everything — which relay, when to move, what to send
//! again, when to ping, rejoin, resync, renew the token and report — and
//! does no IO. It never reads a clock: every input takes `now`
//! ([`LocalTime`]).
//!
//! The driver ([`crate::driver`]) owns the sockets, the streams, the token
//! provider's future and one timer, and loops:
//!
//! 1. feed what happened: [`Session::handle_command`] (the app),
//!    [`Session::handle_msg`] / [`Session::handle_closed`] (a connection),
//!    [`Session::handle_connected`] (a connection attempt's result),
//!    [`Session::handle_token`] (the provider's answer), then
//!    [`Session::handle_timeout`] (what fell due);
//! 2. drain [`Session::poll_transmit`] (messages to send, as a datagram or
//!    on the control stream, and orders: connect, close, fetch a token) and
//!    then [`Session::poll_event`] (answers to the app's waiters, room
//!    updates, client events), in that order;
//! 3. sleep until [`Session::poll_timeout`] or the next input.
//!
//! Connections are named by a generation number (`gen`): the session orders
//! [`Transmit::Connect`] with a fresh one and the driver reports its result
//! under it; messages from a connection the session has let go are ignored.
//!
//! The pure parts it is made of: [`Mirror`] (a room's state, gaps,
//! resyncs), [`Retry`] (when and how actions go again, pacing, deadlines),
//! [`OriginEstimate`] (origin time), [`Reporter`] (the periodic report) and
//! [`crate::token`] (when to renew). Relay moves and tokens are in
//! [`moves`](self) (`session/moves.rs`).

mod moves;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use protocol::message::{ActionMsg, ClientMsg, ErrorCode, ServerMsg};
use protocol::{Action, ActionId, Class, Outcome, RoomId, RoomState, Seq, ServerTime, SessionId};

use crate::config::Config;
use crate::error::Error;
use crate::event::{Acked, ClientEvent, RelayInfo, Stats};
use crate::mirror::{Mirror, Update};
use crate::report::Reporter;
use crate::retry::{Expiry, Path, Policy, Retry, Rtt};
use crate::time::{LocalTime, OriginEstimate};

/// Most actions waiting for an outcome at once (well inside the origin's
/// per-session id window).
pub const MAX_IN_FLIGHT: usize = 512;

/// Clock exchanges go this often until a few samples are in…
const PING_FAST: Duration = Duration::from_millis(100);
/// …then this often.
const PING_SLOW: Duration = Duration::from_secs(1);
/// Samples that end the fast pings.
const PING_FAST_SAMPLES: usize = 5;
/// Pings remembered while their pongs are awaited.
const PINGS_KEPT: usize = 32;

/// What the app asks of the session.
#[derive(Debug, Clone)]
pub enum Command {
    /// Follow a room (answered by [`Event::Joined`] or a first
    /// [`Event::Room`]).
    Join {
        /// The room.
        room: RoomId,
    },
    /// Stop following a room.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// Send an action (answered by [`Event::Answer`]).
    Act {
        /// Its id (chosen by the app's handle).
        id: ActionId,
        /// Its room.
        room: RoomId,
        /// What it does.
        action: Action,
        /// How long it may wait for its outcome; `None`: the client's.
        deadline: Option<Duration>,
    },
    /// Say goodbye and stop: every waiting action is answered, the
    /// connections close; the session takes no more input.
    Close,
}

/// A connection the driver holds, as the session knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its generation (from [`Transmit::Connect`], or the first one's).
    pub gen: u64,
    /// The relay at its end.
    pub relay: RelayInfo,
}

/// What the driver must do on the network.
#[derive(Debug, Clone, PartialEq)]
pub enum Transmit {
    /// Send `msg` as a datagram on connection `gen` (consecutive ones may
    /// share a packet).
    Datagram {
        /// The connection.
        gen: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Send `msg` on connection `gen`'s reliable control stream.
    Reliable {
        /// The connection.
        gen: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Open connection `gen`: try `relays` in order (stopping at a refusal
    /// every relay would make, [`Error::refused_everywhere`]), say hello
    /// with `token`, and report the result to [`Session::handle_connected`].
    Connect {
        /// The new connection's generation.
        gen: u64,
        /// Relays, best first.
        relays: Vec<SocketAddr>,
        /// The token to present.
        token: Vec<u8>,
    },
    /// Give up the connection attempt in progress.
    StopConnecting,
    /// Close connection `gen` and forget it.
    Close {
        /// The connection.
        gen: u64,
        /// The close code.
        code: ErrorCode,
        /// The close reason.
        reason: &'static str,
        /// Finish the control stream first (lets a `Bye` just written
        /// reach the relay).
        finish: bool,
    },
    /// Ask the token provider for a fresh token; the answer goes to
    /// [`Session::handle_token`].
    FetchToken,
    /// Forget the fetch in progress.
    StopFetching,
}

/// What the session tells the app.
#[derive(Debug, Clone)]
pub enum Event {
    /// A client-wide event.
    Client(ClientEvent),
    /// The client is on this relay now.
    Relay(RelayInfo),
    /// An action's answer: its outcome, or why it has none.
    Answer {
        /// The action.
        id: ActionId,
        /// Its outcome, or the error.
        result: Result<Acked, Error>,
    },
    /// A room's mirrored state moved: its new state and the updates that
    /// led there, in order. Whoever waits to join it is answered with it.
    Room {
        /// The room.
        room: RoomId,
        /// Its state now.
        state: Box<RoomState>,
        /// What changed.
        updates: Vec<Update>,
    },
    /// Whoever waits to join `room` is answered: `Ok` with the room as it
    /// stands (it already has a state), or the error.
    Joined {
        /// The room.
        room: RoomId,
        /// Joined, or why not.
        result: Result<(), Error>,
    },
    /// The room is no longer followed (left, or the join was refused): its
    /// channels can go.
    Forget {
        /// The room.
        room: RoomId,
    },
    /// A new estimate of `origin - local` (µs).
    Offset(i64),
}

/// The settings the session decides by (from [`Config`]).
#[derive(Debug, Clone)]
struct Settings {
    datagrams: bool,
    action_deadline: Duration,
    /// Whether a token provider exists (the driver calls it).
    provider: bool,
}

/// The app's session across relays: see the module docs.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    id: SessionId,
    /// Followed rooms' mirrors.
    rooms: BTreeMap<RoomId, Mirror>,
    /// Actions waiting for an outcome: since when, and their class.
    waiters: BTreeMap<ActionId, (LocalTime, Class)>,
    /// The periodic report of what this client felt (`None`: not reporting).
    reporter: Option<Reporter>,
    retry: Retry,
    /// The estimate of origin time (afresh on every connection).
    origin: OriginEstimate,
    /// Pings awaiting their pong: nonce and when each left.
    pings: VecDeque<(u64, LocalTime)>,
    nonce: u64,
    next_ping: LocalTime,
    live: Option<Link>,
    /// The connection being left after a goaway (kept until the new one is up).
    leaving: Option<Link>,
    /// Whether a connection attempt is in progress.
    connecting: bool,
    /// Relays best first.
    ranking: Vec<SocketAddr>,
    /// Relays to try first on the next move (goaway alternatives).
    prefer: Vec<SocketAddr>,
    /// A move in progress.
    resume: Option<Resume>,
    /// The last connection generation handed out.
    gen: u64,
    /// Failed rounds of connection attempts in a row.
    attempts: u32,
    /// When to try connecting again after a failed round.
    retry_at: Option<LocalTime>,
    /// Set when the session was refused for good.
    failed: Option<Error>,
    /// Set by [`Command::Close`].
    closed: bool,
    /// When a broken room may be rejoined again.
    rejoin_at: BTreeMap<RoomId, LocalTime>,
    tokens: moves::Tokens,
    stats: Stats,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

/// A move in progress: when it began and what it waits for.
#[derive(Debug)]
struct Resume {
    started: LocalTime,
    /// Rooms that have not answered their resume join yet.
    waiting: BTreeSet<RoomId>,
    rebuilt: bool,
}

/// How a session starts: on a connection already open.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The session id.
    pub session: SessionId,
    /// The token the first connection was opened with.
    pub token: Vec<u8>,
    /// Relays, best first.
    pub ranking: Vec<SocketAddr>,
    /// The first connection.
    pub first: Link,
    /// The wall clock (since the Unix epoch) at `now`: only to read how
    /// long a token has left.
    pub unix_now: Duration,
}

impl Session {
    /// A session on its first connection at `now`.
    pub fn new(config: &Config, setup: Setup, now: LocalTime) -> Session {
        let rtt = Rtt::new(
            Duration::from_millis(15),
            Duration::from_secs(2),
            Duration::from_millis(250),
        );
        // Copies are datagrams: none when the client takes no datagrams.
        let policy = Policy {
            copy_delay: config.redundancy.filter(|_| config.datagrams),
            datagrams: config.datagrams,
            window: config.action_window,
            seed: setup.session.0,
        };
        let relay = setup.first.relay.clone();
        let mut s = Session {
            settings: Settings {
                datagrams: config.datagrams,
                action_deadline: config.action_deadline,
                provider: config.token_provider.is_some(),
            },
            id: setup.session,
            rooms: BTreeMap::new(),
            waiters: BTreeMap::new(),
            reporter: (config.report_every).map(|every| Reporter::new(now, every)),
            retry: Retry::new(policy, rtt),
            origin: OriginEstimate::new(),
            pings: VecDeque::new(),
            nonce: 0,
            next_ping: now,
            gen: setup.first.gen,
            live: Some(setup.first),
            leaving: None,
            connecting: false,
            ranking: setup.ranking,
            prefer: Vec::new(),
            resume: None,
            attempts: 0,
            retry_at: None,
            failed: None,
            closed: false,
            rejoin_at: BTreeMap::new(),
            tokens: moves::Tokens::new(setup.token, now, setup.unix_now),
            stats: Stats::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.schedule_renewal(now);
        s.event(Event::Client(ClientEvent::Connected {
            relay: relay.clone(),
        }));
        s.event(Event::Relay(relay));
        s
    }

    // ---- outputs ----

    /// The next thing to do on the network.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing to tell the app (drain after [`Session::poll_transmit`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<LocalTime> {
        if self.closed {
            return None;
        }
        let (tol, retry) = (self.reorder_tolerance(), self.resync_retry());
        let mirrors = (self.rooms.values())
            .filter_map(|m| m.poll_timeout(tol, retry))
            .min();
        // Without a connection nothing is sent: only deadlines matter.
        let actions = match self.live {
            Some(_) => self.retry.poll_timeout(),
            None => self.retry.poll_deadline(),
        };
        let renew = self.tokens.renew_at.filter(|_| !self.tokens.fetching);
        let report = (self.reporter.as_ref())
            .filter(|_| self.live.is_some())
            .map(Reporter::poll_timeout);
        [
            actions,
            mirrors,
            Some(self.next_ping),
            self.retry_at,
            renew,
            report,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What the client had to do to keep up so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether [`Command::Close`] came: the driver can stop.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The relay the session is on, if it is on one.
    pub fn relay(&self) -> Option<&RelayInfo> {
        self.live.as_ref().map(|l| &l.relay)
    }

    /// The estimate of origin time at `now`, once there is one.
    pub fn origin_time(&self, now: LocalTime) -> Option<ServerTime> {
        self.origin.at(now)
    }

    fn transmit(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    /// Send on the live connection (nothing without one).
    fn send(&mut self, path: Path, msg: ClientMsg) {
        let Some(live) = &self.live else { return };
        let gen = live.gen;
        self.transmit(match path {
            Path::Datagram => Transmit::Datagram { gen, msg },
            Path::Stream => Transmit::Reliable { gen, msg },
        });
    }

    fn send_reliable(&mut self, msg: ClientMsg) {
        self.send(Path::Stream, msg);
    }

    // ---- inputs ----

    /// The app asks something.
    pub fn handle_command(&mut self, now: LocalTime, c: Command) {
        if self.closed {
            return;
        }
        if let Command::Close = c {
            return self.close();
        }
        if let Some(e) = &self.failed {
            let e = e.clone();
            match c {
                Command::Join { room } => self.event(Event::Joined {
                    room,
                    result: Err(e),
                }),
                Command::Act { id, .. } => self.answer(
                    id,
                    Err(Error::Unresolved {
                        id,
                        cause: Box::new(e),
                    }),
                ),
                Command::Leave { .. } | Command::Close => {}
            }
            return;
        }
        match c {
            Command::Join { room } => self.join(room),
            Command::Leave { room } => {
                if self.rooms.remove(&room).is_some() {
                    self.send_reliable(ClientMsg::Leave { room });
                    self.event(Event::Forget { room });
                }
            }
            Command::Act {
                id,
                room,
                action,
                deadline,
            } => self.act(now, id, room, action, deadline),
            Command::Close => {}
        }
    }

    fn join(&mut self, room: RoomId) {
        if let Some(mirror) = self.rooms.get(&room) {
            if mirror.state().is_some() {
                self.event(Event::Joined {
                    room,
                    result: Ok(()),
                });
            }
            // Otherwise the joiner waits for the room's first state.
            return;
        }
        self.rooms.insert(room, Mirror::new());
        self.send_reliable(ClientMsg::Join { room, since: None });
    }

    fn act(
        &mut self,
        now: LocalTime,
        id: ActionId,
        room: RoomId,
        action: Action,
        deadline: Option<Duration>,
    ) {
        if self.retry.len() >= MAX_IN_FLIGHT {
            return self.answer(id, Err(Error::Busy { id }));
        }
        let sent_at = self.origin.at(now).unwrap_or(ServerTime::ZERO);
        let class = action.class();
        let msg = ActionMsg {
            id,
            room,
            sent_at,
            action,
        };
        self.waiters.insert(id, (now, class));
        let deadline = now + deadline.unwrap_or(self.settings.action_deadline);
        // It goes out from `handle_timeout`, right after this command, as
        // the window and the pacing allow.
        self.retry.handle_send(now, msg, deadline);
    }

    /// Every waiting action is answered, the connections close.
    fn close(&mut self) {
        self.closed = true;
        if let Some(live) = self.live.take() {
            self.transmit(Transmit::Reliable {
                gen: live.gen,
                msg: ClientMsg::Bye,
            });
            self.close_link(live.gen, "bye", false);
        }
        if let Some(old) = self.leaving.take() {
            self.close_link(old.gen, "bye", false);
        }
        self.answer_all(Error::Closed);
    }

    fn close_link(&mut self, gen: u64, reason: &'static str, finish: bool) {
        self.transmit(Transmit::Close {
            gen,
            code: ErrorCode::Normal,
            reason,
            finish,
        });
    }

    fn answer(&mut self, id: ActionId, result: Result<Acked, Error>) {
        self.event(Event::Answer { id, result });
    }

    /// Every waiting action leaves unresolved, for `cause`.
    fn answer_all(&mut self, cause: Error) {
        for id in std::mem::take(&mut self.waiters).into_keys() {
            let cause = Box::new(cause.clone());
            self.answer(id, Err(Error::Unresolved { id, cause }));
        }
    }

    /// A message from connection `gen`, by datagram or on a stream (`path`).
    pub fn handle_msg(&mut self, now: LocalTime, gen: u64, path: Path, m: ServerMsg) {
        if self.closed || !self.is_current(gen) {
            return;
        }
        let reliable = path == Path::Stream;
        match m {
            ServerMsg::Events { room, events } => {
                let resumed = reliable && self.resume_waits_for(room);
                self.room_updates(room, |m| m.handle_events(now, events));
                if resumed {
                    self.resume_answered(now, room, false);
                }
            }
            ServerMsg::Snapshot { room, state } => {
                self.stats.snapshots += 1;
                self.room_updates(room, |m| m.handle_snapshot(now, *state));
                if self.resume_waits_for(room) {
                    self.resume_answered(now, room, true);
                }
            }
            ServerMsg::Head { room, seq } => {
                if let Some(m) = self.rooms.get_mut(&room) {
                    m.handle_head(now, seq);
                }
            }
            ServerMsg::Ack { id, outcome } => self.handle_ack(now, id, outcome),
            // Not an outcome: the action waits as told, then goes again.
            ServerMsg::Throttled { id, retry_after_ms } => {
                let wait = Duration::from_millis(retry_after_ms.into());
                if self.retry.handle_throttled(now, id, wait) {
                    self.stats.throttled += 1;
                }
            }
            ServerMsg::Pong { nonce, origin_time } => self.handle_pong(now, nonce, origin_time),
            ServerMsg::JoinFailed { room, reason } => {
                if self.rooms.remove(&room).is_some() {
                    let result = Err(Error::JoinRefused(reason));
                    self.event(Event::Joined { room, result });
                    self.event(Event::Forget { room });
                }
            }
            ServerMsg::Upstream { connected } => {
                self.event(Event::Client(ClientEvent::Upstream { connected }));
            }
            ServerMsg::GoAway { alternatives } => self.handle_goaway(now, &alternatives),
            ServerMsg::Welcome(_) | ServerMsg::Error { .. } => {}
        }
    }

    /// Whether `gen` is the live connection or the one being left.
    fn is_current(&self, gen: u64) -> bool {
        [&self.live, &self.leaving]
            .into_iter()
            .any(|l| l.as_ref().is_some_and(|l| l.gen == gen))
    }

    fn handle_ack(&mut self, now: LocalTime, id: ActionId, outcome: Outcome) {
        self.retry.handle_ack(now, id);
        if let Some((started, class)) = self.waiters.remove(&id) {
            let latency = now - started;
            if let Some(r) = &mut self.reporter {
                r.handle_ack(class, latency);
            }
            let outcome = outcome.into();
            self.answer(
                id,
                Ok(Acked {
                    id,
                    outcome,
                    latency,
                }),
            );
        }
    }

    fn handle_pong(&mut self, now: LocalTime, nonce: u64, origin: ServerTime) {
        let Some(&(_, sent)) = self.pings.iter().find(|(n, _)| *n == nonce) else {
            return;
        };
        self.origin.handle_pong(sent, now, origin);
        if let Some(off) = self.origin.offset() {
            self.event(Event::Offset(off));
        }
    }

    fn room_updates(&mut self, room: RoomId, f: impl FnOnce(&mut Mirror) -> Vec<Update>) {
        let Some(mirror) = self.rooms.get_mut(&room) else {
            return;
        };
        let updates = f(mirror);
        if updates.is_empty() {
            return;
        }
        let Some(state) = mirror.state() else { return };
        let state = Box::new(state.clone());
        self.event(Event::Room {
            room,
            state,
            updates,
        });
    }

    /// What fell due by `now`: connection retries, token fetches, action
    /// deadlines and sends, gap repairs, rejoins, pings and reports. The
    /// driver calls it after every input too.
    pub fn handle_timeout(&mut self, now: LocalTime) {
        if self.closed {
            return;
        }
        self.moves_due(now);
        self.expire_actions(now);
        let mut datagrams = self.send_actions(now);
        self.repair_rooms(now);
        if now >= self.next_ping && self.live.is_some() {
            datagrams.push(self.ping(now));
        }
        if self.live.is_some() {
            let report = (self.reporter.as_mut())
                .and_then(|r| r.poll_report(now, self.origin.offset(), self.origin.rtt()));
            if let Some(report) = report {
                datagrams.push(ClientMsg::Report(report));
            }
        }
        // The stream-only baseline sends everything reliably.
        let path = match self.settings.datagrams {
            true => Path::Datagram,
            false => Path::Stream,
        };
        for m in datagrams {
            self.send(path, m);
        }
    }

    fn expire_actions(&mut self, now: LocalTime) {
        for (id, why) in self.retry.poll_expired(now) {
            if self.waiters.remove(&id).is_some() {
                tracing::debug!(%id, ?why, "action past its deadline");
                self.answer(
                    id,
                    Err(match why {
                        Expiry::Throttled => Error::Throttled { id },
                        Expiry::NoAnswer => Error::TimedOut { id },
                    }),
                );
            }
        }
    }

    /// Actions due: those for the stream go now, the datagrams are returned
    /// (to share packets with the ping and the report).
    fn send_actions(&mut self, now: LocalTime) -> Vec<ClientMsg> {
        // Nothing is sent without a connection (a reconnect resends).
        if self.live.is_none() {
            return Vec::new();
        }
        let mut datagrams = Vec::new();
        for t in self.retry.poll_transmit(now) {
            match t.path {
                Path::Datagram => datagrams.push(ClientMsg::Action(t.msg)),
                Path::Stream => {
                    self.stats.fallbacks += u64::from(t.fallback);
                    self.send_reliable(ClientMsg::Action(t.msg));
                }
            }
        }
        datagrams
    }

    /// Rejoin rooms whose mirror broke, ask for the events of lasting gaps.
    fn repair_rooms(&mut self, now: LocalTime) {
        let (tol, retry) = (self.reorder_tolerance(), self.resync_retry());
        let resyncs: Vec<(RoomId, Seq)> = (self.rooms.iter_mut())
            .filter_map(|(id, m)| m.poll_resync(now, tol, retry).map(|s| (*id, s)))
            .collect();
        // A mirror that met an event it cannot apply follows the room afresh.
        let broken: Vec<RoomId> = (self.rooms.iter())
            .filter(|(_, m)| m.is_broken())
            .map(|(id, _)| *id)
            .filter(|id| self.rejoin_at.get(id).is_none_or(|t| now >= *t))
            .collect();
        for room in broken {
            self.rejoin_at.insert(room, now + retry);
            self.send_reliable(ClientMsg::Join { room, since: None });
        }
        for (room, from) in resyncs {
            self.stats.resyncs += 1;
            self.send_reliable(ClientMsg::Resync { room, from });
        }
    }

    fn ping(&mut self, now: LocalTime) -> ClientMsg {
        self.nonce += 1;
        self.pings.push_back((self.nonce, now));
        if self.pings.len() > PINGS_KEPT {
            self.pings.pop_front();
        }
        // Converge fast, then keep fresh.
        let every = match self.origin.len() < PING_FAST_SAMPLES {
            true => PING_FAST,
            false => PING_SLOW,
        };
        self.next_ping = now + every;
        ClientMsg::Ping { nonce: self.nonce }
    }

    /// How long a gap may last before it is repaired: a little reordering
    /// is normal, a lost packet is not.
    fn reorder_tolerance(&self) -> Duration {
        let srtt = self.retry.rtt().srtt().unwrap_or(Duration::from_millis(20));
        // Whole microseconds, as the estimate was always rounded.
        let quarter = Duration::from_micros(srtt.as_micros() as u64 / 4);
        quarter.clamp(Duration::from_millis(5), Duration::from_millis(50))
    }

    /// How long before a repair (resync or rejoin) is asked again.
    fn resync_retry(&self) -> Duration {
        let rto = Duration::from_micros(self.retry.rtt().rto().as_micros() as u64);
        (rto * 2).max(Duration::from_millis(50))
    }
}
