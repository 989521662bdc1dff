//! The connection driver: one task per client that owns the QUIC connection
//! and selects over commands from the app, messages from the relay and its
//! timers. The decisions live in the pure parts ([`Mirror`], [`Retry`],
//! [`OffsetEstimator`]); this file moves bytes and keeps bookkeeping.
//!
//! Failover: when the connection dies (idle timeout, about a second) or the
//! relay says goaway, the driver connects to the next relay — for a goaway,
//! before leaving the old one — and resumes: the same session, each room's
//! last seq, and every unacknowledged action again. The app sees one
//! `Reconnected` event saying whether continuity was gap-free or rebuilt.
//!
//! Tokens: with a provider, the driver fetches a fresh token when
//! [`crate::token::renew_after`] says, sends it to the relay (`Renew`) and
//! dials with it from then on; a connection closed for `TokenExpired` fetches
//! one and resumes the session, like any other move.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::codec::{self, Packer};
use protocol::message::{ActionMsg, ClientMsg, ErrorCode, Hello, ServerMsg, PROTOCOL_VERSION};
use protocol::net::{self, NetError};
use protocol::time::{ClockSample, OffsetEstimator};
use protocol::{Action, ActionId, Class, Outcome, RoomId, RoomState, Seq, SessionId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::Error;
use crate::event::{Acked, ClientEvent, Continuity, RelayInfo};
use crate::mirror::{Mirror, Update};
use crate::report::Reporter;
use crate::retry::{Expiry, Path, Policy, Retry, Rtt};
use crate::shared::Shared;
use crate::token::{self as tokens, TokenFuture, TokenProvider};

/// Most actions waiting for an outcome at once (well inside the origin's
/// per-session id window).
pub(crate) const MAX_IN_FLIGHT: usize = 512;

/// From the app's handles to the driver.
pub(crate) enum Command {
    Join {
        room: RoomId,
        reply: oneshot::Sender<Result<RoomParts, Error>>,
    },
    Leave {
        room: RoomId,
    },
    Act {
        id: ActionId,
        room: RoomId,
        action: Action,
        /// The client's deadline if `None`.
        deadline: Option<Duration>,
        reply: oneshot::Sender<Result<Acked, Error>>,
    },
    Close,
}

/// What a room handle is made of.
pub(crate) struct RoomParts {
    pub state: watch::Receiver<RoomState>,
    pub updates: broadcast::Sender<Update>,
}

/// From a connection's reader tasks to the driver.
pub(crate) enum Incoming {
    Datagram(Bytes),
    Control(ServerMsg),
    Stream(ServerMsg),
    Closed(String, Option<ErrorCode>),
}

/// One live connection to a relay.
pub(crate) struct Live {
    gen: u64,
    conn: quinn::Connection,
    ctrl: quinn::SendStream,
    pub(crate) relay: RelayInfo,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Live {
    fn close(self, code: ErrorCode, reason: &str) {
        net::close(&self.conn, code, reason);
        for t in self.tasks {
            t.abort();
        }
    }
}

struct Slot {
    mirror: Mirror,
    state: watch::Sender<RoomState>,
    updates: broadcast::Sender<Update>,
    joiners: Vec<oneshot::Sender<Result<RoomParts, Error>>>,
}

/// A move in progress: where to, why, and when it began.
struct Resume {
    started: Instant,
    /// Rooms that have not answered their resume join yet.
    waiting: BTreeSet<RoomId>,
    rebuilt: bool,
}

type Connecting = Pin<
    Box<
        dyn std::future::Future<Output = Result<(Live, mpsc::Receiver<(u64, Incoming)>), Error>>
            + Send,
    >,
>;

/// Who waits for an action's outcome, since when, and the action's class.
type Waiter = (oneshot::Sender<Result<Acked, Error>>, Instant, Class);

pub(crate) struct Driver {
    config: Config,
    shared: Arc<Shared>,
    dial: Dial,
    session: SessionId,
    rooms: BTreeMap<RoomId, Slot>,
    waiters: BTreeMap<ActionId, Waiter>,
    /// The periodic report of what this client felt (`None`: not reporting).
    reporter: Option<Reporter>,
    retry: Retry,
    clock: OffsetEstimator,
    pings: VecDeque<(u64, u64)>,
    nonce: u64,
    next_ping: u64,
    live: Option<Live>,
    /// The connection being left after a goaway (kept until the new one is up).
    leaving: Option<Live>,
    incoming: Vec<mpsc::Receiver<(u64, Incoming)>>,
    connecting: Option<Connecting>,
    /// Relays best first.
    ranking: Vec<SocketAddr>,
    /// Relays to try first on the next move (goaway alternatives).
    prefer: Vec<SocketAddr>,
    resume: Option<Resume>,
    gen: u64,
    attempts: u32,
    retry_at: Option<u64>,
    /// Set when the session was refused for good.
    failed: Option<Error>,
    /// When a broken room may be rejoined again (µs).
    rejoin_at: BTreeMap<RoomId, u64>,
    /// Where fresh tokens come from, if anywhere.
    provider: Option<TokenProvider>,
    /// A fetch of a fresh token in progress.
    fetching: Option<TokenFuture>,
    /// When to fetch the next token (µs).
    renew_at: Option<u64>,
    /// Failed fetches in a row.
    fetch_failures: u32,
    /// The connection was closed (or refused) for expiry: connect again once
    /// a fresh token has come.
    reconnect_after_fetch: bool,
    /// Expiry refusals in a row (a provider handing out spent tokens ends
    /// the session after a few).
    expired_refusals: u32,
    start: Instant,
}

/// Expiry refusals in a row, each after a fresh token, before giving up.
const MAX_EXPIRED_REFUSALS: u32 = 3;

impl Driver {
    pub(crate) fn new(
        config: Config,
        shared: Arc<Shared>,
        dial: Dial,
        ranking: Vec<SocketAddr>,
        first: (Live, mpsc::Receiver<(u64, Incoming)>),
    ) -> Driver {
        let rtt = Rtt::new(
            Duration::from_millis(15),
            Duration::from_secs(2),
            Duration::from_millis(250),
        );
        // Copies are datagrams: none when the client takes no datagrams.
        let copy = (config.redundancy.filter(|_| config.datagrams)).map(|d| d.as_micros() as u64);
        let policy = Policy {
            copy_delay_us: copy,
            datagrams: config.datagrams,
            window: config.action_window,
            seed: shared.session.0,
        };
        let (live, rx) = first;
        let mut d = Driver {
            session: shared.session,
            shared,
            dial,
            rooms: BTreeMap::new(),
            waiters: BTreeMap::new(),
            // `now` is 0 at `start`, just below.
            reporter: config.report_every.map(|every| Reporter::new(0, every)),
            retry: Retry::new(policy, rtt),
            clock: OffsetEstimator::new(32),
            pings: VecDeque::new(),
            nonce: 0,
            next_ping: 0,
            gen: live.gen,
            live: Some(live),
            leaving: None,
            incoming: vec![rx],
            connecting: None,
            ranking,
            prefer: Vec::new(),
            resume: None,
            attempts: 0,
            retry_at: None,
            failed: None,
            rejoin_at: BTreeMap::new(),
            provider: config.token_provider.clone(),
            fetching: None,
            renew_at: None,
            fetch_failures: 0,
            reconnect_after_fetch: false,
            expired_refusals: 0,
            start: Instant::now(),
            config,
        };
        d.schedule_renewal();
        d
    }

    /// Plan the next token fetch from the current token's expiry (read
    /// without the secret: only to schedule).
    fn schedule_renewal(&mut self) {
        if self.provider.is_none() {
            return;
        }
        let Ok(claims) = protocol::token::unverified_claims(&self.dial.token) else {
            tracing::warn!("the token's expiry cannot be read; it will not be renewed ahead");
            self.renew_at = None;
            return;
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let remaining = Duration::from_secs(claims.expires).saturating_sub(now_unix);
        let wait = tokens::renew_after(remaining);
        self.renew_at = Some(self.now() + wait.as_micros() as u64);
    }

    /// Ask the provider for a fresh token (unless a fetch is under way).
    fn start_fetch(&mut self) {
        if self.fetching.is_some() {
            return;
        }
        if let Some(p) = &self.provider {
            self.renew_at = None;
            self.fetching = Some(p.fetch());
        }
    }

    async fn handle_token(&mut self, r: tokens::TokenResult) {
        self.fetching = None;
        match r {
            Ok(token) => {
                self.fetch_failures = 0;
                self.dial.token = token.clone();
                self.schedule_renewal();
                if self.reconnect_after_fetch {
                    self.reconnect_after_fetch = false;
                    if self.live.is_none() && self.connecting.is_none() {
                        self.begin_move(None);
                    }
                } else if self.live.is_some() {
                    self.shared.stats.renewals.fetch_add(1, Ordering::Relaxed);
                    self.send_reliable(&ClientMsg::Renew { token }).await;
                }
            }
            Err(e) => {
                self.fetch_failures += 1;
                let wait = tokens::fetch_retry(self.fetch_failures);
                tracing::warn!(error = %e, failures = self.fetch_failures, "token provider failed; retrying");
                self.renew_at = Some(self.now() + wait.as_micros() as u64);
            }
        }
    }

    /// The relay said the token expired (at connect, or by closing the
    /// connection): with a provider, fetch a fresh one and connect again
    /// (the same session); without one, or too often in a row, give up.
    fn handle_expired(&mut self, e: Error) {
        self.expired_refusals += 1;
        if self.provider.is_none() || self.expired_refusals > MAX_EXPIRED_REFUSALS {
            self.fail(e);
            return;
        }
        tracing::info!("token expired; fetching a fresh one to resume");
        self.reconnect_after_fetch = true;
        self.start_fetch();
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if let Some(live) = &self.live {
            let _ = self.shared.events.send(ClientEvent::Connected {
                relay: live.relay.clone(),
            });
            self.shared.relay.send_replace(Some(live.relay.clone()));
        }
        loop {
            let wake = self.poll_timeout();
            enum Wake {
                Command(Option<Command>),
                Incoming(u64, Incoming),
                Connected(Result<(Live, mpsc::Receiver<(u64, Incoming)>), Error>),
                Token(tokens::TokenResult),
                Timer,
            }
            let woke = {
                let incoming = next_incoming(&mut self.incoming);
                let connecting = async {
                    match &mut self.connecting {
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
                let start = self.start;
                tokio::select! {
                    c = commands.recv() => Wake::Command(c),
                    t = fetching => Wake::Token(t),
                    i = incoming => match i {
                        Some((gen, inc)) => Wake::Incoming(gen, inc),
                        None => Wake::Timer,
                    },
                    r = connecting => Wake::Connected(r),
                    () = sleep_until(start, wake) => Wake::Timer,
                }
            };
            match woke {
                Wake::Command(None) | Wake::Command(Some(Command::Close)) => break,
                Wake::Command(Some(c)) => self.handle_command(c).await,
                Wake::Incoming(gen, inc) => self.handle_incoming(gen, inc).await,
                Wake::Connected(r) => {
                    self.connecting = None;
                    self.handle_connected(r).await;
                }
                Wake::Token(r) => self.handle_token(r).await,
                Wake::Timer => {}
            }
            self.handle_timers().await;
        }
        if let Some(mut live) = self.live.take() {
            let _ = send_frame(&mut live.ctrl, &ClientMsg::Bye).await;
            live.close(ErrorCode::Normal, "bye");
        }
        if let Some(old) = self.leaving.take() {
            old.close(ErrorCode::Normal, "bye");
        }
        for (id, (reply, ..)) in std::mem::take(&mut self.waiters) {
            let _ = reply.send(Err(Error::Unresolved {
                id,
                cause: Box::new(Error::Closed),
            }));
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        let tol = self.reorder_tolerance();
        let retry = self.resync_retry();
        let mirrors = self
            .rooms
            .values()
            .filter_map(|s| s.mirror.poll_timeout(tol, retry))
            .min();
        // Without a connection nothing is sent: only deadlines matter.
        let actions = match self.live {
            Some(_) => self.retry.poll_timeout(),
            None => self.retry.poll_deadline(),
        };
        let renew = self.renew_at.filter(|_| self.fetching.is_none());
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

    /// How long a gap may last before it is repaired: a little reordering is
    /// normal, a lost packet is not.
    fn reorder_tolerance(&self) -> u64 {
        let srtt = self.retry.rtt().srtt().unwrap_or(Duration::from_millis(20));
        (srtt.as_micros() as u64 / 4).clamp(5_000, 50_000)
    }

    fn resync_retry(&self) -> u64 {
        (self.retry.rtt().rto().as_micros() as u64 * 2).max(50_000)
    }

    async fn handle_command(&mut self, c: Command) {
        if let Some(e) = &self.failed {
            match c {
                Command::Join { reply, .. } => drop(reply.send(Err(e.clone()))),
                Command::Act { id, reply, .. } => drop(reply.send(Err(Error::Unresolved {
                    id,
                    cause: Box::new(e.clone()),
                }))),
                Command::Leave { .. } | Command::Close => {}
            }
            return;
        }
        match c {
            Command::Join { room, reply } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    if slot.mirror.state().is_some() {
                        let _ = reply.send(Ok(RoomParts {
                            state: slot.state.subscribe(),
                            updates: slot.updates.clone(),
                        }));
                    } else {
                        slot.joiners.push(reply);
                    }
                    return;
                }
                let (state, _) = watch::channel(RoomState::new(room));
                // Apps that fall further behind than this see `Lagged` and
                // can read `Room::state()` instead; a deeper buffer costs
                // memory per room per client.
                let (updates, _) = broadcast::channel(256);
                self.rooms.insert(
                    room,
                    Slot {
                        mirror: Mirror::new(),
                        state,
                        updates,
                        joiners: vec![reply],
                    },
                );
                self.send_reliable(&ClientMsg::Join { room, since: None })
                    .await;
            }
            Command::Leave { room } => {
                if self.rooms.remove(&room).is_some() {
                    self.send_reliable(&ClientMsg::Leave { room }).await;
                }
            }
            Command::Act {
                id,
                room,
                action,
                deadline,
                reply,
            } => {
                if self.retry.len() >= MAX_IN_FLIGHT {
                    let _ = reply.send(Err(Error::Busy { id }));
                    return;
                }
                let sent_at = self
                    .shared
                    .server_time()
                    .unwrap_or(protocol::ServerTime::ZERO);
                let class = action.class();
                let msg = ActionMsg {
                    id,
                    room,
                    sent_at,
                    action,
                };
                self.waiters.insert(id, (reply, Instant::now(), class));
                let limit = deadline.unwrap_or(self.config.action_deadline);
                let deadline = self.now().saturating_add(limit.as_micros() as u64);
                // It goes out from `handle_timers`, right after this command,
                // as the window and the pacing allow.
                self.retry.handle_send(self.now(), msg, deadline);
            }
            Command::Close => {}
        }
    }

    async fn handle_incoming(&mut self, gen: u64, inc: Incoming) {
        let from_live = self.live.as_ref().is_some_and(|l| l.gen == gen);
        let from_leaving = self.leaving.as_ref().is_some_and(|l| l.gen == gen);
        if !from_live && !from_leaving {
            return;
        }
        match inc {
            Incoming::Datagram(d) => {
                for m in codec::unpack::<ServerMsg>(&d) {
                    match m {
                        Ok(m) => self.handle_msg(m, false).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "malformed datagram from the relay");
                            break;
                        }
                    }
                }
            }
            Incoming::Control(m) => self.handle_msg(m, true).await,
            Incoming::Stream(m) => self.handle_msg(m, true).await,
            Incoming::Closed(why, code) => {
                if from_leaving {
                    self.leaving = None;
                    return;
                }
                tracing::info!(reason = %why, "connection to the relay lost");
                if let Some(live) = self.live.take() {
                    let _ = self.shared.events.send(ClientEvent::Moving {
                        from: live.relay.clone(),
                        goaway: false,
                    });
                    let failed = live.relay.addr;
                    live.close(ErrorCode::Normal, "lost");
                    match code {
                        Some(code @ ErrorCode::BadToken) => {
                            self.fail(Error::Refused { code, reason: why });
                        }
                        Some(code @ ErrorCode::TokenExpired) => {
                            // Resume like any move, once a fresh token came.
                            if self.resume.is_none() {
                                self.resume = Some(Resume {
                                    started: Instant::now(),
                                    waiting: BTreeSet::new(),
                                    rebuilt: false,
                                });
                            }
                            self.handle_expired(Error::Refused { code, reason: why });
                        }
                        _ => self.begin_move(Some(failed)),
                    }
                }
            }
        }
    }

    async fn handle_msg(&mut self, m: ServerMsg, reliable: bool) {
        let now = self.now();
        match m {
            ServerMsg::Events { room, events } => {
                let resumed = reliable
                    && self
                        .resume
                        .as_ref()
                        .is_some_and(|r| r.waiting.contains(&room));
                self.room_updates(room, |m| m.handle_events(now, events));
                if resumed {
                    self.resume_answered(room, false);
                }
            }
            ServerMsg::Snapshot { room, state } => {
                self.shared.stats.snapshots.fetch_add(1, Ordering::Relaxed);
                self.room_updates(room, |m| m.handle_snapshot(now, *state));
                if self
                    .resume
                    .as_ref()
                    .is_some_and(|r| r.waiting.contains(&room))
                {
                    self.resume_answered(room, true);
                }
            }
            ServerMsg::Head { room, seq } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.mirror.handle_head(now, seq);
                }
            }
            ServerMsg::Ack { id, outcome } => self.handle_ack(now, id, outcome),
            // Not an outcome: the action waits as told, then goes again.
            ServerMsg::Throttled { id, retry_after_ms } => {
                let wait = Duration::from_millis(retry_after_ms.into());
                if self.retry.handle_throttled(now, id, wait) {
                    self.shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMsg::Pong { nonce, origin_time } => {
                if let Some(pos) = self.pings.iter().position(|(n, _)| *n == nonce) {
                    let (_, sent) = self.pings[pos];
                    self.clock.handle_sample(ClockSample {
                        sent,
                        received: now,
                        origin: origin_time,
                    });
                    if let Some(off) = self.clock.offset() {
                        self.shared.set_offset(self.start, off);
                    }
                }
            }
            ServerMsg::JoinFailed { room, reason } => {
                if let Some(slot) = self.rooms.remove(&room) {
                    for j in slot.joiners {
                        let _ = j.send(Err(Error::JoinRefused(reason)));
                    }
                }
            }
            ServerMsg::Upstream { connected } => {
                let _ = self.shared.events.send(ClientEvent::Upstream { connected });
            }
            ServerMsg::GoAway { alternatives } => {
                let from = self.live.as_ref().map(|l| l.relay.clone());
                tracing::info!(?alternatives, "relay asked us to move");
                if let Some(from) = from {
                    let _ = self.shared.events.send(ClientEvent::Moving {
                        from: from.clone(),
                        goaway: true,
                    });
                    self.prefer = alternatives.iter().filter_map(|a| a.parse().ok()).collect();
                    // Make before break: keep the old connection until the new one is up.
                    if self.connecting.is_none() && self.leaving.is_none() {
                        self.leaving = self.live.take();
                        self.begin_move(Some(from.addr));
                    }
                }
            }
            ServerMsg::Welcome(_) | ServerMsg::Error { .. } => {}
        }
    }

    /// The session cannot go on (the token was refused): every waiting action
    /// and join fails with the reason, the app hears it once, and nothing
    /// reconnects. New calls fail at once.
    fn fail(&mut self, e: Error) {
        tracing::warn!(error = %e, "the session was refused; giving up");
        for (id, (reply, ..)) in std::mem::take(&mut self.waiters) {
            let _ = reply.send(Err(Error::Unresolved {
                id,
                cause: Box::new(e.clone()),
            }));
        }
        self.retry.clear();
        self.fetching = None;
        self.renew_at = None;
        self.reconnect_after_fetch = false;
        for slot in self.rooms.values_mut() {
            for j in slot.joiners.drain(..) {
                let _ = j.send(Err(e.clone()));
            }
        }
        self.retry_at = None;
        self.connecting = None;
        self.resume = None;
        self.failed = Some(e.clone());
        let _ = self.shared.events.send(ClientEvent::Failed { error: e });
    }

    fn handle_ack(&mut self, now: u64, id: ActionId, outcome: Outcome) {
        self.retry.handle_ack(now, id);
        if let Some((reply, started, class)) = self.waiters.remove(&id) {
            let latency = started.elapsed();
            if let Some(r) = &mut self.reporter {
                r.handle_ack(class, latency);
            }
            let _ = reply.send(Ok(Acked {
                id,
                outcome: outcome.into(),
                latency,
            }));
        }
    }

    fn room_updates(&mut self, room: RoomId, f: impl FnOnce(&mut Mirror) -> Vec<Update>) {
        let Some(slot) = self.rooms.get_mut(&room) else {
            return;
        };
        let updates = f(&mut slot.mirror);
        if updates.is_empty() {
            return;
        }
        let Some(state) = slot.mirror.state() else {
            return;
        };
        // State, then updates, then joiners: a joiner's `updates()` (taken
        // once `join` returns) yields what follows the state it was handed,
        // whichever thread runs it.
        slot.state.send_replace(state.clone());
        for u in updates {
            let _ = slot.updates.send(u);
        }
        for j in slot.joiners.drain(..) {
            let _ = j.send(Ok(RoomParts {
                state: slot.state.subscribe(),
                updates: slot.updates.clone(),
            }));
        }
    }

    fn resume_answered(&mut self, room: RoomId, snapshot: bool) {
        let Some(r) = &mut self.resume else { return };
        r.waiting.remove(&room);
        r.rebuilt |= snapshot;
        if r.waiting.is_empty() {
            let continuity = if r.rebuilt {
                Continuity::Rebuilt
            } else {
                Continuity::GapFree
            };
            let took = r.started.elapsed();
            self.resume = None;
            if let Some(live) = &self.live {
                let _ = self.shared.events.send(ClientEvent::Reconnected {
                    relay: live.relay.clone(),
                    continuity,
                    took,
                });
            }
        }
    }

    /// Start moving to another relay (not `avoid`, unless it is the only one).
    fn begin_move(&mut self, avoid: Option<SocketAddr>) {
        if self.resume.is_none() {
            self.resume = Some(Resume {
                started: Instant::now(),
                waiting: BTreeSet::new(),
                rebuilt: false,
            });
        }
        self.attempts = 0;
        self.try_next(avoid);
    }

    fn try_next(&mut self, avoid: Option<SocketAddr>) {
        let mut order: Vec<SocketAddr> = self.prefer.clone();
        for a in &self.ranking {
            if !order.contains(a) {
                order.push(*a);
            }
        }
        // The failed relay goes last: it may come back, but try others first.
        if let Some(bad) = avoid {
            order.retain(|a| *a != bad);
            order.push(bad);
        }
        self.gen += 1;
        let gen = self.gen;
        let dial = self.dial.clone();
        self.connecting = Some(Box::pin(async move {
            let mut last = String::from("no relay configured");
            for addr in order {
                match connect(&dial, addr, gen).await {
                    Ok(c) => return Ok(c),
                    // A refused token is refused everywhere: stop here.
                    Err(e) if is_fatal(&e) => return Err(e),
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            Err(Error::Unreachable(last))
        }));
    }

    async fn handle_connected(
        &mut self,
        r: Result<(Live, mpsc::Receiver<(u64, Incoming)>), Error>,
    ) {
        match r {
            Ok((live, rx)) => {
                self.shared.stats.moves.fetch_add(1, Ordering::Relaxed);
                self.attempts = 0;
                self.prefer.clear();
                tracing::info!(relay = %live.relay.name, addr = %live.relay.addr, "moved to another relay");
                self.shared.relay.send_replace(Some(live.relay.clone()));
                self.live = Some(live);
                self.incoming.push(rx);
                // A new relay means a new path: new clock samples.
                self.clock = OffsetEstimator::new(32);
                self.next_ping = 0;
                let rooms: Vec<(RoomId, Option<Seq>)> = self
                    .rooms
                    .iter()
                    .map(|(id, s)| (*id, s.mirror.state().map(|st| st.seq)))
                    .collect();
                if let Some(r) = &mut self.resume {
                    r.waiting = rooms.iter().map(|(id, _)| *id).collect();
                }
                for (room, since) in rooms {
                    self.send_reliable(&ClientMsg::Join { room, since }).await;
                }
                // What was on the wire goes again (on the stream) from
                // `handle_timers`, within the window.
                let now = self.now();
                self.retry.handle_reconnect(now);
                self.expired_refusals = 0;
                if let Some(mut old) = self.leaving.take() {
                    let _ = send_frame(&mut old.ctrl, &ClientMsg::Bye).await;
                    // Let the bye reach the relay before closing.
                    let _ = old.ctrl.finish();
                    old.close(ErrorCode::Normal, "moved");
                }
                if self.resume.as_ref().is_some_and(|r| r.waiting.is_empty()) {
                    self.resume_answered(RoomId(u64::MAX), false);
                }
            }
            Err(
                e @ Error::Refused {
                    code: ErrorCode::TokenExpired,
                    ..
                },
            ) => self.handle_expired(e),
            Err(e) if is_fatal(&e) => self.fail(e),
            Err(e) => {
                self.attempts += 1;
                // Every relay failed: wait (backoff with jitter) and try again.
                let base = 100u64 << self.attempts.min(5);
                let jitter =
                    (self.session.0 ^ u64::from(self.attempts).wrapping_mul(0x9e37_79b9)) % base;
                tracing::warn!(error = %e, attempt = self.attempts, "no relay reachable; retrying");
                self.retry_at = Some(self.now() + (base + jitter) * 1_000);
            }
        }
    }

    async fn handle_timers(&mut self) {
        let now = self.now();
        if self.retry_at.is_some_and(|t| t <= now)
            && self.live.is_none()
            && self.connecting.is_none()
        {
            self.retry_at = None;
            self.try_next(None);
        }
        if self.renew_at.is_some_and(|t| t <= now) {
            self.start_fetch();
        }
        for (id, why) in self.retry.poll_expired(now) {
            if let Some((reply, ..)) = self.waiters.remove(&id) {
                tracing::debug!(%id, ?why, "action past its deadline");
                let _ = reply.send(Err(match why {
                    Expiry::Throttled => Error::Throttled { id },
                    Expiry::NoAnswer => Error::TimedOut { id },
                }));
            }
        }
        let mut datagrams = Vec::new();
        // Nothing is sent without a connection (a reconnect resends).
        let sends = match self.live {
            Some(_) => self.retry.poll_transmit(now),
            None => Vec::new(),
        };
        for t in sends {
            match t.path {
                Path::Datagram => datagrams.push(ClientMsg::Action(t.msg)),
                Path::Stream => {
                    if t.fallback {
                        self.shared.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                    }
                    self.send_reliable(&ClientMsg::Action(t.msg)).await
                }
            }
        }
        let (tol, retry) = (self.reorder_tolerance(), self.resync_retry());
        let resyncs: Vec<(RoomId, Seq)> = (self.rooms.iter_mut())
            .filter_map(|(id, s)| {
                s.mirror
                    .poll_resync(now, tol, retry)
                    .map(|from| (*id, from))
            })
            .collect();
        // A mirror that met an event it cannot apply follows the room afresh.
        let broken: Vec<RoomId> = (self.rooms.iter())
            .filter(|(_, s)| s.mirror.is_broken())
            .map(|(id, _)| *id)
            .filter(|id| self.rejoin_at.get(id).is_none_or(|t| now >= *t))
            .collect();
        for room in broken {
            self.rejoin_at.insert(room, now + retry);
            self.send_reliable(&ClientMsg::Join { room, since: None })
                .await;
        }
        for (room, from) in resyncs {
            self.shared.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            self.send_reliable(&ClientMsg::Resync { room, from }).await;
        }
        if now >= self.next_ping && self.live.is_some() {
            self.nonce += 1;
            self.pings.push_back((self.nonce, now));
            if self.pings.len() > 32 {
                self.pings.pop_front();
            }
            datagrams.push(ClientMsg::Ping { nonce: self.nonce });
            // Converge fast, then keep fresh.
            let every = if self.clock.len() < 5 {
                100_000
            } else {
                1_000_000
            };
            self.next_ping = now + every;
        }
        if self.live.is_some() {
            let report = (self.reporter.as_mut())
                .and_then(|r| r.poll_report(now, self.clock.offset(), self.clock.rtt()));
            if let Some(report) = report {
                datagrams.push(ClientMsg::Report(report));
            }
        }
        self.send_datagrams(&datagrams).await;
    }

    async fn send_datagrams(&mut self, msgs: &[ClientMsg]) {
        if !self.config.datagrams {
            // The stream-only baseline: everything reliable.
            for m in msgs {
                self.send_reliable(m).await;
            }
            return;
        }
        let Some(live) = &self.live else { return };
        if msgs.is_empty() {
            return;
        }
        let max = live.conn.max_datagram_size().unwrap_or(1200);
        let mut p = Packer::new(max);
        for m in msgs {
            let _ = p.push(m);
        }
        for d in p.finish() {
            let _ = live.conn.send_datagram(d);
        }
    }

    async fn send_reliable(&mut self, msg: &ClientMsg) {
        let Some(live) = &mut self.live else { return };
        if let Err(e) = send_frame(&mut live.ctrl, msg).await {
            tracing::debug!(error = %e, "control stream write failed");
        }
    }
}

/// Refusals no other relay would answer differently.
fn is_fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::Refused {
            code: ErrorCode::BadToken | ErrorCode::TokenExpired | ErrorCode::Version,
            ..
        }
    )
}

async fn send_frame(send: &mut quinn::SendStream, msg: &ClientMsg) -> Result<(), NetError> {
    net::write_frame(send, msg).await
}

async fn sleep_until(start: Instant, wake: Option<u64>) {
    match wake {
        Some(t) => tokio::time::sleep_until((start + Duration::from_micros(t)).into()).await,
        None => std::future::pending().await,
    }
}

/// The next message from any live connection's readers.
async fn next_incoming(rxs: &mut Vec<mpsc::Receiver<(u64, Incoming)>>) -> Option<(u64, Incoming)> {
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

/// Everything needed to open a session on a relay.
#[derive(Clone)]
pub(crate) struct Dial {
    pub endpoint: quinn::Endpoint,
    pub cfg: quinn::ClientConfig,
    pub server_name: String,
    pub token: Vec<u8>,
    pub session: SessionId,
    pub timeout: Duration,
    pub datagrams: bool,
}

/// Connect to one relay and open the session.
pub(crate) async fn connect(
    dial: &Dial,
    addr: SocketAddr,
    gen: u64,
) -> Result<(Live, mpsc::Receiver<(u64, Incoming)>), Error> {
    let attempt = async {
        let conn = dial
            .endpoint
            .connect_with(dial.cfg.clone(), addr, &dial.server_name)
            .map_err(|e| Error::Unreachable(e.to_string()))?
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        open_session(dial, conn, gen).await
    };
    match tokio::time::timeout(dial.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unreachable(format!("{addr}: timed out"))),
    }
}

/// Open the session on a connection that is already up (say hello, await
/// the welcome, start the readers).
pub(crate) async fn open_session(
    dial: &Dial,
    conn: quinn::Connection,
    gen: u64,
) -> Result<(Live, mpsc::Receiver<(u64, Incoming)>), Error> {
    let addr = conn.remote_address();
    let attempt = async {
        let (mut ctrl, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: dial.token.clone(),
            session: dial.session,
            datagrams: dial.datagrams,
        });
        send_frame(&mut ctrl, &hello)
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let mut buf = Vec::new();
        let welcome = match net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            Ok(Some(ServerMsg::Welcome(w))) => w,
            Ok(_) => return Err(Error::Unreachable("no welcome".into())),
            Err(NetError::Connection(e))
            | Err(NetError::Read(quinn::ReadExactError::ReadError(
                quinn::ReadError::ConnectionLost(e),
            ))) => {
                return Err(match net::close_code(&e) {
                    Some(code) => Error::Refused {
                        code,
                        reason: e.to_string(),
                    },
                    None => Error::Unreachable(e.to_string()),
                });
            }
            Err(e) => return Err(Error::Unreachable(e.to_string())),
        };
        let relay = RelayInfo {
            addr,
            name: welcome.relay,
            region: welcome.region,
        };
        let (tx, rx) = mpsc::channel(4096);
        let tasks = spawn_readers(gen, conn.clone(), recv, tx);
        Ok((
            Live {
                gen,
                conn,
                ctrl,
                relay,
                tasks,
            },
            rx,
        ))
    };
    match tokio::time::timeout(dial.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Unreachable(format!("{addr}: timed out"))),
    }
}

fn spawn_readers(
    gen: u64,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<(u64, Incoming)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (c, t) = (conn.clone(), tx.clone());
    tasks.push(tokio::spawn(async move {
        loop {
            match c.read_datagram().await {
                Ok(d) => {
                    if t.send((gen, Incoming::Datagram(d))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let code = net::close_code(&e);
                    let _ = t.send((gen, Incoming::Closed(e.to_string(), code))).await;
                    return;
                }
            }
        }
    }));
    let t = tx.clone();
    tasks.push(tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            if t.send((gen, Incoming::Control(m))).await.is_err() {
                return;
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        while let Ok(mut uni) = conn.accept_uni().await {
            let t = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut uni, &mut buf).await {
                    let _ = t.send((gen, Incoming::Stream(m))).await;
                }
            });
        }
    }));
    tasks
}
