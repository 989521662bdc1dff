//! A cluster run's failures, played and remembered: which node a step
//! meant when it played (`owner_of` a room is resolved then), when each
//! failure happened on this machine's clock (the clock JetStream stamps
//! its messages with), and at the end what the room logs show
//! ([`crate::cluster::ClusterEvidence`]).

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::cluster::{logs, pauses, writers, ClusterEvidence, ClusterFailure, Nodes};
use crate::scenario::run::net::Net;
use crate::scenario::spec::{Edge, NodeRef, StepAction};

/// What the cluster steps did so far.
#[derive(Debug, Default)]
pub(super) struct ClusterPlay {
    /// Every failure, in play order.
    failures: Vec<ClusterFailure>,
    /// The node each partition step cut, by step, until it heals.
    partitioned: BTreeMap<usize, usize>,
}

/// Now, Unix nanoseconds.
fn unix_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

async fn resolve(nodes: &Nodes, node: NodeRef) -> anyhow::Result<usize> {
    match node {
        NodeRef::Index(i) => Ok(i),
        NodeRef::OwnerOf(room) => (nodes.holder(room).await)
            .with_context(|| format!("no live origin node serves room {}", room.0)),
    }
}

impl ClusterPlay {
    /// Play a cluster step's `edge` (`step`: its index, `label`: what the
    /// report calls it); a crash or drain finishes in a task pushed to
    /// `background`.
    pub(super) async fn play(
        &mut self,
        net: &mut Net,
        step: usize,
        action: &StepAction,
        edge: Edge,
        label: &str,
        background: &mut Vec<JoinHandle<()>>,
    ) -> anyhow::Result<()> {
        let nodes = (net.topology.cluster.as_mut())
            .context("a cluster step without a cluster (the scenario check lets none through)")?;
        let mut failed = |node: Option<String>, at_ns| {
            self.failures.push(ClusterFailure {
                label: label.to_owned(),
                at_ns,
                node,
                led: None,
            });
        };
        match (action, edge) {
            (StepAction::KillOriginNode { node }, _) => {
                let i = resolve(nodes, *node).await?;
                let (name, at) = (nodes.nodes[i].name.clone(), unix_ns());
                background.push(nodes.kill(i)?);
                failed(Some(name), at);
            }
            (StepAction::DrainOriginNode { node }, _) => {
                let i = resolve(nodes, *node).await?;
                let (name, at) = (nodes.nodes[i].name.clone(), unix_ns());
                background.push(nodes.drain(i)?);
                failed(Some(name), at);
            }
            (StepAction::PartitionOriginNode { node, .. }, Edge::Begin) => {
                let i = resolve(nodes, *node).await?;
                let (name, at) = (nodes.nodes[i].name.clone(), unix_ns());
                nodes.partition(i)?;
                failed(Some(name), at);
                self.partitioned.insert(step, i);
            }
            (StepAction::PartitionOriginNode { .. }, Edge::End) => {
                if let Some(i) = self.partitioned.remove(&step) {
                    nodes.heal(i)?;
                }
            }
            (StepAction::KillNatsServer { server }, _) => {
                // What it pauses: the streams it leads (their elections).
                let name = nodes.nats.name(*server).to_owned();
                let urls = nodes.nats.urls();
                let config = nodes.log_config();
                let led = logs::led_by(&urls, &config, &name).await;
                let at = unix_ns();
                nodes.kill_nats(*server)?;
                let (said, shards) = match led {
                    Ok((led, of)) if led.is_empty() => {
                        (format!(" (it led none of {of} streams)"), Some(Vec::new()))
                    }
                    Ok((led, of)) => {
                        let prefix = format!("{}_", config.stream);
                        let shards = (led.iter())
                            .filter_map(|n| n.strip_prefix(&prefix)?.parse().ok())
                            .collect();
                        let names = led.join(", ");
                        (
                            format!(" (it led {} of {of} streams: {names})", led.len()),
                            Some(shards),
                        )
                    }
                    Err(e) => (format!(" (its streams unknown: {e:#})"), None),
                };
                let of = usize::try_from(config.shards.max(1)).unwrap_or(1);
                self.failures.push(ClusterFailure {
                    label: format!("{label}{said}"),
                    at_ns: at,
                    node: None,
                    led: shards.map(|s| (s, of)),
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Heal what is still cut (the run ended inside a partition).
    pub(super) fn heal_all(&mut self, net: &Net) {
        if let Some(nodes) = &net.topology.cluster {
            for (_, i) in std::mem::take(&mut self.partitioned) {
                let _ = nodes.heal(i);
            }
        }
    }

    /// Read every room log back and judge it (`None` without a cluster).
    pub(super) async fn evidence(&self, net: &Net) -> Option<ClusterEvidence> {
        let nodes = net.topology.cluster.as_ref()?;
        let urls = (nodes.nats.urls().into_iter().enumerate())
            .filter(|(i, _)| nodes.nats.is_running(*i))
            .map(|(_, u)| u)
            .collect::<Vec<_>>();
        let messages = match logs::read_all(&urls, &nodes.log_config()).await {
            Ok(m) => m,
            Err(e) => {
                return Some(ClusterEvidence {
                    read_error: Some(format!("{e:#}")),
                    ..ClusterEvidence::default()
                })
            }
        };
        let rooms = writers::by_room(messages);
        Some(ClusterEvidence {
            writers: writers::check(&rooms),
            failures: (self.failures.iter().cloned())
                .map(|f| pauses::pauses(&rooms, f))
                .collect(),
            read_error: None,
        })
    }
}
