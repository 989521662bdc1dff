//! `[cluster]` and the cluster steps, checked: the cluster's sizes, the
//! steps that act on origin nodes and NATS servers (`kill_origin_node`,
//! `drain_origin_node`, `partition_origin_node`, `kill_nats_server`), a
//! `pk` step's `pairs`, and what a cluster scenario cannot do (restart the
//! one origin; impair or cut the relay–origin paths, which in cluster mode
//! go straight to the nodes).

use std::time::Duration;

use protocol::RoomId;

use crate::cluster::ClusterSpec;
use crate::scenario::spec::error::{invalid, ScenarioError};
use crate::scenario::spec::file::{ClusterFile, NodeFile};
use crate::scenario::spec::types::{NodeRef, PathKind, Step, StepAction, Traffic};

/// Most origin nodes or NATS servers in one scenario (one machine).
const MAX_NODES: usize = 7;
/// Most battles one `pk` step starts (`pairs`).
const MAX_PAIRS: u32 = 1_000;

/// Looks a room id up: the room, or an error saying which exist.
pub(super) type RoomLookup<'a> = &'a dyn Fn(&str, u64) -> Result<RoomId, ScenarioError>;

/// What a step may refer to in the cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterRefs {
    nodes: usize,
    nats_servers: usize,
}

impl ClusterRefs {
    pub(crate) fn of(c: &ClusterSpec) -> ClusterRefs {
        ClusterRefs {
            nodes: c.nodes,
            nats_servers: c.nats_servers,
        }
    }
}

/// `[cluster]`: sizes in range, replicas at most the servers (default:
/// as many as servers, up to 3).
pub(super) fn spec(f: ClusterFile) -> Result<ClusterSpec, ScenarioError> {
    for (key, v) in [("nodes", f.nodes), ("nats_servers", f.nats_servers)] {
        if !(1..=MAX_NODES).contains(&v) {
            return Err(invalid(format!(
                "cluster.{key} must be in [1, {MAX_NODES}], got {v}"
            )));
        }
    }
    let replicas = f.replicas.unwrap_or(f.nats_servers.min(3));
    if !(1..=f.nats_servers).contains(&replicas) {
        return Err(invalid(format!(
            "cluster.replicas must be in [1, nats_servers = {}], got {replicas}",
            f.nats_servers
        )));
    }
    if f.shards == Some(0) {
        return Err(invalid("cluster.shards must be at least 1"));
    }
    if let Some(ttl) = f.lease_ttl_ms {
        if !(100..=60_000).contains(&ttl) {
            return Err(invalid(format!(
                "cluster.lease_ttl_ms must be in [100, 60000], got {ttl}"
            )));
        }
    }
    Ok(ClusterSpec {
        nodes: f.nodes,
        nats_servers: f.nats_servers,
        replicas,
        shards: f.shards,
        lease_ttl: f.lease_ttl_ms.map(Duration::from_millis),
    })
}

/// A `pk` step's battles: `pairs` of them, `rooms[0] + 2k` against
/// `rooms[1] + 2k`, every room existing.
pub(super) fn pairs(
    at: &str,
    room: RoomLookup<'_>,
    rooms: [RoomId; 2],
    duration_secs: u32,
    pairs: u32,
) -> Result<Vec<StepAction>, ScenarioError> {
    if !(1..=MAX_PAIRS).contains(&pairs) {
        return Err(invalid(format!(
            "{at}: pk.pairs must be in [1, {MAX_PAIRS}], got {pairs}"
        )));
    }
    (0..u64::from(pairs))
        .map(|k| {
            let a = room(at, rooms[0].0.saturating_add(2 * k))?;
            let b = room(at, rooms[1].0.saturating_add(2 * k))?;
            Ok(StepAction::Traffic(Traffic::Pk {
                rooms: [a, b],
                duration_secs,
            }))
        })
        .collect()
}

/// The cluster keys of one `[[step]]`.
pub(super) struct ClusterSteps {
    pub(super) kill_origin_node: Option<NodeFile>,
    pub(super) drain_origin_node: Option<NodeFile>,
    pub(super) partition_origin_node: Option<NodeFile>,
    pub(super) kill_nats_server: Option<usize>,
}

/// Check a step's cluster keys and push their actions.
pub(super) fn actions(
    f: ClusterSteps,
    at: &str,
    cluster: Option<ClusterRefs>,
    room: RoomLookup<'_>,
    fits: &dyn Fn(&str, f64) -> Result<Duration, ScenarioError>,
    out: &mut Vec<StepAction>,
) -> Result<(), ScenarioError> {
    let any = f.kill_origin_node.is_some()
        || f.drain_origin_node.is_some()
        || f.partition_origin_node.is_some()
        || f.kill_nats_server.is_some();
    if !any {
        return Ok(());
    }
    let Some(c) = cluster else {
        return Err(invalid(format!(
            "{at}: origin node and NATS steps need a [cluster] section"
        )));
    };
    if let Some(n) = f.kill_origin_node {
        let node = node(at, "kill_origin_node", &n, c, room)?;
        no_length(at, "kill_origin_node", &n)?;
        out.push(StepAction::KillOriginNode { node });
    }
    if let Some(n) = f.drain_origin_node {
        let node = node(at, "drain_origin_node", &n, c, room)?;
        no_length(at, "drain_origin_node", &n)?;
        out.push(StepAction::DrainOriginNode { node });
    }
    if let Some(n) = f.partition_origin_node {
        let node = node(at, "partition_origin_node", &n, c, room)?;
        let Some(len) = n.for_s else {
            return Err(invalid(format!("{at}: partition_origin_node needs for_s")));
        };
        let for_ = fits("partition_origin_node.for_s", len)?;
        out.push(StepAction::PartitionOriginNode { node, for_ });
    }
    if let Some(server) = f.kill_nats_server {
        if server >= c.nats_servers {
            return Err(invalid(format!(
                "{at}: kill_nats_server = {server}, but the cluster has servers 0 to {}",
                c.nats_servers - 1
            )));
        }
        out.push(StepAction::KillNatsServer { server });
    }
    Ok(())
}

fn node(
    at: &str,
    key: &str,
    n: &NodeFile,
    c: ClusterRefs,
    room: RoomLookup<'_>,
) -> Result<NodeRef, ScenarioError> {
    match (n.node, n.owner_of) {
        (Some(i), None) if i < c.nodes => Ok(NodeRef::Index(i)),
        (Some(i), None) => Err(invalid(format!(
            "{at}: {key}.node = {i}, but the cluster has nodes 0 to {}",
            c.nodes - 1
        ))),
        (None, Some(id)) => Ok(NodeRef::OwnerOf(room(at, id)?)),
        _ => Err(invalid(format!(
            "{at}: {key} needs exactly one of node (an index) and owner_of (a room)"
        ))),
    }
}

fn no_length(at: &str, key: &str, n: &NodeFile) -> Result<(), ScenarioError> {
    match n.for_s {
        Some(_) => Err(invalid(format!("{at}: {key} takes no for_s"))),
        None => Ok(()),
    }
}

/// Across steps: cluster steps only with `[cluster]`; no origin restart or
/// relay–origin path change with one; nodes killed or drained at most once
/// each, one always left; at most a minority of NATS servers killed.
pub(super) fn steps(steps: &[Step], cluster: Option<&ClusterSpec>) -> Result<(), ScenarioError> {
    let Some(c) = cluster else {
        return Ok(());
    };
    let mut removed = Vec::new();
    let mut nats_killed = Vec::new();
    for s in steps {
        let when = format!("{} at {:.1} s", s.action.key(), s.at.as_secs_f64());
        match &s.action {
            StepAction::RestartOrigin { .. }
            | StepAction::Partition { .. }
            | StepAction::Impair {
                path: PathKind::Origin,
                ..
            } => {
                return Err(invalid(format!(
                    "{when}: not in a cluster scenario (relays reach the origin nodes directly; \
                     use kill_origin_node, partition_origin_node or kill_nats_server)"
                )));
            }
            StepAction::KillOriginNode { node } | StepAction::DrainOriginNode { node } => {
                if removed.contains(node) {
                    return Err(invalid(format!("{when}: {} is already gone", node.label())));
                }
                removed.push(*node);
                if removed.len() >= c.nodes {
                    return Err(invalid(format!("{when}: no origin node would be left")));
                }
            }
            StepAction::KillNatsServer { server } => {
                if nats_killed.contains(server) {
                    return Err(invalid(format!(
                        "{when}: NATS server {server} is already dead"
                    )));
                }
                nats_killed.push(*server);
                if 2 * nats_killed.len() >= c.nats_servers {
                    return Err(invalid(format!(
                        "{when}: the NATS cluster would lose its majority (of {})",
                        c.nats_servers
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::scenario::spec::{Gate, NodeRef, Scenario, StepAction, Traffic};
    use protocol::RoomId;
    use std::time::Duration;

    const SHIPPED: &str = include_str!("../../../scenarios/cluster-battles.toml");

    /// Two regions, rooms 1-4, a viewer each; `extra` appended.
    fn with(extra: &str) -> Result<Scenario, String> {
        let text = format!(
            r#"
            duration_s = 30
            [[region]]
            name = "a"
            client_rtt_ms = 10
            [[region]]
            name = "b"
            client_rtt_ms = 10
            [[room]]
            id = 1
            count = 4
            host_region = "a"
            [[viewers]]
            room = 1
            room_count = 4
            region = "a"
            count = 1
            {extra}
            "#
        );
        Scenario::from_toml(&text, "t").map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_cluster_scenario_parses() {
        let s = Scenario::from_toml(SHIPPED, "cluster-battles").expect("valid");
        let c = s.cluster.clone().expect("a cluster");
        assert_eq!((c.nodes, c.nats_servers, c.replicas), (3, 3, 3));
        assert_eq!(s.rooms.len(), 200);
        assert_eq!(s.rooms[199].id, RoomId(200));
        assert_eq!(s.viewers.len(), 200);
        assert_eq!(s.client_count(), 600);
        assert_eq!(s.battles_asked(), 100);
        let last_pk = s.steps.iter().rev().find_map(|st| match st.action {
            StepAction::Traffic(Traffic::Pk { rooms, .. }) => Some(rooms),
            _ => None,
        });
        assert_eq!(last_pk, Some([RoomId(199), RoomId(200)]));
        let failures: Vec<&StepAction> = (s.steps.iter())
            .map(|st| &st.action)
            .filter(|a| a.is_cluster())
            .collect();
        assert_eq!(
            failures,
            vec![
                &StepAction::KillOriginNode {
                    node: NodeRef::OwnerOf(RoomId(1))
                },
                &StepAction::KillNatsServer { server: 2 },
            ]
        );
        assert!(s.gates.iter().any(|l| l.gate == Gate::RoomResumeP99S));
    }

    #[test]
    fn cluster_keys_parse_with_defaults() {
        let s = with(
            r#"
            [cluster]
            lease_ttl_ms = 600
            [[step]]
            at_s = 5
            partition_origin_node = { node = 2, for_s = 3 }
            [[step]]
            at_s = 9
            drain_origin_node = { node = 0 }
            "#,
        )
        .expect("valid");
        let c = s.cluster.expect("cluster");
        assert_eq!((c.nodes, c.nats_servers, c.replicas), (3, 3, 3));
        assert_eq!(c.lease_ttl, Some(Duration::from_millis(600)));
        assert_eq!(
            s.steps[0].action,
            StepAction::PartitionOriginNode {
                node: NodeRef::Index(2),
                for_: Duration::from_secs(3)
            }
        );
        let one = with("[cluster]\nnats_servers = 1").expect("valid");
        assert_eq!(one.cluster.map(|c| c.replicas), Some(1));
    }

    #[test]
    fn impossible_cluster_steps_are_refused() {
        let cases = [
            ("[[step]]\nat_s = 1\nkill_origin_node = { node = 0 }", "need a [cluster]"),
            (
                "[cluster]\n[[step]]\nat_s = 1\nkill_origin_node = { node = 3 }",
                "nodes 0 to 2",
            ),
            (
                "[cluster]\n[[step]]\nat_s = 1\nkill_origin_node = { node = 0, owner_of = 1 }",
                "exactly one of node",
            ),
            (
                "[cluster]\n[[step]]\nat_s = 1\npartition_origin_node = { node = 0 }",
                "needs for_s",
            ),
            (
                "[cluster]\n[[step]]\nat_s = 1\nkill_nats_server = 0\n[[step]]\nat_s = 2\nkill_nats_server = 1",
                "majority",
            ),
            (
                "[cluster]\n[[step]]\nat_s = 1\nkill_origin_node = { node = 0 }\n\
                 [[step]]\nat_s = 2\ndrain_origin_node = { node = 0 }",
                "already gone",
            ),
            (
                "[cluster]\n[[step]]\nat_s = 1\nrestart_origin = { down_s = 1 }",
                "not in a cluster scenario",
            ),
            ("[cluster]\nnats_servers = 1\nreplicas = 3", "replicas must be"),
            (
                "[[step]]\nat_s = 1\npk = { rooms = [1, 2], duration_s = 5, pairs = 3 }",
                "no room with id 5",
            ),
            ("[gates]\nroom_resume_p99_s = 2", "measures nothing"),
        ];
        for (extra, why) in cases {
            let err = with(extra).expect_err(extra);
            assert!(err.contains(why), "{extra}: {err}");
        }
        let two = with("[[step]]\nat_s = 1\npk = { rooms = [1, 2], duration_s = 5, pairs = 2 }")
            .expect("valid");
        assert_eq!(two.battles_asked(), 2);
    }
}
