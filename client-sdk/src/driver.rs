//! The connection driver: one task per client that owns the connections,
//! the token provider's future and one timer, and moves bytes between them
//! and the [`Session`], which decides everything. It selects over the app's
//! requests, the connections' messages, a connection attempt, a standby
//! connection attempt, a token fetch and the session's next timeout; feeds what happened into the session;
//! then carries out what the session asks ([`Transmit`]) and hands its
//! [`Event`]s to the app's handles (replies, room channels, client events).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use protocol::codec::{self, Packer};
use protocol::message::{ClientMsg, ServerMsg};
use protocol::{ActionId, RoomId, RoomState};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::conn::{self, Dial, Incoming, Live, Received};
use crate::error::Error;
use crate::event::Acked;
use crate::mirror::Update;
use crate::retry::Path;
use crate::session::{Command, Event, Link, Session, Setup, Transmit};
use crate::shared::Shared;
use crate::token::{TokenFuture, TokenProvider, TokenResult};

/// From the app's handles to the driver: a command for the session, and
/// who waits for its answer.
pub(crate) struct Request {
    pub command: Command,
    pub reply: Option<Reply>,
}

/// Who waits for a command's answer.
pub(crate) enum Reply {
    /// A join's: the room's channels.
    Join(oneshot::Sender<Result<RoomParts, Error>>),
    /// An action's: its outcome.
    Act(oneshot::Sender<Result<Acked, Error>>),
}

impl Request {
    /// A command nobody waits on.
    pub(crate) fn new(command: Command) -> Request {
        Request {
            command,
            reply: None,
        }
    }
}

/// What a room handle is made of.
pub(crate) struct RoomParts {
    pub state: watch::Receiver<RoomState>,
    pub updates: broadcast::Sender<Update>,
}

/// A followed room's channels to its handles.
struct RoomChannels {
    state: watch::Sender<RoomState>,
    updates: broadcast::Sender<Update>,
}

impl RoomChannels {
    fn new(room: RoomId) -> RoomChannels {
        RoomChannels {
            state: watch::channel(RoomState::new(room)).0,
            // Apps that fall further behind than this see `Lagged` and can
            // read `Room::state()` instead; a deeper buffer costs memory per
            // room per client.
            updates: broadcast::channel(256).0,
        }
    }

    fn parts(&self) -> RoomParts {
        RoomParts {
            state: self.state.subscribe(),
            updates: self.updates.clone(),
        }
    }
}

type Connecting =
    Pin<Box<dyn std::future::Future<Output = Result<(Live, Received), Error>> + Send>>;

/// The task's state: the session, and what it cannot hold (connections,
/// futures, the app's channels and waiting replies).
pub(crate) struct Driver {
    session: Session,
    shared: Arc<Shared>,
    /// How to open a connection (the session says with which token).
    dial: Dial,
    /// Open connections by generation.
    conns: BTreeMap<u64, Live>,
    incoming: Vec<Received>,
    connecting: Option<Connecting>,
    /// A standby connection being opened.
    standby: Option<Connecting>,
    /// Where fresh tokens come from, if anywhere.
    provider: Option<TokenProvider>,
    /// A fetch of a fresh token in progress.
    fetching: Option<TokenFuture>,
    rooms: BTreeMap<RoomId, RoomChannels>,
    /// Who waits to join a room.
    joiners: BTreeMap<RoomId, Vec<oneshot::Sender<Result<RoomParts, Error>>>>,
    /// Who waits for an action's outcome.
    replies: BTreeMap<ActionId, oneshot::Sender<Result<Acked, Error>>>,
    /// The session's start: its origin offsets ([`Event::Offset`]) count
    /// local time from it.
    start: Instant,
    /// Whether the connections have lost packets lately.
    loss: LossWatch,
}

/// quinn's lost-packet counters of the open connections, looked at no more
/// than every [`LossWatch::EVERY`] (reading them takes the connection's
/// lock): a count that grew is a lossy path ([`Session::handle_path_loss`]).
#[derive(Debug, Default)]
struct LossWatch {
    checked_at: Option<Instant>,
    /// Packets lost by each connection (by generation) at the last look.
    lost: BTreeMap<u64, u64>,
}

impl LossWatch {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(50);

    /// Whether any connection lost a packet since the last look.
    fn grew(&mut self, now: Instant, conns: &BTreeMap<u64, Live>) -> bool {
        if self
            .checked_at
            .is_some_and(|t| now.saturating_duration_since(t) < Self::EVERY)
        {
            return false;
        }
        self.checked_at = Some(now);
        self.lost.retain(|gen, _| conns.contains_key(gen));
        let mut grew = false;
        for (gen, live) in conns {
            let lost = live.conn.stats().path.lost_packets;
            let seen = self.lost.entry(*gen).or_insert(0);
            grew |= lost > *seen;
            *seen = lost;
        }
        grew
    }
}

/// What woke the driver.
enum Wake {
    Request(Option<Request>),
    Incoming(u64, Incoming),
    Connected(Result<(Live, Received), Error>),
    Standby(Result<(Live, Received), Error>),
    Token(TokenResult),
    Timer,
}

impl Driver {
    pub(crate) fn new(
        config: Config,
        shared: Arc<Shared>,
        dial: Dial,
        ranking: Vec<std::net::SocketAddr>,
        first: (Live, Received),
    ) -> Driver {
        let (live, rx) = first;
        let start = Instant::now();
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let setup = Setup {
            session: shared.session,
            token: dial.token.clone(),
            ranking,
            first: Link {
                gen: live.gen,
                relay: live.relay.clone(),
            },
            unix_now,
        };
        let session = Session::new(&config, setup, start);
        Driver {
            session,
            shared,
            dial,
            conns: BTreeMap::from([(live.gen, live)]),
            incoming: vec![rx],
            connecting: None,
            standby: None,
            provider: config.token_provider,
            fetching: None,
            rooms: BTreeMap::new(),
            joiners: BTreeMap::new(),
            replies: BTreeMap::new(),
            start,
            loss: LossWatch::default(),
        }
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        self.flush().await;
        while !self.session.is_closed() {
            let woke = self.wait(&mut requests).await;
            let now = Instant::now();
            if self.loss.grew(now, &self.conns) {
                self.session.handle_path_loss(now);
            }
            match woke {
                Wake::Request(None) => self.session.handle_command(now, Command::Close),
                Wake::Request(Some(r)) => self.handle_request(now, r),
                Wake::Incoming(gen, inc) => self.handle_incoming(now, gen, inc),
                Wake::Connected(r) => {
                    self.connecting = None;
                    let r = r.map(|c| self.adopt(c));
                    self.session.handle_connected(now, r);
                }
                Wake::Standby(r) => {
                    self.standby = None;
                    let r = r.map(|c| self.adopt(c));
                    self.session.handle_standby_connected(now, r);
                }
                Wake::Token(r) => {
                    self.fetching = None;
                    self.session.handle_token(now, r.map_err(|e| e.to_string()));
                }
                Wake::Timer => {}
            }
            let now = Instant::now();
            self.session.handle_timeout(now);
            self.flush().await;
        }
        for (_, live) in std::mem::take(&mut self.conns) {
            live.close(protocol::message::ErrorCode::Normal, "bye");
        }
    }

    /// Hold a new connection; the session knows it as the returned link.
    fn adopt(&mut self, (live, rx): (Live, Received)) -> Link {
        let link = Link {
            gen: live.gen,
            relay: live.relay.clone(),
        };
        self.conns.insert(live.gen, live);
        self.incoming.push(rx);
        link
    }

    /// Wait for the next input or the session's timeout.
    async fn wait(&mut self, requests: &mut mpsc::Receiver<Request>) -> Wake {
        let wake = self.session.poll_timeout();
        let incoming = next_incoming(&mut self.incoming);
        let connecting = async {
            match &mut self.connecting {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        let standby = async {
            match &mut self.standby {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        let fetching = async {
            match &mut self.fetching {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = requests.recv() => Wake::Request(r),
            t = fetching => Wake::Token(t),
            i = incoming => match i {
                Some((gen, inc)) => Wake::Incoming(gen, inc),
                None => Wake::Timer,
            },
            r = connecting => Wake::Connected(r),
            r = standby => Wake::Standby(r),
            () = sleep_until(wake) => Wake::Timer,
        }
    }

    fn handle_request(&mut self, now: Instant, r: Request) {
        match (&r.command, r.reply) {
            (Command::Join { room }, Some(Reply::Join(reply))) => {
                self.joiners.entry(*room).or_default().push(reply)
            }
            (Command::Act { id, .. }, Some(Reply::Act(reply))) => {
                self.replies.insert(*id, reply);
            }
            _ => {}
        }
        self.session.handle_command(now, r.command);
    }

    fn handle_incoming(&mut self, now: Instant, gen: u64, inc: Incoming) {
        match inc {
            Incoming::Datagram(d) => {
                for m in codec::unpack::<ServerMsg>(&d) {
                    match m {
                        Ok(m) => self.session.handle_msg(now, gen, Path::Datagram, m),
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed datagram from the relay");
                            break;
                        }
                    }
                }
            }
            Incoming::Control(m) | Incoming::Stream(m) => {
                self.session.handle_msg(now, gen, Path::Stream, m)
            }
            Incoming::Closed(why, code) => self.session.handle_closed(now, gen, why, code),
        }
    }

    /// Carry out what the session asks, then tell the app what it says.
    async fn flush(&mut self) {
        // Consecutive datagrams of one connection share packets.
        let mut batch: Option<(u64, Vec<ClientMsg>)> = None;
        while let Some(t) = self.session.poll_transmit() {
            if let Transmit::Datagram { gen, msg } = t {
                match &mut batch {
                    Some((g, msgs)) if *g == gen => msgs.push(msg),
                    _ => {
                        self.send_datagrams(batch.take());
                        batch = Some((gen, vec![msg]));
                    }
                }
                continue;
            }
            self.send_datagrams(batch.take());
            self.carry_out(t).await;
        }
        self.send_datagrams(batch);
        while let Some(e) = self.session.poll_event() {
            self.tell(e);
        }
        self.shared.stats.store(&self.session.stats());
    }

    async fn carry_out(&mut self, t: Transmit) {
        match t {
            Transmit::Datagram { gen, msg } => self.send_datagrams(Some((gen, vec![msg]))),
            Transmit::Reliable { gen, msg } => {
                let Some(live) = self.conns.get_mut(&gen) else {
                    return;
                };
                if let Err(e) = conn::send_frame(&mut live.ctrl, &msg).await {
                    tracing::debug!(error = %e, "control stream write failed");
                }
            }
            Transmit::Connect { gen, relays, token } => {
                self.dial.token = token;
                let dial = self.dial.clone();
                self.connecting = Some(Box::pin(conn::connect_any(dial, relays, gen)));
            }
            Transmit::StopConnecting => self.connecting = None,
            Transmit::ConnectStandby { gen, relays, token } => {
                let dial = Dial {
                    token,
                    ..self.dial.clone()
                };
                self.standby = Some(Box::pin(conn::connect_any(dial, relays, gen)));
            }
            Transmit::Close {
                gen,
                code,
                reason,
                finish,
            } => {
                if let Some(mut live) = self.conns.remove(&gen) {
                    if finish {
                        let _ = live.ctrl.finish();
                    }
                    live.close(code, reason);
                }
            }
            Transmit::FetchToken => {
                self.fetching = self.provider.as_ref().map(TokenProvider::fetch);
            }
            Transmit::StopFetching => self.fetching = None,
        }
    }

    fn send_datagrams(&mut self, batch: Option<(u64, Vec<ClientMsg>)>) {
        let Some((gen, msgs)) = batch else { return };
        let Some(live) = self.conns.get(&gen) else {
            return;
        };
        let max = live.conn.max_datagram_size().unwrap_or(1200);
        let mut p = Packer::new(max);
        for m in &msgs {
            let _ = p.push(m);
        }
        for d in p.finish() {
            let _ = live.conn.send_datagram(d);
        }
    }

    /// Hand one of the session's events to the app's handles.
    fn tell(&mut self, e: Event) {
        match e {
            Event::Client(e) => drop(self.shared.events.send(e)),
            Event::Relay(r) => drop(self.shared.relay.send_replace(Some(r))),
            Event::Answer { id, result } => {
                if let Some(reply) = self.replies.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Event::Room {
                room,
                state,
                updates,
            } => {
                let ch = (self.rooms.entry(room)).or_insert_with(|| RoomChannels::new(room));
                // State, then updates, then joiners: a joiner's `updates()`
                // (taken once `join` returns) yields what follows the state
                // it was handed, whichever thread runs it.
                ch.state.send_replace(*state);
                for u in updates {
                    let _ = ch.updates.send(u);
                }
                self.answer_joiners(room, Ok(()));
            }
            Event::Joined { room, result } => self.answer_joiners(room, result),
            Event::Forget { room } => {
                self.rooms.remove(&room);
                self.joiners.remove(&room);
            }
            Event::Offset(off) => self.shared.set_offset(self.start, off),
            Event::Standby(r) => drop(self.shared.standby.send_replace(r)),
        }
    }

    fn answer_joiners(&mut self, room: RoomId, result: Result<(), Error>) {
        let Some(joiners) = self.joiners.remove(&room) else {
            return;
        };
        let parts = |rooms: &mut BTreeMap<RoomId, RoomChannels>| {
            (rooms.entry(room))
                .or_insert_with(|| RoomChannels::new(room))
                .parts()
        };
        for j in joiners {
            let answer = match &result {
                Ok(()) => Ok(parts(&mut self.rooms)),
                Err(e) => Err(e.clone()),
            };
            let _ = j.send(answer);
        }
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next message from any live connection's readers.
async fn next_incoming(rxs: &mut Vec<Received>) -> Option<(u64, Incoming)> {
    // Drop receivers whose connection is gone.
    rxs.retain(|r| !r.is_closed() || !r.is_empty());
    if rxs.is_empty() {
        return std::future::pending().await;
    }
    // A minimal select over the receivers (`recv` is cancel-safe).
    std::future::poll_fn(|cx| {
        for r in rxs.iter_mut() {
            if let std::task::Poll::Ready(v) = r.poll_recv(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
