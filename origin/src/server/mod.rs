//! The origin server: rules on the network, made durable.
//!
//! ```text
//! relay links ──Input──► authority task ──Item──► commit thread ──batch──► publisher ──► relay links
//!   (one task per        (the rules: the          (WAL: append all       (committed room state,
//!    relay connection)    single writer)           waiting, one fsync)    rings, fan-out, acks)
//! ```
//!
//! Nothing leaves the origin before it is durable: the publisher only sees
//! what the commit thread has synced, and it is the only sender of events
//! and acks. Items keep their order end to end, so an answer to a repeated
//! action never overtakes the commit of the original.
//!
//! Idle rooms: the authority task sweeps for them (a quarter of
//! `rules.room_idle`, within 10 ms and 30 s) and sends each unloaded room's
//! state down the same pipe. The commit thread syncs every record before it,
//! then writes the room's archive (`data_dir/rooms/`, see
//! [`crate::wal::Archives`]), then lets the publisher forget the room; until
//! the archive is written the state waits in an in-flight map, so a reload
//! that comes first finds it there. Every later checkpoint comes after it in
//! the pipe, so a checkpoint that leaves the room out never exists without
//! its archive. A subscription, an action or a query for an unloaded room
//! loads it back first (rules and publisher), in order.
//!
//! Cluster mode (a `[cluster]` section): the same relay links and publisher,
//! with the authority task and the commit thread replaced by one driver
//! (`cluster.rs`, `route.rs`) that serves only the rooms this node holds,
//! appends to JetStream before anything leaves, and answers `Moved` /
//! `Redirect` for rooms another node should serve (see [`crate::cluster`]).
//! `/readyz` says ready once the node has joined the cluster.
//!
//! Operators: with `metrics_listen` set, an HTTP listener serves
//! `/metrics` ([`crate::metrics`]), `/healthz` and `/readyz`. It is bound
//! before the log is replayed, so `/healthz` answers during a long replay
//! while `/readyz` says 503 until relays can connect (and again once the
//! log has failed).

mod authority;
mod cluster;
mod commit;
mod handover;
mod link;
mod outs;
mod parked;
mod pipeline;
mod publish;
mod rewin;
mod route;
mod shared;

use shared::{gauge, Input, Shared, Store};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use net::token::TokenKey;
use net::{self, Identity};
use protocol::message::ALPN_RELAY;
use protocol::{RoomId, RoomState};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rules::Authority;
use crate::wal::{Archives, Wal, WalError};

/// Why the origin could not start or had to stop.
#[derive(Debug, Error)]
pub enum Error {
    /// The write-ahead log failed: nothing more can be acknowledged.
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// The log does not replay onto the rules (a bug or a foreign log).
    #[error("replaying the log: {0}")]
    Replay(String),
    /// Network or TLS setup failed.
    #[error("network: {0}")]
    Net(#[from] net::NetError),
    /// A file could not be written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster secret is missing or too short (the message says what to set).
    #[error("{0}")]
    Secret(#[from] net::secret::SecretError),
    /// Cluster mode could not start: NATS, its streams or its bucket.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::Error),
}

/// A running origin.
pub struct Origin {
    addr: SocketAddr,
    identity: Identity,
    endpoint: quinn::Endpoint,
    /// Cuts the socket off (feature `fault`: the testbed's crashes).
    #[cfg(feature = "fault")]
    plug: net::Plug,
    /// Set (with the reason) if the write-ahead log failed.
    failed: watch::Receiver<Option<String>>,
    clock: Clock,
    inputs: mpsc::Sender<Input>,
    tasks: JoinSet<()>,
    commit: Option<JoinHandle<Result<(), WalError>>>,
    shutdown: watch::Sender<bool>,
    metrics: Metrics,
    /// The operators' listener, when `metrics_listen` is set.
    metrics_listener: Option<ops::Listener>,
    /// Cluster mode: the node's name and placement view, and its driver.
    cluster: Option<cluster::View>,
}

/// The rules as the log leaves them: the checkpoint, then every record
/// after it (rooms unloaded at the checkpoint come back from their archives
/// when their first record needs them).
fn replay(
    config: &Config,
    recovered: &crate::wal::Recovered,
    archives: &Archives,
) -> Result<Authority, Error> {
    let mut auth = match &recovered.checkpoint {
        Some(blob) => {
            let snap = protocol::codec::decode(blob).map_err(|e| Error::Replay(e.to_string()))?;
            Authority::restore(config.rules.clone(), snap)
        }
        None => Authority::new(config.rules.clone()),
    };
    let replayed = recovered.records.len();
    for record in &recovered.records {
        for room in auth.replay_needs(record) {
            match archives.read(room)? {
                Some(state) => auth.restore_room(state),
                None => {
                    return Err(Error::Replay(format!(
                        "{room} is neither in the checkpoint nor archived"
                    )))
                }
            }
        }
        auth.replay(record)
            .map_err(|e| Error::Replay(e.to_string()))?;
    }
    tracing::info!(
        origin = %config.name,
        checkpoint = recovered.checkpoint.is_some(),
        records = replayed,
        rooms = auth.rooms().count(),
        "replayed the write-ahead log"
    );
    Ok(auth)
}

impl Origin {
    /// Start an origin: replay the log, then serve relays. Without TLS files
    /// in the config, a self-signed identity is kept in
    /// `data_dir/origin-identity.pem` (generated once, reused at every start,
    /// so relays keep trusting it) and its certificate written to
    /// `data_dir/origin-cert.pem`.
    pub async fn start(config: Config) -> Result<Origin, Error> {
        config.cluster_secret()?;
        let keep = config.data_dir.join("origin-identity.pem");
        let cert_out = config.data_dir.join("origin-cert.pem");
        let identity =
            Identity::from_files_or_generate(config.tls.as_ref(), Some(&keep), Some(&cert_out))?;
        Origin::start_with(config, identity).await
    }

    /// Start with a given TLS identity (tests and in-process topologies).
    pub async fn start_with(config: Config, identity: Identity) -> Result<Origin, Error> {
        if let Some(node) = config.cluster.clone() {
            return Origin::start_cluster(config, node, identity).await;
        }
        let cluster_secret = config.cluster_secret()?;
        let metrics = Metrics::new();
        let (failed_tx, failed_rx) = watch::channel(None);
        let ready = Arc::new(AtomicBool::new(false));
        let metrics_listener = listen(&config, &metrics, &ready, &failed_rx).await?;
        let (wal, recovered) = Wal::open(&config.data_dir, Default::default())?;
        let archives = Archives::open(&config.data_dir)?;
        let mut auth = replay(&config, &recovered, &archives)?;
        let clock = Clock::new();
        auth.handle_started(clock.now());
        metrics.rooms_live.set(gauge(auth.room_count()));
        let store = Store {
            archives,
            inflight: Default::default(),
        };
        #[cfg(feature = "fault")]
        let (endpoint, plug) = relay_endpoint(&config, &identity)?;
        #[cfg(not(feature = "fault"))]
        let endpoint = relay_endpoint(&config, &identity)?;
        let addr = endpoint.local_addr()?;

        let (input_tx, input_rx) = mpsc::channel(1 << 14);
        let (item_tx, item_rx) = mpsc::channel(1 << 14);
        let (batch_tx, batch_rx) = mpsc::channel(1 << 10);
        let (shutdown, shutdown_rx) = watch::channel(false);

        let publisher = publish::Publisher::new(auth.rooms().cloned(), config.ring);
        let commit = std::thread::Builder::new()
            .name("origin-wal".into())
            .spawn({
                let endpoint = endpoint.clone();
                let store = store.clone();
                let metrics = metrics.clone();
                move || commit::run(wal, store, item_rx, batch_tx, endpoint, failed_tx, metrics)
            })?;
        let mut tasks = JoinSet::new();
        tasks.spawn(authority::run(
            auth,
            store,
            clock,
            input_rx,
            item_tx,
            authority::Settings {
                checkpoint_every: config.checkpoint_every,
                retention_window: config.retention_window,
                metrics: metrics.clone(),
            },
        ));
        tasks.spawn(publisher.run(batch_rx));
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            clock,
            cluster: TokenKey::new(&cluster_secret),
            inputs: input_tx.clone(),
            relay_queue: config.relay_queue,
            next_relay: AtomicU64::new(1),
            metrics: metrics.clone(),
        });
        tasks.spawn(link::accept(endpoint.clone(), shared, shutdown_rx));
        ready.store(true, Ordering::Relaxed);
        tracing::info!(origin = %config.name, %addr, "origin listening");
        Ok(Origin {
            addr,
            identity,
            endpoint,
            #[cfg(feature = "fault")]
            plug,
            failed: failed_rx,
            clock,
            inputs: input_tx,
            tasks,
            commit: Some(commit),
            shutdown,
            metrics,
            metrics_listener,
            cluster: None,
        })
    }

    /// Cluster mode: connect and join, then the same relay links and
    /// publisher, fed by the cluster driver (see [`crate::cluster`]).
    async fn start_cluster(
        config: Config,
        node: crate::cluster::Config,
        identity: Identity,
    ) -> Result<Origin, Error> {
        let cluster_secret = config.cluster_secret()?;
        let metrics = Metrics::new();
        let clock = Clock::new();
        let ready = Arc::new(AtomicBool::new(false));
        let (failed_tx, failed) = watch::channel(None);
        let metrics_listener = listen(&config, &metrics, &ready, &failed).await?;
        let (joined, (batches, policy)) =
            connect_patiently(&config, &node, clock, &metrics).await?;
        #[cfg(feature = "fault")]
        let (endpoint, plug) = relay_endpoint(&config, &identity)?;
        #[cfg(not(feature = "fault"))]
        let endpoint = relay_endpoint(&config, &identity)?;
        let addr = endpoint.local_addr()?;
        let (input_tx, input_rx) = mpsc::channel(1 << 14);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(publish::Publisher::new(std::iter::empty(), config.ring).run(batches));
        let shared = Arc::new(Shared {
            name: node.node.clone(),
            clock,
            cluster: TokenKey::new(&cluster_secret),
            inputs: input_tx.clone(),
            relay_queue: config.relay_queue,
            next_relay: AtomicU64::new(1),
            metrics: metrics.clone(),
        });
        tasks.spawn(link::accept(endpoint.clone(), shared, shutdown_rx.clone()));
        let driver = joined.spawn(input_rx, shutdown_rx);
        // Nothing fails the node as a whole (a failed append drops only its
        // room): `/readyz` says ready from here on.
        ready.store(true, Ordering::Relaxed);
        tracing::info!(node = %node.node, %addr, "origin node listening");
        Ok(Origin {
            addr,
            identity,
            endpoint,
            #[cfg(feature = "fault")]
            plug,
            failed,
            clock,
            inputs: input_tx,
            tasks,
            commit: None,
            shutdown,
            metrics,
            metrics_listener,
            cluster: Some(cluster::View {
                name: node.node,
                policy,
                driver: Some(driver),
                _failed: failed_tx,
            }),
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, when
    /// `metrics_listen` is set (the bound port, if it was 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .map(ops::Listener::local_addr)
    }

    /// The origin's metric handles, to read in process (tests, topologies);
    /// they count whether or not `metrics_listen` is set.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address relays connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Origin time now: the reference every deadline is measured against.
    pub fn now(&self) -> protocol::ServerTime {
        self.clock.now()
    }

    /// A room's committed state: what every relay and client converges to.
    pub async fn room_state(&self, room: RoomId) -> Option<RoomState> {
        let (reply, rx) = oneshot::channel();
        self.inputs.send(Input::Query { room, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Open `room` as an operator would (rooms are otherwise opened only by
    /// their host's first action): for tools, topologies and tests. Returns
    /// whether the room is live afterwards (`false` at the live-room cap).
    /// Its `Opened` event is published once durable, like any other.
    ///
    /// Cluster mode: only on the node the placement gives the room to (it
    /// wins the room first if it does not hold it yet); any other node
    /// returns `false` without forwarding (ask [`Origin::owner_of`]).
    pub async fn open_room(&self, room: RoomId) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.inputs.send(Input::Open { room, reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Cluster mode: this node's name (what its `Welcome` says); `None`
    /// for an embedded origin.
    pub fn node_name(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.name.as_str())
    }

    /// Cluster mode: the node that should serve `room` as this node sees
    /// it now (live members and PK pins); `None` for an embedded origin or
    /// while no node is known alive.
    pub fn owner_of(&self, room: RoomId) -> Option<String> {
        let view = self.cluster.as_ref()?;
        let policy = view.policy.borrow();
        policy.owner_of(room).map(str::to_owned)
    }

    /// Cluster mode: the nodes this node counts alive (itself included),
    /// as of its last look at the bucket; empty for an embedded origin.
    pub fn cluster_nodes(&self) -> Vec<String> {
        (self.cluster.as_ref())
            .map(|c| c.policy.borrow().nodes().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The certificate relays must trust, as PEM.
    pub fn cert_pem(&self) -> String {
        self.identity.cert_pem()
    }

    /// Run until `stop` resolves, then shut down cleanly.
    pub async fn serve_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let mut failed = self.failed.clone();
        // In cluster mode nothing may ever set `failed` (its sender can be
        // gone): a closed channel is not a failure, only a reason set is.
        let log_failed = async {
            if failed.wait_for(Option::is_some).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = stop => {}
            () = log_failed => {}
        }
        self.shutdown().await
    }

    /// Stop accepting, close relay links, finish what is committed (in
    /// cluster mode: hand every room over and leave the membership first).
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        if let Some(driver) = self.cluster.as_mut().and_then(|c| c.driver.take()) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), driver).await;
        }
        self.endpoint.close(
            protocol::message::ErrorCode::Shutdown.code().into(),
            b"origin shutting down",
        );
        self.tasks.shutdown().await;
        self.join_commit()
    }

    /// Stop at once, as a crash would: no goodbye to relays, nothing flushed
    /// beyond what the log already synced. (The commit thread is joined so
    /// that a restarted origin in the same process owns the log alone.)
    #[cfg(feature = "fault")]
    pub async fn abort(mut self) {
        // Not one more packet in or out: relays notice only by their timeout.
        self.plug.pull();
        // Cluster mode: the driver holds the NATS client, the node lease
        // and the room logs' writers; with it gone nothing is renewed,
        // appended or answered any more.
        if let Some(driver) = self.cluster.as_mut().and_then(|c| c.driver.take()) {
            driver.abort();
            let _ = driver.await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let _ = self.join_commit();
        // Release the port (the close frames go nowhere: the plug is pulled),
        // so that a restarted origin can bind it.
        self.endpoint.close(0u32.into(), b"");
        self.endpoint.wait_idle().await;
        let plug = self.plug.clone();
        drop(self);
        plug.released(std::time::Duration::from_secs(5)).await;
    }

    fn join_commit(&mut self) -> Result<(), Error> {
        self.metrics_listener = None;
        match self.commit.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(_)) => Err(Error::Replay("the commit thread panicked".into())),
            _ => Ok(()),
        }
    }
}

/// The endpoint relays connect to (with the plug that cuts it off: the
/// testbed's crashes, feature `fault`).
#[cfg(feature = "fault")]
fn relay_endpoint(
    config: &Config,
    identity: &Identity,
) -> Result<(quinn::Endpoint, net::Plug), Error> {
    let (c, id) = (config, identity);
    Ok(net::server_endpoint_plugged(
        c.listen,
        id,
        &[ALPN_RELAY],
        &c.tuning,
    )?)
}

/// The endpoint relays connect to.
#[cfg(not(feature = "fault"))]
fn relay_endpoint(config: &Config, identity: &Identity) -> Result<quinn::Endpoint, Error> {
    let (c, id) = (config, identity);
    Ok(net::server_endpoint(
        c.listen,
        id,
        &[ALPN_RELAY],
        &c.tuning,
    )?)
}

/// How long a starting node waits for JetStream to take its streams and
/// bucket (a cluster just started places three-copy streams only once all
/// three servers have joined it).
const SETUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// [`cluster::connect`], tried again while JetStream is not ready to set
/// the streams and the bucket up (bounded by [`SETUP_PATIENCE`]); any other
/// error, or the same one past that, fails the start.
async fn connect_patiently(
    config: &Config,
    node: &crate::cluster::Config,
    clock: Clock,
    metrics: &Metrics,
) -> Result<(cluster::Joined, cluster::Outputs), crate::cluster::Error> {
    let until = std::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match cluster::connect(config, node, clock, metrics.clone()).await {
            Err(e @ crate::cluster::Error::Setup { .. }) if std::time::Instant::now() < until => {
                tracing::warn!(error = %e, "JetStream not ready for this node yet; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// The operators' listener, when `metrics_listen` is set: ready once
/// `ready` is set and while nothing is in `failed`.
async fn listen(
    config: &Config,
    metrics: &Metrics,
    ready: &Arc<AtomicBool>,
    failed: &watch::Receiver<Option<String>>,
) -> Result<Option<ops::Listener>, Error> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let mut registry = Metrics::registry(&config.node_name);
    metrics.register(&mut registry);
    let endpoint = ops::Endpoint::new(registry, {
        let ready = ready.clone();
        let failed = failed.clone();
        move || readiness(&ready, &failed)
    });
    Ok(Some(ops::Listener::bind(addr, Arc::new(endpoint)).await?))
}

/// `/readyz`: the log is replayed and relays can connect, and the log has
/// not failed since.
fn readiness(ready: &AtomicBool, failed: &watch::Receiver<Option<String>>) -> Result<(), String> {
    if let Some(why) = failed.borrow().as_ref() {
        return Err(format!("the write-ahead log failed: {why}"));
    }
    if !ready.load(Ordering::Relaxed) {
        return Err("replaying the write-ahead log".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_replayed_and_not_after_the_log_fails() {
        let ready = AtomicBool::new(false);
        let (failed, rx) = watch::channel(None);
        let not = readiness(&ready, &rx).expect_err("replaying");
        assert!(not.contains("replaying"), "{not}");
        ready.store(true, Ordering::Relaxed);
        assert_eq!(readiness(&ready, &rx), Ok(()));
        failed.send_replace(Some("disk full".into()));
        let not = readiness(&ready, &rx).expect_err("failed");
        assert!(not.contains("disk full"), "{not}");
    }
}
