//! The app-facing API: build a client, join rooms, act, read the clock.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::{self, Tuning};
use protocol::message::ALPN_CLIENT;
use protocol::room::{Goal, SeatMode};
use protocol::{Action, BattleId, GiftId, RoomId, RoomState, ServerTime, SessionId, UserId};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::Config;
use crate::conn::{self, Dial};
use crate::driver::{Driver, Reply, Request};
use crate::error::Error;
use crate::event::{Acked, ClientEvent, RelayInfo, Stats};
use crate::mirror::Update;

use crate::session::Command;
use crate::shared::Shared;
use crate::token::{TokenProvider, TokenResult};

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    /// Add a relay.
    pub fn relay(mut self, addr: SocketAddr) -> Self {
        self.config.relays.push(addr);
        self
    }

    /// Add relays.
    pub fn relays(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.config.relays.extend(addrs);
        self
    }

    /// A fixed signed token (see `net::token`): the session ends when
    /// it expires. See [`ClientBuilder::token_provider`] for sessions that
    /// outlive their tokens.
    pub fn token(mut self, token: Vec<u8>) -> Self {
        self.config.token = token;
        self
    }

    /// Where fresh tokens come from: an async callback (typically a call to
    /// the app's backend) the SDK calls before the current token expires,
    /// and to connect if no [`ClientBuilder::token`] was given. The session
    /// then outlives any one token.
    pub fn token_provider<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = TokenResult> + Send + 'static,
    {
        self.config.token_provider = Some(TokenProvider::new(f));
        self
    }

    /// How long an action may wait for its outcome (default 30 s).
    pub fn action_deadline(mut self, limit: Duration) -> Self {
        self.config.action_deadline = limit;
        self
    }

    /// How often to report ack times and clock error to the relay (default
    /// 10 s; `None`: never).
    pub fn report_every(mut self, every: Option<Duration>) -> Self {
        self.config.report_every = every;
        self
    }

    /// Most actions sent and not yet answered at once (default 32).
    pub fn action_window(mut self, n: usize) -> Self {
        self.config.action_window = n;
        self
    }

    /// Trust the certificates in this PEM text.
    pub fn trust_pem(mut self, pem: &str) -> Result<Self, Error> {
        let certs = net::parse_certs(pem).map_err(|e| Error::Setup(e.to_string()))?;
        self.config.roots.extend(certs);
        Ok(self)
    }

    /// The relays' TLS server name (default `localhost`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.config.server_name = name.into();
        self
    }

    /// Transport settings.
    pub fn tuning(mut self, tuning: Tuning) -> Self {
        self.config.tuning = tuning;
        self
    }

    /// Keep a warm standby connection to a second relay (default on; it
    /// needs more than one relay).
    pub fn standby(mut self, on: bool) -> Self {
        self.config.standby = on;
        self
    }

    /// Send a copy of each action `delay` after it and, while the path is
    /// losing packets, more at the config's `second_copy` and `third_copy`
    /// (16 and 32 ms by default), each only if no answer has come yet
    /// (`None`: once, no copies at all).
    pub fn redundancy(mut self, delay: Option<Duration>) -> Self {
        self.config.redundancy = delay;
        self
    }

    /// Use datagrams (default) or only the reliable stream.
    pub fn datagrams(mut self, on: bool) -> Self {
        self.config.datagrams = on;
        self
    }

    /// How long one connection attempt may take (default 1.5 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.config.connect_timeout = limit;
        self
    }

    /// Rank relays by measured RTT (default), or keep the given order.
    pub fn probe(mut self, on: bool) -> Self {
        self.config.probe = on;
        self
    }

    /// The whole configuration at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Measure every relay, connect to the one with the lowest RTT, open the
    /// session.
    pub async fn connect(self) -> Result<Client, Error> {
        Client::connect(self.config).await
    }
}

/// Longest `connect` waits for the first clock sample.
const CLOCK_WAIT: Duration = Duration::from_secs(2);

/// A connected client. Cheap to clone; the connection closes when the last
/// clone is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session", &self.shared.session)
            .finish()
    }
}

fn random_session() -> SessionId {
    // Randomness without a dependency: the std hasher is randomly keyed.
    use std::hash::{BuildHasher, Hasher};
    // The std hasher is keyed from the OS's randomness; mixing in the wall
    // clock, the process and a counter keeps ids distinct within a process.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(wall.as_nanos());
    h.write_u64(std::process::id().into());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    SessionId(h.finish())
}

/// Connect to every relay at once and measure each handshake's RTT. The
/// connections are kept: the fastest becomes the session's.
async fn probe(
    endpoint: &quinn::Endpoint,
    client_config: &quinn::ClientConfig,
    config: &Config,
) -> Vec<(Duration, SocketAddr, quinn::Connection)> {
    let probes = config.relays.iter().map(|addr| {
        let (endpoint, cfg, name) = (
            endpoint.clone(),
            client_config.clone(),
            config.server_name.clone(),
        );
        let addr = *addr;
        let timeout = config.connect_timeout;
        async move {
            let t = Instant::now();
            let r = tokio::time::timeout(timeout, async {
                endpoint.connect_with(cfg, addr, &name).ok()?.await.ok()
            })
            .await
            .ok()
            .flatten();
            (addr, r.map(|c| (c.rtt().max(t.elapsed() / 2), c)))
        }
    });
    let mut results = Vec::new();
    for p in probes.collect::<Vec<_>>() {
        results.push(tokio::spawn(p));
    }
    let mut measured = Vec::new();
    for r in results {
        if let Ok((addr, Some((rtt, conn)))) = r.await {
            measured.push((rtt, addr, conn));
        }
    }
    measured.sort_by_key(|(rtt, addr, _)| (*rtt, *addr));
    measured
}

/// A first connection refused: with a provider and an expired token, fetch
/// a fresh one (once) and go on; otherwise the refusal is the answer.
async fn renew_or_fail(
    dial: &mut Dial,
    config: &Config,
    renewed: &mut bool,
    e: Error,
) -> Result<(), Error> {
    let expired = matches!(
        e,
        Error::Refused {
            code: protocol::message::ErrorCode::TokenExpired,
            ..
        }
    );
    match (&config.token_provider, expired && !*renewed) {
        (Some(p), true) => {
            *renewed = true;
            dial.token = p
                .fetch()
                .await
                .map_err(|e| Error::Setup(format!("token provider: {e}")))?;
            Ok(())
        }
        _ => Err(e),
    }
}

impl Client {
    /// Start building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    async fn connect(config: Config) -> Result<Client, Error> {
        if config.relays.is_empty() {
            return Err(Error::Unreachable("no relay configured".into()));
        }
        let bind = match config.relays[0] {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let endpoint =
            net::client_endpoint(bind, &config.tuning).map_err(|e| Error::Setup(e.to_string()))?;
        let client_config = net::client_config(&config.roots, ALPN_CLIENT, &config.tuning)
            .map_err(|e| Error::Setup(e.to_string()))?;
        // A fresh session per client: its action counter starts at 1, so a
        // reused session id would collide with the origin's memory of it.
        let session = random_session();
        // Measure every relay at once by its handshake; keep the fastest.
        let mut measured = Vec::new();
        if config.probe && config.relays.len() > 1 {
            measured = probe(&endpoint, &client_config, &config).await;
        }
        let mut ranking: Vec<SocketAddr> = measured.iter().map(|(_, a, _)| *a).collect();
        for a in &config.relays {
            if !ranking.contains(a) {
                ranking.push(*a);
            }
        }
        // A fixed token, or the provider's first one.
        let mut token = config.token.clone();
        if let (true, Some(p)) = (token.is_empty(), &config.token_provider) {
            token = p
                .fetch()
                .await
                .map_err(|e| Error::Setup(format!("token provider: {e}")))?;
        }
        let mut dial = Dial {
            endpoint,
            cfg: client_config,
            server_name: config.server_name.clone(),
            token,
            session,
            timeout: config.connect_timeout,
            datagrams: config.datagrams,
        };
        let mut last = Error::Unreachable("no relay answered".into());
        let mut first = None;
        // A token that expired before its first use is renewed once (with a
        // provider); any other refusal ends here.
        let mut renewed = false;
        // The fastest probe's connection carries the session; the rest close.
        let mut probes = measured.into_iter().map(|(_, _, c)| c);
        if let Some(best) = probes.next() {
            match conn::open_session(&dial, best, 1).await {
                Ok(c) => first = Some(c),
                Err(e @ Error::Refused { .. }) => {
                    renew_or_fail(&mut dial, &config, &mut renewed, e).await?;
                }
                Err(e) => last = e,
            }
        }
        for other in probes {
            other.close(0u32.into(), b"probe");
        }
        // Otherwise (no probe, or the best one failed): in ranking order,
        // three passes, backing off between them — a handshake over a lossy
        // path can fail once and succeed the next time.
        for pass in 0..3u32 {
            if first.is_some() {
                break;
            }
            if pass > 0 {
                tokio::time::sleep(Duration::from_millis(100 << pass)).await;
            }
            for addr in &ranking {
                match conn::connect(&dial, *addr, 1).await {
                    Ok(c) => {
                        first = Some(c);
                        break;
                    }
                    Err(e @ Error::Refused { .. }) => {
                        renew_or_fail(&mut dial, &config, &mut renewed, e.clone()).await?;
                        last = e;
                    }
                    Err(e) => last = e,
                }
            }
        }
        let first = first.ok_or(last)?;
        let shared = Arc::new(Shared::new(session, first.0.relay.clone()));
        let (commands, rx) = mpsc::channel(1024);
        let driver = Driver::new(config, shared.clone(), dial, ranking, first);
        let mut synced = shared.synced();
        tokio::spawn(driver.run(rx));
        // The first clock exchange goes out at once and takes one round
        // trip. Waiting for it means every action carries a real origin-time
        // stamp: the origin answers an unstamped action of a session it does
        // not remember `Stale` once it has forgotten one of the user's
        // sessions, because it cannot tell it from an old one.
        let _ = tokio::time::timeout(CLOCK_WAIT, synced.wait_for(|s| *s)).await;
        Ok(Client { commands, shared })
    }

    /// Follow a room: resolves once its state has arrived.
    pub async fn join(&self, room: RoomId) -> Result<Room, Error> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Request {
                command: Command::Join { room },
                reply: Some(Reply::Join(reply)),
            })
            .await
            .map_err(|_| Error::Closed)?;
        let parts = rx.await.map_err(|_| Error::Closed)??;
        Ok(Room {
            id: room,
            client: self.clone(),
            state: parts.state,
            updates: parts.updates,
        })
    }

    /// The current estimate of origin time (after the first clock exchange).
    pub fn server_time(&self) -> Option<ServerTime> {
        self.shared.server_time()
    }

    /// Client-wide events: connected, moving, reconnected, upstream status.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// The relay the client is on now.
    pub fn relay(&self) -> Option<RelayInfo> {
        self.shared.relay.borrow().clone()
    }

    /// A watch of the current relay.
    pub fn relay_watch(&self) -> watch::Receiver<Option<RelayInfo>> {
        self.shared.relay.subscribe()
    }

    /// The relay the warm standby connection is open to, if one is (the
    /// session resumes there at once when its relay dies).
    pub fn standby(&self) -> Option<RelayInfo> {
        self.shared.standby.borrow().clone()
    }

    /// A watch of the standby connection's relay.
    pub fn standby_watch(&self) -> watch::Receiver<Option<RelayInfo>> {
        self.shared.standby.subscribe()
    }

    /// What the client had to do to keep up so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats.load()
    }

    /// The session id.
    pub fn session(&self) -> SessionId {
        self.shared.session
    }

    async fn act(
        &self,
        room: RoomId,
        action: Action,
        deadline: Option<Duration>,
    ) -> Result<Acked, Error> {
        // Chosen here, before anything can fail, so every error names it.
        let id = self.shared.next_action();
        let closed = || Error::Unresolved {
            id,
            cause: Box::new(Error::Closed),
        };
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Request {
                command: Command::Act {
                    id,
                    room,
                    action,
                    deadline,
                },
                reply: Some(Reply::Act(reply)),
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Say goodbye to the relay and stop.
    pub async fn close(self) {
        let _ = self.commands.send(Request::new(Command::Close)).await;
    }
}

/// A followed room: its mirrored state, its updates, and typed actions whose
/// futures resolve with the authoritative outcome.
#[derive(Debug, Clone)]
pub struct Room {
    id: RoomId,
    client: Client,
    state: watch::Receiver<RoomState>,
    updates: broadcast::Sender<Update>,
}

impl Room {
    /// The room's id.
    pub fn id(&self) -> RoomId {
        self.id
    }

    /// The mirrored state now.
    pub fn state(&self) -> RoomState {
        self.state.borrow().clone()
    }

    /// A watch that changes with every applied event.
    pub fn watch(&self) -> watch::Receiver<RoomState> {
        self.state.clone()
    }

    /// Every update from now on, in order (events, or a snapshot after a
    /// rebuild).
    pub fn updates(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    /// Any action. Resolves with the origin's outcome as soon as the ack
    /// arrives; the event it made may reach [`Room::state`] a moment later
    /// (the ack goes first so a sender never waits behind the fan-out of its
    /// own gift) — [`Room::wait_for`] waits for it.
    ///
    /// Always resolves: with its outcome ([`Outcome::Applied`](crate::Outcome::Applied),
    /// [`Outcome::Rejected`](crate::Outcome::Rejected), or [`Outcome::Unknown`](crate::Outcome::Unknown): do not resend), or by
    /// the client's action deadline with an error naming the action
    /// ([`Error::Throttled`]: held back by the user's rate limit;
    /// [`Error::TimedOut`]: no answer), or [`Error::Busy`] /
    /// [`Error::Unresolved`] (client closed or refused). Over the rate, the
    /// SDK waits as the relay says and sends it again (same id) until then.
    pub async fn act(&self, action: Action) -> Result<Acked, Error> {
        self.client.act(self.id, action, None).await
    }

    /// [`Room::act`] with its own deadline instead of the client's.
    pub async fn act_within(&self, action: Action, deadline: Duration) -> Result<Acked, Error> {
        self.client.act(self.id, action, Some(deadline)).await
    }

    /// Send `count` of a catalogue gift.
    pub async fn gift(&self, gift: GiftId, count: u32) -> Result<Acked, Error> {
        self.act(Action::Gift { gift, count }).await
    }

    /// Post a comment.
    pub async fn chat(&self, text: &str) -> Result<Acked, Error> {
        self.act(Action::Chat { text: text.into() }).await
    }

    /// Like the stream.
    pub async fn like(&self, count: u32) -> Result<Acked, Error> {
        self.act(Action::Like { count }).await
    }

    /// Host: invite another room to a PK battle.
    pub async fn pk_invite(&self, to: RoomId, duration_secs: u32) -> Result<Acked, Error> {
        self.act(Action::PkInvite { to, duration_secs }).await
    }

    /// Host: accept a PK invitation.
    pub async fn pk_accept(&self, battle: BattleId) -> Result<Acked, Error> {
        self.act(Action::PkAccept { battle }).await
    }

    /// Host: reject a PK invitation.
    pub async fn pk_reject(&self, battle: BattleId) -> Result<Acked, Error> {
        self.act(Action::PkReject { battle }).await
    }

    /// Host: withdraw a PK invitation.
    pub async fn pk_cancel(&self, battle: BattleId) -> Result<Acked, Error> {
        self.act(Action::PkCancel { battle }).await
    }

    /// Host: give up a battle.
    pub async fn pk_forfeit(&self, battle: BattleId) -> Result<Acked, Error> {
        self.act(Action::PkForfeit { battle }).await
    }

    /// Host: set the seat mode.
    pub async fn seat_mode(&self, mode: SeatMode) -> Result<Acked, Error> {
        self.act(Action::SeatMode { mode }).await
    }

    /// Host: go live. Only a host's (or an operator's) applied action opens
    /// a room; a viewer's action in a room that is not open is rejected
    /// (`NoRoom`). This one changes nothing else: it restates the room's
    /// seat mode. An open room answers it applied as well.
    pub async fn open(&self) -> Result<Acked, Error> {
        let mode = self.state().seats.mode;
        self.seat_mode(mode).await
    }

    /// Host: invite a user to a seat.
    pub async fn seat_invite(&self, user: UserId, seat: Option<u8>) -> Result<Acked, Error> {
        self.act(Action::SeatInvite { user, seat }).await
    }

    /// Invited user: accept the seat.
    pub async fn seat_accept(&self) -> Result<Acked, Error> {
        self.act(Action::SeatAccept).await
    }

    /// Viewer: apply for a seat.
    pub async fn seat_apply(&self) -> Result<Acked, Error> {
        self.act(Action::SeatApply).await
    }

    /// Host: approve an application.
    pub async fn seat_approve(&self, user: UserId) -> Result<Acked, Error> {
        self.act(Action::SeatApprove { user }).await
    }

    /// Viewer in free-take mode: take a seat.
    pub async fn seat_take(&self, seat: u8) -> Result<Acked, Error> {
        self.act(Action::SeatTake { seat }).await
    }

    /// Host: remove whoever sits on a seat.
    pub async fn seat_kick(&self, seat: u8) -> Result<Acked, Error> {
        self.act(Action::SeatKick { seat }).await
    }

    /// Mute or unmute a seat.
    pub async fn seat_mute(&self, seat: u8, muted: bool) -> Result<Acked, Error> {
        self.act(Action::SeatMute { seat, muted }).await
    }

    /// Host: lock or unlock a seat.
    pub async fn seat_lock(&self, seat: u8, locked: bool) -> Result<Acked, Error> {
        self.act(Action::SeatLock { seat, locked }).await
    }

    /// Guest: leave the seat.
    pub async fn seat_leave(&self) -> Result<Acked, Error> {
        self.act(Action::SeatLeave).await
    }

    /// Host or operator: start a challenge.
    pub async fn challenge(&self, goal: Goal, window_secs: u32) -> Result<Acked, Error> {
        self.act(Action::ChallengeStart { goal, window_secs }).await
    }

    /// Wait until the mirrored state satisfies `f` (or `timeout` passes).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        f: impl Fn(&RoomState) -> bool,
    ) -> Option<RoomState> {
        let mut w = self.state.clone();
        let r = tokio::time::timeout(timeout, w.wait_for(|s| f(s))).await;
        match r {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Stop following the room.
    pub async fn leave(self) {
        let _ = self
            .client
            .commands
            .send(Request::new(Command::Leave { room: self.id }))
            .await;
    }
}
