//! What every attacker shares: its own loopback address and endpoint, a
//! valid viewer token, dialing and saying hello with the project's ALPN and
//! codec, the loop that reconnects after the relay cuts it off, and the
//! tally of how each of its connections ended.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::rustls::pki_types::CertificateDer;
use net::{self, Tuning};
use protocol::codec;
use protocol::message::{ClientMsg, ErrorCode, Hello, ServerMsg, ALPN_CLIENT, PROTOCOL_VERSION};
use protocol::{Outcome, RoomId, SessionId};
use tokio::sync::watch;

use crate::bench::stats::Latencies;
use crate::impair::rng::{derive_seed, Rng};

use super::secrets::Secrets;

/// How long a dial or a hello may take before the attacker gives up on it.
const PATIENCE: Duration = Duration::from_secs(3);
/// Pause before an attacker reconnects after the relay cut it off.
const BACKOFF: Duration = Duration::from_millis(100);
/// First user id of the attackers.
pub const FIRST_ATTACKER_USER: u64 = 900_000;

/// What every attacker of one attack aims at.
#[derive(Debug)]
pub struct Target {
    /// The relay.
    pub relay: SocketAddr,
    /// Its certificate.
    pub roots: Vec<CertificateDer<'static>>,
    /// The run's secrets (attackers hold valid viewer tokens).
    pub secrets: Secrets,
    /// The honest battle's rooms (busy: many viewers, many events).
    pub busy: [RoomId; 2],
    /// Distinct users among the attackers.
    pub users: usize,
    /// Messages per second a "paced" attacker sends: just under what the
    /// relay tolerates by default, the most it can do without being cut off
    /// for flooding.
    pub paced_messages: f64,
    /// Actions per second a "paced" attacker sends (likewise).
    pub paced_actions: f64,
    /// Messages per second a "flooding" attacker sends.
    pub flood: f64,
}

impl Target {
    /// Paced rates at 90 % of the relay's default limits.
    pub fn paced_defaults() -> (f64, f64) {
        let d = relay::Config::default();
        (
            f64::from(d.limits.messages_per_sec) * 0.9,
            f64::from(d.limits.actions_per_sec) * 0.9,
        )
    }
}

/// How a hostile connection ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// The relay closed it with an application code (the protocol's table:
    /// [`ErrorCode::from_code`]).
    Code(u64),
    /// The relay's QUIC stack closed it (a transport error, by name).
    Transport(String),
    /// It went silent: the idle timeout passed.
    TimedOut,
    /// The handshake or hello failed without a close code.
    Refused(String),
    /// The attacker ended it by its own choice (to reconnect).
    Done,
    /// Still open when the attack ended.
    Open,
}

impl End {
    /// The end for a close with `code`.
    pub fn code(code: ErrorCode) -> End {
        End::Code(code.code().into())
    }

    /// Whether the relay (not the attacker) ended the connection.
    pub fn by_relay(&self) -> bool {
        !matches!(self, End::Done | End::Open)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Code(c) => write!(f, "{} ({c})", ErrorCode::from_code(*c)),
            End::Transport(t) => write!(f, "transport {t}"),
            End::TimedOut => f.write_str("idle timeout"),
            End::Refused(r) => write!(f, "refused: {r}"),
            End::Done => f.write_str("closed by the attacker"),
            End::Open => f.write_str("still open"),
        }
    }
}

/// Resolves once the stop signal has risen (or its sender is gone).
pub async fn until(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// How a connection error reads as an [`End`].
pub fn end_of(e: &quinn::ConnectionError) -> End {
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(c) => End::Code(c.error_code.into_inner()),
        E::ConnectionClosed(c) => End::Transport(format!("{:?}", c.error_code)),
        E::TransportError(t) => End::Transport(format!("{:?} (local)", t.code)),
        E::TimedOut => End::TimedOut,
        E::LocallyClosed => End::Open,
        E::Reset => End::Transport("reset".into()),
        E::VersionMismatch => End::Transport("version mismatch".into()),
        E::CidsExhausted => End::Transport("CIDs exhausted".into()),
    }
}

/// What the attackers of one attack did and met.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Attackers.
    pub attackers: u64,
    /// Connections attempted.
    pub connections: u64,
    /// Each attacker's first connection the relay ended: how and when,
    /// from the attack's start.
    pub first_stops: Vec<(End, Duration)>,
    /// How every connection ended.
    pub ends: BTreeMap<End, u64>,
    /// Lifetimes of the connections the relay ended (dial to end).
    pub lifetimes: Latencies,
    /// The same lifetimes counted by whole microsecond: what the attackers'
    /// process reports to the run ([`super::remote`]).
    pub lifetimes_us: BTreeMap<u64, u64>,
    /// Bytes the attackers sent (UDP payloads).
    pub bytes_sent: u64,
    /// Packets sent outside QUIC (junk, replayed Initials).
    pub raw_packets: u64,
    /// Protocol messages sent.
    pub messages: u64,
    /// Actions applied (acks seen).
    pub applied: u64,
    /// Actions refused (acks seen).
    pub rejected: u64,
    /// `Throttled` answers seen.
    pub throttled: u64,
    /// Anything worth a line in the report.
    pub notes: Vec<String>,
}

impl Tally {
    /// Add another attacker's tally.
    pub fn merge(&mut self, o: Tally) {
        self.attackers += o.attackers;
        self.connections += o.connections;
        self.first_stops.extend(o.first_stops);
        for (k, v) in o.ends {
            *self.ends.entry(k).or_default() += v;
        }
        self.lifetimes.merge(&o.lifetimes);
        for (k, v) in o.lifetimes_us {
            *self.lifetimes_us.entry(k).or_default() += v;
        }
        self.bytes_sent += o.bytes_sent;
        self.raw_packets += o.raw_packets;
        self.messages += o.messages;
        self.applied += o.applied;
        self.rejected += o.rejected;
        self.throttled += o.throttled;
        for n in o.notes {
            if !self.notes.contains(&n) && self.notes.len() < 5 {
                self.notes.push(n);
            }
        }
    }
}

/// One attacker.
#[derive(Debug)]
pub struct Attacker {
    /// Its index among the attack's attackers.
    pub index: usize,
    /// Its own loopback address.
    pub bind: SocketAddr,
    /// The user its token names.
    pub user: u64,
    /// Its own random choices.
    pub rng: Rng,
    /// When the attack started.
    pub started: Instant,
    /// Rises when the attack is over.
    pub stop: watch::Receiver<bool>,
    /// What it did and met.
    pub tally: Tally,
    stopped_once: bool,
}

/// The loopback address of attacker `i`: `127.0.0.2` on, one each (the
/// honest clients are on `127.0.0.1`).
pub fn attacker_ip(i: usize) -> Ipv4Addr {
    let i = i % (250 * 250);
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 2 + (i % 250) as u8)
}

impl Attacker {
    /// Attacker `index` of an attack started at `started`.
    pub fn new(
        index: usize,
        target: &Target,
        seed: u64,
        started: Instant,
        stop: watch::Receiver<bool>,
    ) -> Attacker {
        Attacker {
            index,
            bind: SocketAddr::from((attacker_ip(index), 0)),
            user: FIRST_ATTACKER_USER + (index % target.users.max(1)) as u64,
            rng: Rng::new(derive_seed(seed, index as u64)),
            started,
            stop,
            tally: Tally {
                attackers: 1,
                ..Tally::default()
            },
            stopped_once: false,
        }
    }

    /// Whether the attack is over.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep `d`, or less if the attack ends first; false once it has.
    pub async fn pause(&mut self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => !self.stopped(),
            _ = until(&mut stop) => false,
        }
    }

    /// A fresh random session id.
    pub fn session(&mut self) -> SessionId {
        SessionId(self.rng.next_u64())
    }

    /// Record how a connection dialed at `opened` ended.
    pub fn record(&mut self, end: End, opened: Instant) {
        if end.by_relay() {
            let life = opened.elapsed();
            self.tally.lifetimes.record(life);
            let us = u64::try_from(life.as_micros()).unwrap_or(u64::MAX);
            *self.tally.lifetimes_us.entry(us).or_default() += 1;
            if !self.stopped_once {
                self.stopped_once = true;
                self.tally
                    .first_stops
                    .push((end.clone(), self.started.elapsed()));
            }
        }
        *self.tally.ends.entry(end).or_default() += 1;
    }

    /// An endpoint on this attacker's address.
    pub fn endpoint(&self) -> anyhow::Result<quinn::Endpoint> {
        let ep = net::client_endpoint(self.bind, &Tuning::default())?;
        Ok(ep)
    }
}

/// A client configuration for the relay: the SDK's transport settings
/// (keep-alives, so the attacker never idles out), a modest send window
/// (the attacker's own memory), then `tweak`.
pub fn client_config(
    target: &Target,
    tweak: impl FnOnce(&mut quinn::TransportConfig),
) -> anyhow::Result<quinn::ClientConfig> {
    let mut cfg = net::client_config(&target.roots, ALPN_CLIENT, &Tuning::default())?;
    let mut t = Tuning::default().transport();
    t.send_window(4 << 20);
    tweak(&mut t);
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}

/// Dial the relay; a failure reads as an [`End`].
pub async fn dial(
    ep: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
    target: &Target,
) -> Result<quinn::Connection, End> {
    let connecting = ep
        .connect_with(cfg, target.relay, "localhost")
        .map_err(|e| End::Refused(e.to_string()))?;
    match tokio::time::timeout(PATIENCE, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(match end_of(&e) {
            End::Open => End::Refused(e.to_string()),
            end => end,
        }),
        Err(_) => Err(End::Refused("handshake timed out".into())),
    }
}

/// The control stream after a welcome.
pub type Control = (quinn::SendStream, quinn::RecvStream);

/// Say hello on a new control stream with `token` and `session`; a refusal
/// reads as an [`End`].
pub async fn hello(
    conn: &quinn::Connection,
    token: Vec<u8>,
    session: SessionId,
    datagrams: bool,
) -> Result<Control, End> {
    let refused = |what: &str| match conn.close_reason() {
        Some(e) => end_of(&e),
        None => End::Refused(what.into()),
    };
    let said = tokio::time::timeout(PATIENCE, async {
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token,
            session,
            datagrams,
        });
        net::write_frame(&mut send, &hello).await?;
        let mut buf = Vec::new();
        let m = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await?;
        Ok::<_, net::NetError>((m, send, recv))
    })
    .await;
    match said {
        Ok(Ok((Some(ServerMsg::Welcome(_)), send, recv))) => Ok((send, recv)),
        Ok(Ok((other, _, _))) => {
            // Give the close a moment to arrive: it says why.
            let _ = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
            Err(refused(&format!("answered hello with {other:?}")))
        }
        Ok(Err(e)) => {
            let _ = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
            Err(refused(&e.to_string()))
        }
        Err(_) => Err(refused("no welcome in time")),
    }
}

/// A connection handed to an attack's work.
pub struct Session {
    /// The connection.
    pub conn: quinn::Connection,
    /// The control stream, if the attacker said hello.
    pub control: Option<Control>,
    /// The session id it said hello with.
    pub session: SessionId,
    /// Random choices for this connection.
    pub rng: Rng,
    /// What the connection's reader saw (see [`count_answers`]).
    pub answers: Arc<Answers>,
}

/// What an attack's work wants once it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection open until the relay or the attack ends it.
    Hold,
    /// Close it and dial again at once (a new session).
    Reconnect,
}

/// Acks and throttles seen on a connection.
#[derive(Debug, Default)]
pub struct Answers {
    /// Applied acks.
    pub applied: AtomicU64,
    /// Refused acks.
    pub rejected: AtomicU64,
    /// Throttled answers.
    pub throttled: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
}

impl Answers {
    fn count(&self, m: &ServerMsg) {
        match m {
            ServerMsg::Ack {
                outcome: Outcome::Applied { .. },
                ..
            } => {
                self.applied.fetch_add(1, Ordering::Relaxed);
            }
            ServerMsg::Ack { .. } => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            ServerMsg::Throttled { .. } => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Read a connection's datagrams and control stream until it ends,
/// counting acks and throttles (the relay sends some twice: counts are of
/// messages, not of distinct actions).
pub async fn count_answers(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    answers: Arc<Answers>,
) {
    let datagrams = async {
        while let Ok(d) = conn.read_datagram().await {
            for m in codec::unpack::<ServerMsg>(&d).flatten() {
                answers.count(&m);
            }
        }
    };
    let stream = async {
        let mut buf = Vec::new();
        while let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            answers.count(&m);
        }
    };
    tokio::join!(datagrams, stream);
}

/// How an attacker's connections are made by [`persistent`].
#[derive(Debug, Clone, Copy)]
pub struct Dialing {
    /// Say hello with a valid viewer token.
    pub hello: bool,
    /// The hello asks for datagrams.
    pub datagrams: bool,
}

/// Dial, say hello (if asked), run `work` on the connection, and when the
/// relay cuts it off, record how and dial again (after a short pause),
/// until the attack ends. Connections still open then are closed.
pub async fn persistent<F, Fut>(
    att: &mut Attacker,
    target: &Target,
    cfg: quinn::ClientConfig,
    dialing: Dialing,
    mut work: F,
) -> anyhow::Result<()>
where
    F: FnMut(Session) -> Fut,
    Fut: Future<Output = Next>,
{
    let ep = att.endpoint()?;
    while !att.stopped() {
        let opened = Instant::now();
        att.tally.connections += 1;
        let conn = match dial(&ep, cfg.clone(), target).await {
            Ok(c) => c,
            Err(end) => {
                att.record(end, opened);
                att.pause(BACKOFF).await;
                continue;
            }
        };
        let session = att.session();
        let control = if dialing.hello {
            let token = target.secrets.viewer(att.user);
            match hello(&conn, token, session, dialing.datagrams).await {
                Ok(c) => Some(c),
                Err(end) => {
                    att.tally.bytes_sent += conn.stats().udp_tx.bytes;
                    conn.close(0u32.into(), b"refused");
                    att.record(end, opened);
                    att.pause(BACKOFF).await;
                    continue;
                }
            }
        } else {
            None
        };
        let answers = Arc::new(Answers::default());
        let s = Session {
            conn: conn.clone(),
            control,
            session,
            rng: Rng::new(att.rng.next_u64()),
            answers: answers.clone(),
        };
        let (mut stop, mut stop2) = (att.stop.clone(), att.stop.clone());
        let end = tokio::select! {
            next = work(s) => match next {
                Next::Reconnect => End::Done,
                Next::Hold => tokio::select! {
                    e = conn.closed() => end_of(&e),
                    _ = until(&mut stop2) => End::Open,
                },
            },
            e = conn.closed() => end_of(&e),
            _ = until(&mut stop) => End::Open,
        };
        if matches!(end, End::Open | End::Done) {
            conn.close(0u32.into(), b"attacker done");
        }
        let t = &mut att.tally;
        t.bytes_sent += conn.stats().udp_tx.bytes;
        t.messages += answers.sent.load(Ordering::Relaxed);
        t.applied += answers.applied.load(Ordering::Relaxed);
        t.rejected += answers.rejected.load(Ordering::Relaxed);
        t.throttled += answers.throttled.load(Ordering::Relaxed);
        let again = end == End::Done;
        att.record(end, opened);
        if !again {
            att.pause(BACKOFF).await;
        }
    }
    // Let the close frames go out before the endpoint is dropped.
    let _ = tokio::time::timeout(Duration::from_millis(300), ep.wait_idle()).await;
    Ok(())
}

/// Sends `rate` things a second in ticks of 10 ms; [`Pace::tick`] says how
/// many are due now.
#[derive(Debug)]
pub struct Pace {
    interval: tokio::time::Interval,
    per_tick: f64,
    owed: f64,
}

impl Pace {
    /// `rate` per second.
    pub fn new(rate: f64) -> Pace {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pace {
            interval,
            per_tick: rate / 100.0,
            owed: 0.0,
        }
    }

    /// Wait for the next tick; how many to send in it.
    pub async fn tick(&mut self) -> usize {
        self.interval.tick().await;
        self.due()
    }

    /// How many fall due at one more tick.
    fn due(&mut self) -> usize {
        self.owed += self.per_tick;
        let n = self.owed.floor();
        self.owed -= n;
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attackers_get_distinct_addresses_off_the_honest_one() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let ip = attacker_ip(i);
            assert_ne!(ip, Ipv4Addr::LOCALHOST);
            assert!(ip.is_loopback());
            assert!(seen.insert(ip), "{ip} twice");
        }
    }

    #[test]
    fn ends_say_who_ended_the_connection() {
        assert!(End::code(ErrorCode::Flood).by_relay());
        assert!(End::TimedOut.by_relay());
        assert!(!End::Open.by_relay());
        assert!(!End::Done.by_relay());
        assert_eq!(End::code(ErrorCode::Flood).to_string(), "Flood (6)");
    }

    #[tokio::test]
    async fn a_pace_sends_its_rate_fractions_included() {
        let mut p = Pace::new(250.0);
        let sent: usize = (0..100).map(|_| p.due()).sum();
        assert_eq!(sent, 250, "one second of ticks");
        let mut slow = Pace::new(30.0);
        let sent: usize = (0..100).map(|_| slow.due()).sum();
        assert!((29..=30).contains(&sent), "{sent}");
    }
}
