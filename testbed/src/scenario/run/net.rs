//! The network of a run: an in-process topology (origin and one relay per
//! region) with every path behind its own impaired link, as [`Paths`]
//! describes them. Relays reach the origin through their region's origin
//! link (their `origin` address is the link's), so links survive an origin
//! restart: it comes back on the same port behind them.
//!
//! With `[cluster]` the origin is NATS servers and origin nodes
//! ([`crate::cluster`]), every scenario room opened on its owner at start
//! (as in every run: the default rooms and the scenario's),
//! and each relay is given every node's address directly: the relay–origin
//! paths are not impaired in a cluster run (the scenario's checks refuse
//! steps that would change them).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context as _;

use crate::link::{spawn_link, LinkConfig, LinkHandle, LinkStats};
use crate::topology::{Spec, Topology};

use crate::scenario::run::paths::{LinkId, PathChange, Paths};
use crate::scenario::spec::Scenario;

/// The topology and its links.
pub struct Net {
    /// Origin and relays (relay `i` is region `i`'s).
    pub topology: Topology,
    paths: Paths,
    links: BTreeMap<LinkId, LinkHandle>,
    regions: usize,
}

impl Net {
    /// Start the origin, the origin links, the relays and the client links.
    pub async fn start(s: &Scenario) -> anyhow::Result<Net> {
        let mut spec = Spec {
            name: format!("scenario-{}", s.name),
            regions: Vec::new(),
            rules: s.rules.origin_config(),
            cluster: s.cluster.clone(),
            ..Spec::default()
        };
        // Every scenario room is open from the start, as a platform opens
        // scheduled shows (hosts here do not act before their battles). In
        // a cluster only those: an idle room would count as one that
        // never resumed after a failure.
        if s.cluster.is_some() {
            spec.open_rooms.clear();
        }
        for r in &s.rooms {
            if !spec.open_rooms.contains(&r.id) {
                spec.open_rooms.push(r.id);
            }
        }
        let relay_defaults = spec.relay.clone();
        let mut topology = Topology::start(spec).await?;
        let paths = Paths::new(s);
        let mut links = BTreeMap::new();
        for (r, region) in s.regions.iter().enumerate() {
            let id = LinkId::Origin { region: r };
            let cfg = relay::Config {
                name: format!("relay-{}", region.name),
                region: region.name.clone(),
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                origin_cert: None,
                cert_out: None,
                ..relay_defaults.clone()
            };
            let cfg = match topology.origin.as_ref().map(origin::Origin::addr) {
                Some(origin) => {
                    let link = spawn(&paths, id, origin, s.seed).await?;
                    let origin = link.local_addr();
                    links.insert(id, link);
                    relay::Config { origin, ..cfg }
                }
                None => topology.to_origins(cfg),
            };
            let index = topology.add_relay(cfg).await?;
            debug_assert_eq!(index, r, "relays are added in region order");
        }
        for id in paths.links() {
            if let LinkId::Client { to, .. } = id {
                let link = spawn(&paths, id, topology.relay_addr(to), s.seed).await?;
                links.insert(id, link);
            }
        }
        Ok(Net {
            topology,
            paths,
            links,
            regions: s.regions.len(),
        })
    }

    /// The relays a client of `region` is given, best first: its own
    /// region's, then the others in file order — each through its link.
    pub fn relays_for(&self, region: usize) -> Vec<SocketAddr> {
        std::iter::once(region)
            .chain((0..self.regions).filter(|r| *r != region))
            .filter_map(|to| {
                self.links
                    .get(&LinkId::Client { from: region, to })
                    .map(LinkHandle::local_addr)
            })
            .collect()
    }

    /// Apply an impairment change to the links it touches.
    pub async fn apply(&mut self, change: &PathChange) -> anyhow::Result<()> {
        for id in self.paths.handle(change) {
            let profile = self.paths.effective(id);
            if let Some(link) = self.links.get(&id) {
                link.set_profile(profile)
                    .await
                    .with_context(|| format!("changing link {}", self.paths.name(id)))?;
            }
        }
        Ok(())
    }

    /// Stop the topology, then the links; returns each link's counters.
    pub async fn shutdown(self) -> (Vec<(String, LinkStats)>, Vec<String>) {
        self.topology.shutdown().await;
        let mut stats = Vec::new();
        let mut errors = Vec::new();
        for (id, link) in self.links {
            let name = self.paths.name(id);
            match link.shutdown().await {
                Ok(s) => stats.push((name, s)),
                Err(e) => errors.push(format!("link {name}: {e:#}")),
            }
        }
        (stats, errors)
    }
}

async fn spawn(
    paths: &Paths,
    id: LinkId,
    upstream: SocketAddr,
    seed: u64,
) -> anyhow::Result<LinkHandle> {
    let config = LinkConfig {
        seed: paths.seed(id, seed),
        ..LinkConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
    }
    .with_profile(paths.effective(id));
    spawn_link(config)
        .await
        .with_context(|| format!("starting link {}", paths.name(id)))
}
