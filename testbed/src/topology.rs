//! A whole Ringside topology in one process, on loopback: an origin with its
//! own data directory, relays, and clients with signed tokens. Every port is
//! chosen by the kernel (port 0), so topologies never collide, and every
//! topology generates its own random secrets: nothing signs with a secret
//! printed in the source.
//!
//! With [`Spec::cluster`] set the origin is a cluster instead (see
//! [`crate::cluster`]): NATS servers as child processes, origin nodes in
//! process, relays given every node's address; [`Topology::origin`] is then
//! `None` and [`Topology::cluster`] holds the nodes.
//!
//! Used by `testbed demo`, `testbed bench`, `testbed run` and the
//! integration tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use client_sdk::{Client, ClientBuilder, Room};
use net::secret::generate_hex;
use net::token::{unix_now, Claims, TokenKey};
use net::Identity;
use origin::Origin;
use protocol::{RoomId, RoomState, UserId};
use relay::Relay;

use crate::cluster::{ClusterSpec, Nodes};

/// How to build a topology.
#[derive(Debug, Clone)]
pub struct Spec {
    /// A name for logs and the data directory.
    pub name: String,
    /// Regions, one relay each.
    pub regions: Vec<String>,
    /// Room rules.
    pub rules: origin::rules::Config,
    /// Applied to every relay's configuration.
    pub relay: relay::Config,
    /// The origin's configuration, under what the topology sets itself
    /// (name, address, data directory, secrets, `rules`, `checkpoint_every`).
    pub origin: origin::Config,
    /// Where the origin keeps its log; a fresh temporary directory if `None`.
    pub data_dir: Option<PathBuf>,
    /// The origin writes a checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Rooms opened by the operator at start, as a platform's backend opens
    /// a scheduled show (only a host or an operator opens a room; tests and
    /// scenarios have viewers act in rooms whose host may come later).
    pub open_rooms: Vec<RoomId>,
    /// Cluster mode: origin nodes on a NATS cluster instead of one origin
    /// (`origin` is then every node's configuration under what the cluster
    /// sets). `None` (the default): one origin on its local log.
    pub cluster: Option<ClusterSpec>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            name: "local".into(),
            regions: vec!["region-a".into(), "region-b".into()],
            rules: origin::rules::Config::default(),
            relay: relay::Config {
                // Simulated clients act in bursts, all from one address;
                // real limits are a relay setting.
                limits: relay::Limits {
                    actions_per_sec: 10_000,
                    action_burst: 20_000,
                    messages_per_sec: 100_000,
                    max_per_addr: 100_000,
                    handshakes_per_sec: 100_000,
                    handshake_burst: 100_000,
                    // Tests' bad peers share the honest clients' address.
                    strikes: 0,
                    ..relay::Limits::default()
                },
                ..relay::Config::default()
            },
            origin: origin::Config::default(),
            data_dir: None,
            checkpoint_every: origin::Config::default().checkpoint_every,
            open_rooms: (1..=32).map(RoomId).collect(),
            cluster: None,
        }
    }
}

/// A running topology.
pub struct Topology {
    /// The origin, while it runs (`None` in cluster mode).
    pub origin: Option<Origin>,
    /// Cluster mode's NATS servers and origin nodes.
    pub cluster: Option<Nodes>,
    /// The relays, by index; `None` once killed or drained.
    pub relays: Vec<Option<Relay>>,
    /// The one certificate every server presents (local runs).
    pub identity: Identity,
    /// The origin's configuration (its port fixed after the first start).
    pub origin_config: origin::Config,
    /// Each relay's configuration.
    pub relay_configs: Vec<relay::Config>,
    /// This topology's token secret (random, hex).
    token_secret: String,
    /// This topology's cluster secret (random, hex).
    cluster_secret: String,
    data_dir: PathBuf,
    owns_data_dir: bool,
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("ringside-{name}-{}-{nanos}", std::process::id()))
}

/// Short rules for tests and demos: battles of seconds, not minutes.
pub fn fast_rules() -> origin::rules::Config {
    origin::rules::Config {
        pk_min_duration: Duration::from_secs(1),
        pk_grace: Duration::from_millis(500),
        pk_punishment: Duration::from_millis(500),
        ..origin::rules::Config::default()
    }
}

impl Topology {
    /// Start the origin and one relay per region, with fresh random secrets.
    pub async fn start(spec: Spec) -> anyhow::Result<Topology> {
        let identity = Identity::self_signed(&["localhost"]).context("generating a certificate")?;
        let token_secret = generate_hex().context("generating the token secret")?;
        let cluster_secret = generate_hex().context("generating the cluster secret")?;
        let (data_dir, owns_data_dir) = match &spec.data_dir {
            Some(d) => (d.clone(), false),
            None => (temp_dir(&spec.name), true),
        };
        let origin_config = origin::Config {
            name: format!("{}-origin", spec.name),
            listen: "127.0.0.1:0".parse().context("address")?,
            data_dir: data_dir.clone(),
            cluster_secret: Some(cluster_secret.clone()),
            rules: spec.rules.clone(),
            checkpoint_every: spec.checkpoint_every,
            ..spec.origin.clone()
        };
        let (origin, cluster, origin_config) = match &spec.cluster {
            None => {
                let origin = Origin::start_with(origin_config.clone(), identity.clone())
                    .await
                    .context("starting the origin")?;
                for room in &spec.open_rooms {
                    anyhow::ensure!(origin.open_room(*room).await, "opening {room}");
                }
                // Keep the port: a restarted origin comes back on it.
                let origin_config = origin::Config {
                    listen: origin.addr(),
                    ..origin_config
                };
                (Some(origin), None, origin_config)
            }
            Some(c) => {
                let nodes = Nodes::start(c, &origin_config, &data_dir, identity.clone()).await?;
                for room in &spec.open_rooms {
                    anyhow::ensure!(nodes.open_room(*room).await, "opening {room}");
                }
                (None, Some(nodes), origin_config)
            }
        };
        let mut t = Topology {
            origin,
            cluster,
            relays: Vec::new(),
            identity,
            origin_config,
            relay_configs: Vec::new(),
            token_secret,
            cluster_secret,
            data_dir,
            owns_data_dir,
        };
        for region in &spec.regions {
            let cfg = relay::Config {
                name: format!("relay-{region}"),
                region: region.clone(),
                listen: "127.0.0.1:0".parse().context("address")?,
                origin: t.origin_config.listen,
                origin_cert: None,
                ..spec.relay.clone()
            };
            let cfg = t.to_origins(cfg);
            t.add_relay(cfg).await?;
        }
        Ok(t)
    }

    /// Start one more relay. Secrets it does not set inline are this
    /// topology's.
    pub async fn add_relay(&mut self, mut cfg: relay::Config) -> anyhow::Result<usize> {
        cfg.token_secret
            .get_or_insert_with(|| self.token_secret.clone());
        cfg.cluster_secret
            .get_or_insert_with(|| self.cluster_secret.clone());
        let r = Relay::start_with(
            cfg.clone(),
            self.identity.clone(),
            self.identity.certs.clone(),
        )
        .await
        .with_context(|| format!("starting relay {}", cfg.name))?;
        // Remember the port so the relay could come back on it.
        let cfg = relay::Config {
            listen: r.addr(),
            ..cfg
        };
        self.relay_configs.push(cfg);
        self.relays.push(Some(r));
        Ok(self.relays.len() - 1)
    }

    /// The origin (panics if it is down, or in cluster mode: a test bug).
    pub fn origin(&self) -> &Origin {
        self.origin.as_ref().expect("the origin is running")
    }

    /// Origin time now: the origin's, or a live node's in cluster mode
    /// (nodes share this machine's clock). Panics if no origin runs (a
    /// test bug).
    pub fn now(&self) -> protocol::ServerTime {
        match (&self.origin, &self.cluster) {
            (Some(o), _) => o.now(),
            (None, Some(c)) => c.now().expect("an origin node is running"),
            (None, None) => panic!("no origin is running"),
        }
    }

    /// `cfg` pointed at this topology's origin: in cluster mode, at every
    /// node (`origins`), else unchanged.
    pub fn to_origins(&self, cfg: relay::Config) -> relay::Config {
        match &self.cluster {
            Some(c) => relay::Config {
                origins: c.addrs(),
                ..cfg
            },
            None => cfg,
        }
    }

    /// Relay `i`'s address (it need not be running).
    pub fn relay_addr(&self, i: usize) -> SocketAddr {
        self.relay_configs[i].listen
    }

    /// Every relay's address.
    pub fn relay_addrs(&self) -> Vec<SocketAddr> {
        self.relay_configs.iter().map(|c| c.listen).collect()
    }

    /// A token for `user`, hosting `host_of`.
    pub fn token(&self, user: u64, host_of: &[RoomId]) -> Vec<u8> {
        self.mint(&Claims::client(
            UserId(user),
            host_of.to_vec(),
            unix_now() + 24 * 3600,
        ))
    }

    /// Sign any claims with this topology's token secret (tests that need
    /// an unusual token: expired, operator, limited rooms).
    pub fn mint(&self, claims: &Claims) -> Vec<u8> {
        TokenKey::new(self.token_secret.as_bytes()).mint(claims)
    }

    /// This topology's token secret (random, hex), for processes of its own.
    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }

    /// This topology's cluster secret (random, hex).
    pub fn cluster_secret(&self) -> &str {
        &self.cluster_secret
    }

    /// A client builder for `user` that trusts this topology.
    pub fn client_builder(&self, user: u64, host_of: &[RoomId]) -> ClientBuilder {
        let b = Client::builder().token(self.token(user, host_of));
        // Our own PEM always parses.
        b.trust_pem(&self.identity.cert_pem())
            .expect("own certificate")
    }

    /// A connected client of `user` offered the relays `relays` (by index).
    pub async fn client(
        &self,
        user: u64,
        host_of: &[RoomId],
        relays: &[usize],
    ) -> anyhow::Result<Client> {
        let mut b = self.client_builder(user, host_of);
        for i in relays {
            b = b.relay(self.relay_addr(*i));
        }
        b.connect()
            .await
            .with_context(|| format!("connecting user {user}"))
    }

    /// The origin's committed state of a room (in cluster mode, its
    /// owner's).
    pub async fn origin_state(&self, room: RoomId) -> Option<RoomState> {
        if let Some(c) = &self.cluster {
            return c.room_state(room).await;
        }
        self.origin.as_ref()?.room_state(room).await
    }

    /// Restart the origin from its data directory on the same port.
    pub async fn restart_origin(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.cluster.is_none(),
            "cluster mode has origin nodes, not one origin to restart"
        );
        let o = Origin::start_with(self.origin_config.clone(), self.identity.clone())
            .await
            .context("restarting the origin")?;
        self.origin = Some(o);
        Ok(())
    }

    /// Wait until every room handle's state equals the origin's; `Err` with
    /// the first difference if `within` passes first.
    pub async fn converge(&self, rooms: &[&Room], within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        for room in rooms {
            loop {
                let origin = self
                    .origin_state(room.id())
                    .await
                    .with_context(|| format!("{} unknown at the origin", room.id()))?;
                let mine = room.state();
                if mine == origin {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    anyhow::bail!(
                        "{} did not converge: client at {}, origin at {}",
                        room.id(),
                        mine.seq,
                        origin.seq
                    );
                }
                let mut w = room.watch();
                let _ = tokio::time::timeout(Duration::from_millis(50), w.changed()).await;
            }
        }
        Ok(())
    }

    /// Stop everything cleanly.
    pub async fn shutdown(mut self) {
        for r in self.relays.iter_mut() {
            if let Some(r) = r.take() {
                r.shutdown().await;
            }
        }
        if let Some(o) = self.origin.take() {
            let _ = o.shutdown().await;
        }
        if let Some(c) = self.cluster.as_mut() {
            c.shutdown().await;
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
