//! Origin nodes in cluster mode, in process: a [`NatsCluster`], and
//! `nodes` origins each started with `Origin::start_with` and a `[cluster]`
//! section naming every NATS server — each through a [`TcpProxy`] of its
//! own, so one node can be partitioned from NATS while the others keep
//! their connections. All nodes share one TLS identity and the topology's
//! cluster secret.
//!
//! The nodes and their proxies run on a tokio runtime of their own (two
//! worker threads), as separate machines would: a crowd of hundreds of
//! clients in the testbed's runtime must not delay their lease renewals
//! (a node that renews late loses its rooms; on a shared runtime that
//! measured the testbed's load, not the cluster).
//!
//! Failures: [`Nodes::kill`] (a crash: `Origin::abort`), [`Nodes::drain`]
//! (a graceful stop: `Origin::shutdown`, which hands the node's rooms over
//! before it stops), [`Nodes::partition`] / [`Nodes::heal`] (its proxies cut),
//! [`Nodes::kill_nats`] (SIGKILL a NATS server).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use net::Identity;
use origin::Origin;
use protocol::{RoomId, RoomState, ServerTime};
use tokio::task::JoinHandle;

use super::nats::NatsCluster;
use super::proxy::TcpProxy;

/// How to build an origin cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Origin nodes.
    pub nodes: usize,
    /// NATS servers (clustered when more than one).
    pub nats_servers: usize,
    /// Copies of each room log and of the lease bucket (at most
    /// `nats_servers`).
    pub replicas: usize,
    /// Streams the room logs are spread over (`None`: the origin's
    /// default).
    pub shards: Option<u32>,
    /// The node lease's time to live (`None`: the origin's default).
    pub lease_ttl: Option<Duration>,
}

impl Default for ClusterSpec {
    /// Three nodes on three NATS servers, replicas 3.
    fn default() -> Self {
        ClusterSpec {
            nodes: 3,
            nats_servers: 3,
            replicas: 3,
            shards: None,
            lease_ttl: None,
        }
    }
}

/// One origin node.
pub struct OriginNode {
    /// Its cluster name (its leases' and log entries' name, and the name
    /// relays see in its Welcome).
    pub name: String,
    /// Its configuration (its port fixed after the first start).
    pub config: origin::Config,
    /// The node, while it runs.
    pub origin: Option<Origin>,
    /// Its way to each NATS server, in server order.
    proxies: Vec<TcpProxy>,
}

/// The NATS cluster and the origin nodes.
pub struct Nodes {
    /// The NATS servers.
    pub nats: NatsCluster,
    /// The origin nodes, in order.
    pub nodes: Vec<OriginNode>,
    identity: Identity,
    /// The nodes' runtime (shut down in the background on drop).
    runtime: Option<tokio::runtime::Runtime>,
    /// Where node work is spawned.
    handle: tokio::runtime::Handle,
}

/// Start `servers` NATS servers and wait for JetStream; once more on fresh
/// ports if the cluster does not form (its ports are chosen free but
/// taken only when each server starts: another process can take one in
/// between, and a server missing a route leaves JetStream short of
/// peers). The first failure is logged with the servers' last lines.
async fn start_nats(servers: usize) -> anyhow::Result<NatsCluster> {
    let mut first = None;
    for _ in 0..2 {
        let nats = tokio::task::spawn_blocking(move || NatsCluster::start(servers))
            .await
            .context("the NATS launcher")??;
        match nats.wait_jetstream().await {
            Ok(()) => return Ok(nats),
            Err(e) if first.is_none() => {
                tracing::warn!(error = %format!("{e:#}"), "the NATS cluster did not form: starting it again");
                first = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(first.unwrap_or_else(|| anyhow::anyhow!("the NATS cluster did not form")))
}

/// Threads of the nodes' runtime.
const NODE_THREADS: usize = 2;

impl Nodes {
    /// Start the NATS cluster, wait for JetStream, then every node:
    /// `base` is each node's configuration apart from its name, address,
    /// data directory (`data_dir/<name>`) and `[cluster]` section.
    pub async fn start(
        spec: &ClusterSpec,
        base: &origin::Config,
        data_dir: &Path,
        identity: Identity,
    ) -> anyhow::Result<Nodes> {
        anyhow::ensure!(spec.nodes >= 1, "a cluster needs at least one origin node");
        anyhow::ensure!(
            (1..=spec.nats_servers).contains(&spec.replicas),
            "replicas must be in [1, nats_servers]"
        );
        let nats = start_nats(spec.nats_servers).await?;
        let servers = spec.nats_servers;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(NODE_THREADS)
            .thread_name("origin-nodes")
            .enable_all()
            .build()
            .context("the origin nodes' runtime")?;
        let handle = runtime.handle().clone();
        let mut nodes = Vec::with_capacity(spec.nodes);
        for i in 0..spec.nodes {
            let name = format!("node-{i}");
            let mut proxies = Vec::with_capacity(servers);
            for port in nats.ports() {
                let upstream = SocketAddr::from(([127, 0, 0, 1], port));
                let proxy = handle.spawn(TcpProxy::spawn(upstream));
                proxies.push(proxy.await.context("the proxy task")??);
            }
            let urls = (proxies.iter())
                .map(|p| format!("nats://{}", p.addr()))
                .collect::<Vec<_>>()
                .join(",");
            let defaults = origin::cluster::Config::default();
            let config = origin::Config {
                name: name.clone(),
                node_name: name.clone(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                data_dir: data_dir.join(&name),
                cluster: Some(origin::cluster::Config {
                    node: name.clone(),
                    nats_url: urls,
                    replicas: spec.replicas,
                    shards: spec.shards.unwrap_or(defaults.shards),
                    lease_ttl: spec.lease_ttl.unwrap_or(defaults.lease_ttl),
                    ..defaults
                }),
                ..base.clone()
            };
            nodes.push(OriginNode {
                name,
                config,
                origin: None,
                proxies,
            });
        }
        let mut this = Nodes {
            nats,
            nodes,
            identity,
            runtime: Some(runtime),
            handle,
        };
        for i in 0..spec.nodes {
            this.start_node(i).await?;
        }
        Ok(this)
    }

    /// Start node `i` (again) on its port.
    pub async fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        anyhow::ensure!(n.origin.is_none(), "{} is running", n.name);
        let start = Origin::start_with(n.config.clone(), self.identity.clone());
        let o = (self.handle.spawn(start).await)
            .context("the node's start task")?
            .with_context(|| format!("starting origin node {}", n.name))?;
        n.config.listen = o.addr();
        n.origin = Some(o);
        Ok(())
    }

    /// The `[cluster]` section the nodes share (node 0's): where the room
    /// logs are, to read them back.
    pub fn log_config(&self) -> origin::cluster::Config {
        // Every node is built with a `[cluster]` section in `start`.
        (self.nodes[0].config.cluster.clone()).unwrap_or_default()
    }

    /// Every node's address, running or not, in order: what relays are
    /// given.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.config.listen).collect()
    }

    /// The index of the node called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Origin)> {
        (self.nodes.iter().enumerate()).filter_map(|(i, n)| n.origin.as_ref().map(|o| (i, o)))
    }

    /// The live node placement wants `room` on (rendezvous hashing over the
    /// live nodes' names, as the origin and relays compute it; a battle's
    /// rooms may sit elsewhere for its length).
    pub fn owner(&self, room: RoomId) -> Option<usize> {
        let names = self.live().map(|(i, _)| self.nodes[i].name.as_str());
        let name = protocol::placement::owner(room, names)?;
        self.index(name)
    }

    /// Origin time now (the nodes share this machine's clock).
    pub fn now(&self) -> Option<ServerTime> {
        self.live().next().map(|(_, o)| o.now())
    }

    /// The live node the nodes say should serve `room` now (their
    /// placement with PK pins: `Origin::owner_of` as the first live node
    /// sees it), else placement over the live names.
    pub fn serving(&self, room: RoomId) -> Option<usize> {
        let named = self.live().find_map(|(_, o)| o.owner_of(room));
        (named.and_then(|n| self.index(&n)))
            .filter(|i| self.nodes[*i].origin.is_some())
            .or_else(|| self.owner(room))
    }

    /// Open `room` as an operator would: on the node serving it, else on
    /// the first live node that takes it (a node not serving it refuses).
    pub async fn open_room(&self, room: RoomId) -> bool {
        let first = self.serving(room);
        let order = first.into_iter().chain(self.live().map(|(i, _)| i));
        for i in order {
            if let Some(o) = &self.nodes[i].origin {
                if o.open_room(room).await {
                    return true;
                }
            }
        }
        false
    }

    /// A room's committed state: the most advanced any live node holds
    /// (its owner's; a deposed node's copy can only be older).
    pub async fn room_state(&self, room: RoomId) -> Option<RoomState> {
        let mut best: Option<RoomState> = None;
        for (_, o) in self.live() {
            if let Some(st) = o.room_state(room).await {
                if best.as_ref().is_none_or(|b| st.seq > b.seq) {
                    best = Some(st);
                }
            }
        }
        best
    }

    /// The live node that serves `room` now: the one the nodes name (a
    /// battle's rooms sit on one node, wherever placement alone would put
    /// them), else the one holding its most advanced state.
    pub async fn holder(&self, room: RoomId) -> Option<usize> {
        if let Some(i) = self
            .live()
            .find_map(|(_, o)| o.owner_of(room))
            .and_then(|n| self.index(&n))
        {
            if self.nodes[i].origin.is_some() {
                return Some(i);
            }
        }
        let mut best: Option<(u64, usize)> = None;
        for (i, o) in self.live() {
            if let Some(st) = o.room_state(room).await {
                if best.is_none_or(|(seq, _)| st.seq.0 > seq) {
                    best = Some((st.seq.0, i));
                }
            }
        }
        best.map(|(_, i)| i).or_else(|| self.owner(room))
    }

    /// Crash node `i` (`Origin::abort`: no goodbye, its NATS client and
    /// renewals stop); the returned task finishes the abort.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<JoinHandle<()>> {
        let n = self.nodes.get_mut(i).context("no such origin node")?;
        let o = n
            .origin
            .take()
            .with_context(|| format!("{} is down", n.name))?;
        Ok(self.handle.spawn(o.abort()))
    }

    /// Stop node `i` gracefully (`Origin::shutdown`).
    pub fn drain(&mut self, i: usize) -> anyhow::Result<JoinHandle<()>> {
        let n = self.nodes.get_mut(i).context("no such origin node")?;
        let name = n.name.clone();
        let o = n.origin.take().with_context(|| format!("{name} is down"))?;
        Ok(self.handle.spawn(async move {
            if let Err(e) = o.shutdown().await {
                tracing::warn!(node = %name, error = %e, "drained node stopped with an error");
            }
        }))
    }

    /// Cut node `i` off every NATS server (its connections closed, new
    /// ones refused); relays still reach it.
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        let n = self.nodes.get(i).context("no such origin node")?;
        n.proxies.iter().for_each(TcpProxy::cut);
        Ok(())
    }

    /// Let node `i` reach NATS again.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let n = self.nodes.get(i).context("no such origin node")?;
        n.proxies.iter().for_each(TcpProxy::heal);
        Ok(())
    }

    /// SIGKILL NATS server `i`.
    pub fn kill_nats(&mut self, i: usize) -> anyhow::Result<()> {
        self.nats.kill(i)
    }

    /// Stop every node cleanly (the NATS servers go on drop).
    pub async fn shutdown(&mut self) {
        for n in &mut self.nodes {
            if let Some(o) = n.origin.take() {
                let _ = self.handle.spawn(o.shutdown()).await;
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Nodes still running die with their runtime; dropping a runtime
        // may not block inside another one.
        for n in &mut self.nodes {
            n.proxies.clear();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
