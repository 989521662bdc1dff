//! A cheap audience: viewers that are not an SDK each.
//!
//! Hundreds of QUIC connections share one quinn [`quinn::Endpoint`] (one
//! UDP socket, one endpoint driver); each viewer is one tokio task besides
//! quinn's own connection driver. A viewer does what a watching SDK client
//! does on the wire and nothing more: it says hello with a signed viewer
//! token (the SDK's [`Hello`], on the control stream it opens), joins one
//! room (`Join`, answered by the room's `Snapshot` on a stream the relay
//! opens), keeps its connection alive with the SDK's transport settings
//! ([`Tuning::default`]: the same keep-alives and idle timeout), sends a
//! clock `Ping` datagram at the SDK's steady cadence (1 s; configurable,
//! 0 turns it off) and reads every datagram and stream it is sent. It
//! decodes with the protocol crate's codec ([`codec::unpack`],
//! [`net::read_frame`]) exactly as the SDK does, and records, per gift
//! event, when it first saw it (copies of a redundantly sent event count
//! once, by seq). It answers nothing, repairs no gap and sends no reports:
//! a missed event stays missed, and is counted so.
//!
//! So 10,000 viewers fit on a 2-core machine beside the relay: what they
//! cost is quinn's receive path and a postcard decode per datagram, shown
//! as the bench process's CPU beside the relay's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use net::rustls::pki_types::CertificateDer;
use net::Tuning;
use protocol::codec::{self, Packer};
use protocol::message::{ClientMsg, Hello, ServerMsg, ALPN_CLIENT, PROTOCOL_VERSION};
use protocol::{ActionId, EventKind, RoomId, ServerTime, SessionId};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::fanout::{viewer_token, ConnectReport};
use super::stats::Latencies;

/// How to build the audience.
#[derive(Debug, Clone)]
pub struct ViewerPlan {
    /// The relay.
    pub relay: SocketAddr,
    /// Certificates to trust.
    pub roots: Vec<CertificateDer<'static>>,
    /// The secret viewer tokens are signed with.
    pub token_secret: String,
    /// The room every viewer joins.
    pub room: RoomId,
    /// Connections per client endpoint (one UDP socket each).
    pub per_endpoint: usize,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// The viewers' user ids start here.
    pub first_user: u64,
    /// A clock ping this often (`None`: never).
    pub ping_every: Option<Duration>,
    /// Each growth stops here (what is connected by then stays).
    pub connect_limit: Duration,
    /// Threads of the viewers' own tokio runtime: 1 is a current-thread
    /// runtime (no wake-up ever crosses threads), 0 shares the caller's.
    pub threads: usize,
}

/// The runtime clients run on (the viewers, and the NATS peer's
/// subscribers, so that both fan-outs' receivers are alike): the caller's,
/// or one of their own on threads of their own, stopped when dropped.
pub(crate) struct ClientRuntime {
    /// Where to spawn.
    pub(crate) handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientRuntime {
    /// `threads` of its own (1: a current-thread runtime), or the caller's (0).
    pub(crate) fn new(threads: usize) -> anyhow::Result<ClientRuntime> {
        if threads == 0 {
            return Ok(ClientRuntime {
                handle: tokio::runtime::Handle::current(),
                stop: None,
                thread: None,
            });
        }
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("viewers")
                .enable_all()
                .build()
        }
        .context("the viewers' runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("viewers".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .context("the viewers' thread")?;
        Ok(ClientRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One gift event as a viewer first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The action that caused it.
    pub cause: ActionId,
    /// Origin time stamped on the event.
    pub at: ServerTime,
    /// When this viewer decoded it.
    pub seen: Instant,
}

/// What one viewer saw since its log was last taken.
#[derive(Debug, Default)]
struct Log {
    /// Seqs at or below this were seen before the last take.
    floor: u64,
    /// Seqs above the floor seen so far.
    seen: SeqSet,
    /// Gift sightings since the last take.
    gifts: Vec<Sighting>,
    /// Told once the room's snapshot (or a refusal) arrived.
    joined: Option<oneshot::Sender<Result<(), String>>>,
}

impl Log {
    /// Record the gifts among `events`, first copies only; returns how many.
    fn events(&mut self, events: &[protocol::Event], seen: Instant) -> u64 {
        let mut n = 0;
        for e in events {
            if e.seq.0 <= self.floor || !self.seen.insert(e.seq.0 - self.floor - 1) {
                continue;
            }
            if let (EventKind::Gift { .. }, Some(cause)) = (&e.kind, e.cause) {
                self.gifts.push(Sighting {
                    cause,
                    at: e.at,
                    seen,
                });
                n += 1;
            }
        }
        n
    }

    fn joined(&mut self, r: Result<(), String>) {
        if let Some(tx) = self.joined.take() {
            let _ = tx.send(r);
        }
    }

    /// The sightings so far; later copies of the events seen stay ignored.
    fn take(&mut self) -> Vec<Sighting> {
        if let Some(max) = self.seen.max() {
            self.floor += max + 1;
        }
        self.seen = SeqSet::default();
        std::mem::take(&mut self.gifts)
    }
}

/// A set of small offsets (seqs above a viewer's floor) as a bitmap: the
/// room's seqs come nearly in order, so this is a bit per event where a
/// hash set cost a hash and, as it grew, rehashing (12% of the viewers'
/// CPU in a profile of the fan-out).
#[derive(Debug, Default)]
struct SeqSet {
    words: Vec<u64>,
    max: Option<u64>,
}

impl SeqSet {
    /// Offsets past this are not tracked: taken as seen (a viewer never
    /// runs that far between two takes: 2^24 events is hours at 1,000/s).
    const LIMIT: u64 = 1 << 24;

    /// Add `i`; whether it was new.
    fn insert(&mut self, i: u64) -> bool {
        if i >= Self::LIMIT {
            return false;
        }
        let (w, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.max = self.max.max(Some(i));
        new
    }

    /// The largest offset added.
    fn max(&self) -> Option<u64> {
        self.max
    }
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> std::sync::MutexGuard<'_, Log> {
    // A viewer task that panicked leaves a usable log behind.
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Viewer {
    conn: quinn::Connection,
    log: Shared,
}

/// The connected audience.
pub struct Viewers {
    plan: ViewerPlan,
    cfg: quinn::ClientConfig,
    endpoints: Vec<quinn::Endpoint>,
    viewers: Vec<Viewer>,
    tasks: JoinSet<()>,
    /// Gift sightings over all viewers (first copies).
    total: Arc<AtomicU64>,
    next_user: u64,
    session_base: u64,
    // Last, so dropped last: the viewers' tasks and endpoints live on it.
    rt: ClientRuntime,
}

/// A session id base no other run shares (the std hasher is randomly keyed).
fn session_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    // Room for a million viewers' ids above the base.
    h.finish() & !0xf_ffff
}

impl Viewers {
    /// No viewers yet.
    pub fn new(plan: ViewerPlan) -> anyhow::Result<Viewers> {
        let cfg = net::client_config(&plan.roots, ALPN_CLIENT, &Tuning::default())?;
        Ok(Viewers {
            rt: ClientRuntime::new(plan.threads)?,
            next_user: plan.first_user,
            plan,
            cfg,
            endpoints: Vec::new(),
            viewers: Vec::new(),
            tasks: JoinSet::new(),
            total: Arc::new(AtomicU64::new(0)),
            session_base: session_base(),
        })
    }

    /// Viewers connected and in the room.
    pub fn len(&self) -> usize {
        self.viewers.len()
    }

    /// Viewers whose connection is still open (a 1 s idle timeout ends a
    /// viewer starved of CPU for longer: this says how many are left).
    pub fn live(&self) -> usize {
        self.viewers
            .iter()
            .filter(|v| v.conn.close_reason().is_none())
            .count()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.viewers.is_empty()
    }

    /// Connections per client endpoint.
    pub fn per_endpoint(&self) -> usize {
        self.plan.per_endpoint.max(1)
    }

    /// Client endpoints (UDP sockets) in use.
    pub fn endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Gift sightings recorded so far, over all viewers.
    pub fn seen_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Every viewer's sightings since the last take (one list per viewer).
    pub fn take(&self) -> Vec<Vec<Sighting>> {
        self.viewers.iter().map(|v| lock(&v.log).take()).collect()
    }

    /// The endpoint for viewer number `slot`: a new one every `per_endpoint`.
    fn endpoint_for(&mut self, slot: usize) -> anyhow::Result<quinn::Endpoint> {
        let i = slot / self.plan.per_endpoint.max(1);
        while self.endpoints.len() <= i {
            let bind = SocketAddr::from(([127, 0, 0, 1], 0));
            // The endpoint's driver runs on the viewers' runtime.
            let _in = self.rt.handle.enter();
            let e = net::client_endpoint(bind, &Tuning::default()).context("a client endpoint")?;
            self.endpoints.push(e);
        }
        Ok(self.endpoints[i].clone())
    }

    /// Connect viewers until `n` are in the room (or the connect limit).
    pub async fn grow_to(
        &mut self,
        n: usize,
        progress: &(dyn Fn(&str) + Sync),
    ) -> anyhow::Result<ConnectReport> {
        let started = Instant::now();
        let deadline = started + self.plan.connect_limit;
        let want = n.saturating_sub(self.viewers.len());
        let mut report = ConnectReport {
            wanted: want,
            batch: self.plan.concurrency.max(1),
            ..ConnectReport::default()
        };
        let (mut connect_lat, mut join_lat) = (Latencies::new(), Latencies::new());
        let mut set = JoinSet::new();
        let mut started_n = 0usize;
        let mut next_progress = (self.viewers.len() / 1000 + 1) * 1000;
        loop {
            while started_n < want && set.len() < report.batch && Instant::now() < deadline {
                let endpoint = self.endpoint_for(self.viewers.len() + set.len())?;
                let user = self.next_user;
                self.next_user += 1;
                let session = SessionId(self.session_base + (user - self.plan.first_user));
                set.spawn_on(
                    open_viewer(
                        endpoint,
                        self.cfg.clone(),
                        self.plan.clone(),
                        user,
                        session,
                        self.total.clone(),
                    ),
                    &self.rt.handle,
                );
                started_n += 1;
            }
            let Some(r) = set.join_next().await else {
                break;
            };
            match r {
                Ok(Ok(opened)) => {
                    connect_lat.record(opened.connected);
                    join_lat.record(opened.joined);
                    self.tasks.spawn_on(opened.hot, &self.rt.handle);
                    self.tasks.spawn_on(opened.cold, &self.rt.handle);
                    self.viewers.push(opened.viewer);
                    report.connected += 1;
                }
                Ok(Err(e)) => {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(format!("{e:#}"));
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    if report.errors.len() < 5 {
                        report.errors.push(format!("task: {e}"));
                    }
                }
            }
            if self.viewers.len() >= next_progress {
                progress(&format!(
                    "  {} viewers in the room ({:.1} s)",
                    self.viewers.len(),
                    started.elapsed().as_secs_f64()
                ));
                next_progress += 1000;
            }
        }
        if started_n < want {
            report.errors.push(format!(
                "connecting stopped at its limit of {:?}",
                self.plan.connect_limit
            ));
        }
        report.took = started.elapsed();
        report.connect = connect_lat.summary();
        report.join = join_lat.summary();
        Ok(report)
    }

    /// Close every connection and wait (bounded) for the goodbyes to leave.
    pub async fn close(mut self) {
        for v in &self.viewers {
            v.conn.close(0u32.into(), b"bye");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        for e in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(2), e.wait_idle()).await;
        }
    }
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A viewer in the room, its tasks not yet spawned.
struct Opened {
    viewer: Viewer,
    /// Reads datagrams (every event).
    hot: Task,
    /// Reads the streams, sends the pings.
    cold: Task,
    connected: Duration,
    joined: Duration,
}

/// Handshake, hello, join: a viewer whose room snapshot arrived.
async fn open_viewer(
    endpoint: quinn::Endpoint,
    cfg: quinn::ClientConfig,
    plan: ViewerPlan,
    user: u64,
    session: SessionId,
    total: Arc<AtomicU64>,
) -> anyhow::Result<Opened> {
    let t = Instant::now();
    let handshake = || async {
        tokio::time::timeout(Duration::from_secs(10), async {
            endpoint
                .connect_with(cfg.clone(), plan.relay, "localhost")?
                .await
                .map_err(anyhow::Error::from)
        })
        .await
        .context("handshake timed out")?
        .context("handshake")
    };
    // One more try, as an app would: a busy relay drops handshakes.
    let conn = match handshake().await {
        Ok(c) => c,
        Err(_) => handshake().await?,
    };
    let (mut ctrl, mut recv) = conn.open_bi().await.context("control stream")?;
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: viewer_token(&plan.token_secret, user),
        session,
        datagrams: true,
    });
    net::write_frame(&mut ctrl, &hello).await?;
    let mut buf = Vec::new();
    match tokio::time::timeout(
        Duration::from_secs(10),
        net::read_frame::<ServerMsg>(&mut recv, &mut buf),
    )
    .await
    .context("no welcome within 10 s")??
    {
        Some(ServerMsg::Welcome(_)) => {}
        other => anyhow::bail!("hello answered with {other:?}"),
    }
    let connected = t.elapsed();
    let t = Instant::now();
    let (tx, rx) = oneshot::channel();
    let log = Arc::new(Mutex::new(Log {
        joined: Some(tx),
        ..Log::default()
    }));
    net::write_frame(
        &mut ctrl,
        &ClientMsg::Join {
            room: plan.room,
            since: None,
        },
    )
    .await?;
    let hot: Task = Box::pin(datagrams(conn.clone(), log.clone(), total.clone()));
    let mut cold: Task = Box::pin(streams(
        conn.clone(),
        ctrl,
        recv,
        log.clone(),
        total,
        plan.ping_every,
    ));
    // The streams must be read for the snapshot to arrive: drive them here
    // until the join is answered, then hand them to a task. Datagrams wait
    // in quinn's buffer meanwhile.
    let answered = tokio::select! {
        r = rx => r.map_err(|_| "the viewer stopped".to_string()),
        () = &mut cold => Err("the connection closed".to_string()),
        () = tokio::time::sleep(Duration::from_secs(10)) => Err("join: timed out".to_string()),
    };
    match answered {
        Ok(Ok(())) => Ok(Opened {
            viewer: Viewer { conn, log },
            hot,
            cold,
            connected,
            joined: t.elapsed(),
        }),
        Ok(Err(e)) | Err(e) => {
            conn.close(0u32.into(), b"join failed");
            anyhow::bail!("join: {e}")
        }
    }
}

/// A viewer's hot path, a task of its own so that an event wakes nothing
/// else: read datagrams, record the gifts. Ends when the connection closes.
async fn datagrams(conn: quinn::Connection, log: Shared, total: Arc<AtomicU64>) {
    while let Ok(d) = conn.read_datagram().await {
        let seen = Instant::now();
        for m in codec::unpack::<ServerMsg>(&d) {
            if let Ok(ServerMsg::Events { events, .. }) = m {
                let n = lock(&log).events(&events, seen);
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// The rest of a viewer's life: read the control stream and the streams
/// the relay opens; ping now and then. Ends when the connection closes.
async fn streams(
    conn: quinn::Connection,
    mut ctrl: quinn::SendStream,
    mut recv: quinn::RecvStream,
    log: Shared,
    total: Arc<AtomicU64>,
    ping_every: Option<Duration>,
) {
    let control = async {
        let mut buf = Vec::new();
        while let Ok(Some(m)) = net::read_frame::<ServerMsg>(&mut recv, &mut buf).await {
            on_stream_msg(&log, &total, m);
        }
    };
    let streams = async {
        while let Ok(mut uni) = conn.accept_uni().await {
            let mut buf = Vec::new();
            // Snapshots and repairs: one message per stream, read in turn
            // (the relay has at most one in flight per client).
            if let Ok(Ok(Some(m))) = tokio::time::timeout(
                Duration::from_secs(5),
                net::read_frame::<ServerMsg>(&mut uni, &mut buf),
            )
            .await
            {
                on_stream_msg(&log, &total, m);
            }
        }
    };
    let pings = async {
        let Some(every) = ping_every else {
            return conn.closed().await;
        };
        let max = conn.max_datagram_size().unwrap_or(1200);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nonce = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = conn.closed() => return conn.closed().await,
            }
            nonce += 1;
            let mut p = Packer::new(max);
            let _ = p.push(&ClientMsg::Ping { nonce });
            for d in p.finish() {
                if conn.send_datagram(d).is_err() {
                    return conn.closed().await;
                }
            }
        }
    };
    tokio::join!(control, streams, pings);
    let _ = ctrl.finish();
}

fn on_stream_msg(log: &Shared, total: &AtomicU64, m: ServerMsg) {
    let mut l = lock(log);
    match m {
        ServerMsg::Snapshot { .. } => l.joined(Ok(())),
        ServerMsg::JoinFailed { reason, .. } => l.joined(Err(format!("refused: {reason:?}"))),
        ServerMsg::Events { events, .. } => {
            let n = l.events(&events, Instant::now());
            total.fetch_add(n, Ordering::Relaxed);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Event, GiftId, Seq, UserId};

    fn gift(seq: u64, n: u64) -> Event {
        Event {
            seq: Seq(seq),
            at: ServerTime(1_000 + seq),
            cause: Some(ActionId {
                session: SessionId(7),
                n,
            }),
            kind: EventKind::Gift {
                from: UserId(1),
                gift: GiftId(1),
                count: 1,
                value: 1,
                room_total: n,
                pk: None,
            },
        }
    }

    #[test]
    fn a_log_keeps_first_copies_and_forgets_nothing_it_took() {
        let t = Instant::now();
        let mut log = Log::default();
        assert_eq!(log.events(&[gift(1, 1), gift(2, 2)], t), 2);
        // The redundant copy a few ms later counts once.
        assert_eq!(log.events(&[gift(2, 2), gift(3, 3)], t), 1);
        let took = log.take();
        assert_eq!(
            took.iter().map(|s| s.cause.n).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // A late copy of a taken event stays ignored; new ones count.
        assert_eq!(log.events(&[gift(3, 3), gift(4, 4)], t), 1);
        assert_eq!(log.take().len(), 1);
        // Out of order, past a gap, with a copy: each seq once.
        assert_eq!(log.events(&[gift(70, 70), gift(5, 5), gift(70, 70)], t), 2);
        assert_eq!(log.events(&[gift(6, 6)], t), 1);
        assert_eq!(log.take().len(), 3);
        // The floor moved past the largest seq taken.
        assert_eq!(log.events(&[gift(69, 69), gift(71, 71)], t), 1);
    }
}
