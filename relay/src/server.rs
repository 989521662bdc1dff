//! The relay process: endpoints, the hub's driver, and the handle to run,
//! drain, stop or kill it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use net::token::TokenKey;
use net::{self, Identity, NetError, Plug};
use protocol::message::{ActionMsg, Actor, DownMsg, ErrorCode, UpMsg, ALPN_CLIENT, ALPN_RELAY};
use protocol::room::Reason;
use protocol::{RoomId, Seq, SessionId, UserId};
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::admission::{self, Admission};
use crate::clock::Clock;
use crate::config::Config;
use crate::hub::{ClientId, Hub, Out, Output, Settings};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::upstream::{self, Link};
use prometheus_client::metrics::gauge::Gauge;

use net::rustls;

/// Why a relay could not start.
#[derive(Debug, Error)]
pub enum Error {
    /// Network or TLS setup failed.
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// A file could not be read or written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A secret is missing or too short (the message says what to set).
    #[error("{0}")]
    Secret(#[from] net::secret::SecretError),
}

/// Inputs of the hub's driver.
pub(crate) enum HubIn {
    ClientUp {
        client: ClientId,
        session: SessionId,
        user: UserId,
        out: OutTx,
        conn: quinn::Connection,
    },
    Join {
        client: ClientId,
        room: RoomId,
        since: Option<Seq>,
    },
    RefuseJoin {
        client: ClientId,
        room: RoomId,
        reason: Reason,
    },
    Leave {
        client: ClientId,
        room: RoomId,
    },
    Action {
        client: ClientId,
        actor: Actor,
        msg: ActionMsg,
        via_stream: bool,
    },
    Resync {
        client: ClientId,
        room: RoomId,
        from: Seq,
    },
    UpstreamUp,
    UpstreamDown,
    Down(DownMsg),
    ClientGone {
        client: ClientId,
        /// It said goodbye (a move, an exit) rather than vanishing.
        clean: bool,
    },
    /// Tell every client to move (goaway), then report when all have gone.
    Drain {
        alternatives: Vec<String>,
        done: mpsc::Sender<usize>,
    },
}

/// What client tasks share.
pub(crate) struct Shared {
    pub config: Config,
    pub tokens: TokenKey,
    pub hub: mpsc::Sender<HubIn>,
    pub clock: Clock,
    pub next_client: AtomicU64,
    pub draining: AtomicBool,
    /// Connection, session and rate limits across all connections (short
    /// critical sections only: a decision, never IO, under the lock).
    pub admission: Mutex<Admission>,
    /// What the operator sees.
    pub metrics: Metrics,
}

impl Shared {
    /// Ask the admission state something.
    pub fn admit<R>(&self, f: impl FnOnce(&mut Admission) -> R) -> R {
        // A panic while holding the lock would be a bug in `Admission`; its
        // state is still counts, so carry on with it.
        let mut a = self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut a)
    }
}

/// The hub's end of one client's outgoing queue: bounded in bytes, not
/// messages (one message may be a 64 KiB frame).
#[derive(Clone)]
pub(crate) struct OutTx {
    tx: mpsc::UnboundedSender<Out>,
    bytes: Arc<AtomicUsize>,
    cap: usize,
    total: Gauge,
}

/// The connection's end of its outgoing queue.
pub(crate) struct OutRx {
    rx: mpsc::UnboundedReceiver<Out>,
    bytes: Arc<AtomicUsize>,
    total: Gauge,
}

/// A client queue of at most `cap` bytes; `total` counts the bytes of every
/// client queue together (the operator's gauge).
pub(crate) fn out_queue(cap: usize, total: Gauge) -> (OutTx, OutRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        OutTx {
            tx,
            bytes: bytes.clone(),
            cap,
            total: total.clone(),
        },
        OutRx { rx, bytes, total },
    )
}

impl OutTx {
    /// Queue `out`; `Err(true)` if the client is too slow (its queue is
    /// full), `Err(false)` if it is gone.
    pub fn push(&self, out: Out) -> Result<(), bool> {
        let len = out.len();
        if self.bytes.load(Ordering::Relaxed) + len > self.cap && len > 0 {
            return Err(true);
        }
        // Counted before it is sent: the receiver may take it at once.
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.total.inc_by(len as i64);
        self.tx.send(out).map_err(|e| {
            // Gone: nothing will take it out again.
            self.bytes.fetch_sub(e.0.len(), Ordering::Relaxed);
            self.total.dec_by(e.0.len() as i64);
            false
        })
    }
}

impl OutRx {
    fn took(&self, out: &Out) {
        self.bytes.fetch_sub(out.len(), Ordering::Relaxed);
        self.total.dec_by(out.len() as i64);
    }

    /// The next message; `None` when the hub has let go.
    pub async fn recv(&mut self) -> Option<Out> {
        let out = self.rx.recv().await?;
        self.took(&out);
        Some(out)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Out> {
        let out = self.rx.try_recv().ok()?;
        self.took(&out);
        Some(out)
    }
}

impl Drop for OutRx {
    fn drop(&mut self) {
        // What is still queued leaves the total; pushes from now on fail
        // and take their own bytes back.
        self.rx.close();
        while let Ok(out) = self.rx.try_recv() {
            self.total.dec_by(out.len() as i64);
        }
    }
}

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    identity: Identity,
    endpoint: quinn::Endpoint,
    plug: Plug,
    upstream_plug: Plug,
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    shared: Arc<Shared>,
    metrics_listener: Option<ops::Listener>,
}

impl Relay {
    /// Start a relay from its configuration: its secrets first (a relay
    /// outside loopback without them refuses to start), then certificates
    /// from files, or a generated identity kept in `identity_file` and
    /// written to `cert_out`; the origin's certificate from `origin_cert`
    /// (read again whenever the link reconnects and it has changed).
    pub async fn start(config: Config) -> Result<Relay, Error> {
        config.secrets()?;
        let identity = Identity::from_files_or_generate(
            config.tls.as_ref(),
            config.identity_file.as_deref(),
            config.cert_out.as_deref(),
        )?;
        let roots = match &config.origin_cert {
            Some(p) => net::load_certs(p)?,
            None => Vec::new(),
        };
        Relay::start_with(config, identity, roots).await
    }

    /// Start with a given identity and origin trust roots (in-process use).
    /// The secrets come from the configuration as in [`Relay::start`].
    pub async fn start_with(
        config: Config,
        identity: Identity,
        origin_roots: Vec<CertificateDer<'static>>,
    ) -> Result<Relay, Error> {
        let secrets = config.secrets()?;
        let (endpoint, plug) =
            net::server_endpoint(config.listen, &identity, &[ALPN_CLIENT], &config.tuning)?;
        let addr = endpoint.local_addr()?;
        let bind = SocketAddr::new(config.listen.ip(), 0);
        let (up_endpoint, upstream_plug) = net::client_endpoint(bind, &config.upstream_tuning)?;
        let client_config = net::client_config(&origin_roots, ALPN_RELAY, &config.upstream_tuning)?;
        // What the trust file held when `origin_roots` were read from it.
        let trusted = (config.origin_cert.as_ref()).and_then(|p| std::fs::read(p).ok());

        let (hub_tx, hub_rx) = mpsc::channel(1 << 14);
        // Small: the hub keeps what must be sent and hands it over as the
        // link takes it.
        let (up_tx, up_rx) = mpsc::channel(1 << 10);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let clock = Clock::new();
        let metrics = Metrics::default();
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            tokens: TokenKey::new(&secrets.token),
            hub: hub_tx.clone(),
            clock: clock.clone(),
            next_client: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            admission: Mutex::new(Admission::new(
                config.limits.clone(),
                std::time::Instant::now(),
            )),
            config: config.clone(),
        });
        let link = Arc::new(Link {
            name: config.name.clone(),
            endpoint: up_endpoint,
            trust: std::sync::Mutex::new(upstream::Trust {
                file: config.origin_cert.clone(),
                pem: trusted,
                client_config,
            }),
            tuning: config.upstream_tuning.clone(),
            origin: config.origin,
            server_name: config.origin_server_name.clone(),
            cluster: TokenKey::new(&secrets.cluster),
            clock: clock.clone(),
            hub: hub_tx,
            metrics: metrics.clone(),
        });
        let mut tasks = JoinSet::new();
        let settings = Settings {
            ring: config.ring,
            rooms_per_client: config.limits.rooms_per_connection,
            pending_per_client: config.limits.pending_per_connection,
            pending_total: config.limits.pending_total,
            ..Settings::default()
        };
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(serve_metrics(at, &shared).await?),
            None => None,
        };
        tasks.spawn(run_hub(
            Hub::with_metrics(settings, metrics),
            hub_rx,
            up_tx,
            clock,
        ));
        tasks.spawn(upstream::run(link, up_rx, shutdown_rx.clone()));
        tasks.spawn(accept(endpoint.clone(), shared.clone(), shutdown_rx));
        tracing::info!(relay = %config.name, region = %config.region, %addr, "relay listening");
        Ok(Relay {
            addr,
            identity,
            endpoint,
            plug,
            upstream_plug,
            tasks,
            shutdown,
            shared,
            metrics_listener,
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, when
    /// `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(ops::Listener::local_addr)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate clients must trust, as PEM.
    pub fn cert_pem(&self) -> String {
        self.identity.cert_pem()
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Cut (or heal) the link to the origin, as a network partition would:
    /// packets stop both ways and the link notices by its idle timeout.
    pub fn partition_upstream(&self, cut: bool) {
        if cut {
            self.upstream_plug.pull();
        } else {
            self.upstream_plug.restore();
        }
    }

    /// Drain: refuse new clients, tell every client to move to one of
    /// `alternatives` (or the configured peers), wait until they have gone or
    /// the drain timeout passes, then shut down. Returns how many clients
    /// were still connected at the end.
    pub async fn drain(self, alternatives: Vec<String>) -> usize {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.metrics.draining.set(1);
        let alternatives = if alternatives.is_empty() {
            self.shared.config.peers.clone()
        } else {
            alternatives
        };
        let (done_tx, mut done_rx) = mpsc::channel(1);
        let _ = self
            .shared
            .hub
            .send(HubIn::Drain {
                alternatives,
                done: done_tx,
            })
            .await;
        let timeout = Duration::from_millis(self.shared.config.drain_timeout_ms);
        let left = match tokio::time::timeout(timeout, done_rx.recv()).await {
            Ok(Some(n)) => n,
            _ => usize::MAX,
        };
        self.shutdown().await;
        left
    }

    /// Stop: close every connection with `Shutdown` and end all tasks.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.endpoint
            .close(ErrorCode::Shutdown.code().into(), b"relay shutting down");
        self.tasks.shutdown().await;
    }

    /// Die as a crashed host would: not one more packet in or out, no
    /// goodbye to anyone. Clients notice only by their idle timeout.
    pub async fn abort(mut self) {
        self.plug.pull();
        self.upstream_plug.pull();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The operator's listener: the relay's metrics under its `region` and
/// `relay` labels; ready while the link to the origin is up and the relay
/// is not draining.
async fn serve_metrics(at: SocketAddr, shared: &Arc<Shared>) -> Result<ops::Listener, Error> {
    let labels = [
        ("region".into(), shared.config.region.clone().into()),
        ("relay".into(), shared.config.name.clone().into()),
    ];
    let mut registry = prometheus_client::registry::Registry::with_labels(labels.into_iter());
    shared.metrics.register(&mut registry);
    let ready = {
        let shared = shared.clone();
        move || {
            if shared.draining.load(Ordering::Relaxed) {
                Err("draining".to_string())
            } else if shared.metrics.upstream_connected.get() == 0 {
                Err("no link to the origin".to_string())
            } else {
                Ok(())
            }
        }
    };
    let endpoint = ops::Endpoint::new(registry, ready);
    Ok(ops::Listener::bind(at, Arc::new(endpoint)).await?)
}

async fn accept(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let addr = incoming.remote_address();
        let validated = incoming.remote_address_validated();
        let verdict =
            shared.admit(|a| a.handle_incoming(std::time::Instant::now(), addr.ip(), validated));
        let handshakes = &shared.metrics.handshakes;
        let outcome = |outcome| handshakes.get_or_create(&OutcomeLabel { outcome }).inc();
        match verdict {
            admission::Incoming::Accept => {
                outcome("accepted");
                tokio::spawn(crate::conn::serve(incoming, shared.clone()));
            }
            admission::Incoming::Retry if incoming.may_retry() => {
                outcome("retry");
                let _ = incoming.retry();
            }
            // A validated peer cannot be asked again; it is over the rate.
            admission::Incoming::Retry | admission::Incoming::Refuse => {
                outcome("refused");
                tracing::debug!(%addr, "connection refused: at the limit");
                incoming.refuse();
            }
        }
    }
}

struct ClientLink {
    out: OutTx,
    conn: quinn::Connection,
}

/// Drive the hub: feed it inputs and a tick, deliver its outputs.
async fn run_hub(
    mut hub: Hub,
    mut rx: mpsc::Receiver<HubIn>,
    up: mpsc::Sender<UpMsg>,
    clock: Clock,
) {
    let mut clients: BTreeMap<ClientId, ClientLink> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain: Option<mpsc::Sender<usize>> = None;
    loop {
        let wants_up = hub.has_upstream();
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                let now = clock.local();
                match input {
                    HubIn::ClientUp { client, session, user, out, conn } => {
                        clients.insert(client, ClientLink { out, conn });
                        hub.handle_client_up(now, client, session, user);
                    }
                    HubIn::Join { client, room, since } => hub.handle_join(now, client, room, since),
                    HubIn::RefuseJoin { client, room, reason } => hub.refuse_join(client, room, reason),
                    HubIn::Leave { client, room } => hub.handle_leave(now, client, room),
                    HubIn::Action { client, actor, msg, via_stream } => hub.handle_action(now, client, actor, msg, via_stream),
                    HubIn::Resync { client, room, from } => hub.handle_resync(now, client, room, from),
                    HubIn::ClientGone { client, clean } => {
                        clients.remove(&client);
                        hub.handle_client_gone(now, client, clean);
                    }
                    HubIn::UpstreamUp => hub.handle_upstream_up(now),
                    HubIn::UpstreamDown => hub.handle_upstream_down(now),
                    HubIn::Down(msg) => hub.handle_down(now, msg),
                    HubIn::Drain { alternatives, done } => {
                        hub.handle_drain(&alternatives);
                        drain = Some(done);
                    }
                }
            }
            // Membership changes and actions go up as fast as the link takes
            // them; nothing is dropped when it is slow.
            permit = up.reserve(), if wants_up => {
                let Ok(permit) = permit else { return };
                if let Some(msg) = hub.poll_upstream() {
                    permit.send(msg);
                }
            }
            _ = tick.tick() => hub.handle_tick(clock.local()),
        }
        while let Some(output) = hub.poll_output() {
            match output {
                Output::Client(id, out) => {
                    let Some(link) = clients.get(&id) else {
                        continue;
                    };
                    if let Err(true) = link.out.push(out) {
                        tracing::warn!(client = id, "client queue full; cutting it off");
                        net::close(&link.conn, ErrorCode::Flood, "client too slow");
                        hub.metrics().closed_with(ErrorCode::Flood);
                        clients.remove(&id);
                        hub.handle_client_gone(clock.local(), id, false);
                    }
                }
            }
        }
        if let Some(done) = &drain {
            if clients.is_empty() {
                let _ = done.try_send(0);
                drain = None;
            }
        }
    }
}
