//! The session's state: what it holds, how it starts, and its outputs
//! (the `poll_*` side). Its inputs are in `app.rs` (the app and the
//! relay's messages), `timers.rs` (what falls due) and `moves.rs` (relay
//! moves and tokens).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::message::{ClientMsg, ErrorCode};
use protocol::{ActionId, Class, RoomId, ServerTime, SessionId};

use super::io::{Event, Link, Setup, Transmit};
use super::tokens::Tokens;
use super::warm::Standby;
use crate::config::Config;
use crate::error::Error;
use crate::event::{Acked, ClientEvent, RelayInfo, Stats};
use crate::mirror::Mirror;
use crate::report::Reporter;
use crate::retry::{Path, Policy, Retry, Rtt};
use crate::time::OriginEstimate;

/// Most actions waiting for an outcome at once (well inside the origin's
/// per-session id window).
pub const MAX_IN_FLIGHT: usize = 512;

/// Clock exchanges go this often until the estimate's window is full…
pub(super) const PING_FAST: Duration = Duration::from_millis(100);
/// …then this often.
pub(super) const PING_SLOW: Duration = Duration::from_secs(1);
/// Samples that end the fast pings: a full window, so that the estimate
/// averages that many exchanges within seconds of a (re)connection (32
/// pings in 3.2 s, once per connection).
pub(super) const PING_FAST_SAMPLES: usize = OriginEstimate::WINDOW;
/// A quiet session (no action, no room event for [`QUIET_AFTER`]) pings
/// this seldom, and its report rides in the ping's packet: its clock is
/// fine for a while, and an idle client should cost its relay next to
/// nothing (with the keep-alives: about 0.3 packets a second over both
/// connections). The first action or event brings the pings back to
/// [`PING_SLOW`].
pub(super) const PING_QUIET: Duration = Duration::from_secs(30);
/// How long without actions or room events makes a session quiet.
pub(super) const QUIET_AFTER: Duration = Duration::from_secs(10);
/// Pings remembered while their pongs are awaited.
pub(super) const PINGS_KEPT: usize = 32;

/// The settings the session decides by (from [`Config`]).
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) datagrams: bool,
    pub(super) action_deadline: Duration,
    /// Whether a token provider exists (the driver calls it).
    pub(super) provider: bool,
}

/// The app's session across relays: see the module docs.
#[derive(Debug)]
pub struct Session {
    pub(super) settings: Settings,
    pub(super) id: SessionId,
    /// Followed rooms' mirrors.
    pub(super) rooms: BTreeMap<RoomId, Mirror>,
    /// Actions waiting for an outcome: since when, and their class.
    pub(super) waiters: BTreeMap<ActionId, (Instant, Class)>,
    /// The periodic report of what this client felt (`None`: not reporting).
    pub(super) reporter: Option<Reporter>,
    pub(super) retry: Retry,
    /// The estimate of origin time (afresh on every connection; local time
    /// counted from the session's start).
    pub(super) origin: OriginEstimate,
    /// Pings awaiting their pong: nonce and when each left.
    pub(super) pings: VecDeque<(u64, Instant)>,
    pub(super) nonce: u64,
    pub(super) next_ping: Instant,
    /// The last action sent or room event received (pings slow down when
    /// it is long ago).
    pub(super) busy_at: Instant,
    /// The warm standby connection (`standby.rs`).
    pub(super) standby: Standby,
    pub(super) live: Option<Link>,
    /// The connection being left after a goaway (kept until the new one is up).
    pub(super) leaving: Option<Link>,
    /// Whether a connection attempt is in progress.
    pub(super) connecting: bool,
    /// Relays best first.
    pub(super) ranking: Vec<SocketAddr>,
    /// Relays to try first on the next move (goaway alternatives).
    pub(super) prefer: Vec<SocketAddr>,
    /// A move in progress.
    pub(super) resume: Option<Resume>,
    /// The last connection generation handed out.
    pub(super) gen: u64,
    /// Failed rounds of connection attempts in a row.
    pub(super) attempts: u32,
    /// When to try connecting again after a failed round.
    pub(super) retry_at: Option<Instant>,
    /// Set when the session was refused for good.
    pub(super) failed: Option<Error>,
    /// Set by [`Command::Close`].
    pub(super) closed: bool,
    /// When a broken room may be rejoined again.
    pub(super) rejoin_at: BTreeMap<RoomId, Instant>,
    pub(super) tokens: Tokens,
    pub(super) stats: Stats,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
}

/// A move in progress: when it began and what it waits for.
#[derive(Debug)]
pub(super) struct Resume {
    pub(super) started: Instant,
    /// Rooms that have not answered their resume join yet.
    pub(super) waiting: BTreeSet<RoomId>,
    pub(super) rebuilt: bool,
}

impl Session {
    /// A session on its first connection at `now` (its start: the
    /// [`Event::Offset`]s count local time from it).
    pub fn new(config: &Config, setup: Setup, now: Instant) -> Session {
        let rtt = Rtt::new(
            Duration::from_millis(15),
            Duration::from_secs(2),
            Duration::from_millis(250),
        );
        // Copies are datagrams: none when the client takes no datagrams.
        let policy = Policy {
            copy_delay: config.redundancy.filter(|_| config.datagrams),
            second_copy_delay: config.second_copy,
            third_copy_delay: config.third_copy,
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
            origin: OriginEstimate::new(now),
            pings: VecDeque::new(),
            nonce: 0,
            next_ping: now,
            busy_at: now,
            standby: Standby::new(config.standby && setup.ranking.len() > 1, now),
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
            tokens: Tokens::new(setup.token, now, setup.unix_now),
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
    pub fn poll_timeout(&self) -> Option<Instant> {
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
        // A quiet session's report waits for its next ping.
        let report = (self.reporter.as_ref())
            .filter(|_| self.live.is_some())
            .map(Reporter::poll_timeout)
            .filter(|at| !self.quiet_at(*at));
        // Not while a move is resuming: `standby_due` waits for it (and runs
        // after the input that ends it), so a past `open_at` would only spin.
        let standby =
            (self.standby.poll_timeout()).filter(|_| self.live.is_some() && self.resume.is_none());
        [
            actions,
            mirrors,
            Some(self.next_ping),
            self.retry_at,
            renew,
            report,
            standby,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the session is quiet at `at`: no action waiting, none sent
    /// and no room event received for [`QUIET_AFTER`] (its pings and
    /// reports slow down).
    pub(super) fn quiet_at(&self, at: Instant) -> bool {
        self.waiters.is_empty() && at.saturating_duration_since(self.busy_at) >= QUIET_AFTER
    }

    /// What the client had to do to keep up so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether [`Command::Close`](super::Command::Close) came: the driver can stop.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The relay the session is on, if it is on one.
    pub fn relay(&self) -> Option<&RelayInfo> {
        self.live.as_ref().map(|l| &l.relay)
    }

    /// The estimate of origin time at `now`, once there is one.
    pub fn origin_time(&self, now: Instant) -> Option<ServerTime> {
        self.origin.at(now)
    }

    pub(super) fn transmit(&mut self, t: Transmit) {
        self.transmits.push_back(t);
    }

    pub(super) fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    /// Send on the live connection (nothing without one).
    pub(super) fn send(&mut self, path: Path, msg: ClientMsg) {
        let Some(live) = &self.live else { return };
        let gen = live.gen;
        self.transmit(match path {
            Path::Datagram => Transmit::Datagram { gen, msg },
            Path::Stream => Transmit::Reliable { gen, msg },
        });
    }

    pub(super) fn send_reliable(&mut self, msg: ClientMsg) {
        self.send(Path::Stream, msg);
    }

    pub(super) fn close_link(&mut self, gen: u64, reason: &'static str, finish: bool) {
        self.transmit(Transmit::Close {
            gen,
            code: ErrorCode::Normal,
            reason,
            finish,
        });
    }

    pub(super) fn answer(&mut self, id: ActionId, result: Result<Acked, Error>) {
        self.event(Event::Answer { id, result });
    }

    /// Every waiting action leaves unresolved, for `cause`.
    pub(super) fn answer_all(&mut self, cause: Error) {
        for id in std::mem::take(&mut self.waiters).into_keys() {
            let cause = Box::new(cause.clone());
            self.answer(id, Err(Error::Unresolved { id, cause }));
        }
    }

    /// Whether `gen` is the live connection or the one being left.
    pub(super) fn is_current(&self, gen: u64) -> bool {
        [&self.live, &self.leaving]
            .into_iter()
            .any(|l| l.as_ref().is_some_and(|l| l.gen == gen))
    }

    /// How long a gap may last before it is repaired: a little reordering
    /// is normal, a lost packet is not.
    pub(super) fn reorder_tolerance(&self) -> Duration {
        let srtt = self.retry.rtt().srtt().unwrap_or(Duration::from_millis(20));
        // Whole microseconds, as the estimate was always rounded.
        let quarter = Duration::from_micros(srtt.as_micros() as u64 / 4);
        quarter.clamp(Duration::from_millis(5), Duration::from_millis(50))
    }

    /// How long before a repair (resync or rejoin) is asked again.
    pub(super) fn resync_retry(&self) -> Duration {
        let rto = Duration::from_micros(self.retry.rtt().rto().as_micros() as u64);
        (rto * 2).max(Duration::from_millis(50))
    }
}
