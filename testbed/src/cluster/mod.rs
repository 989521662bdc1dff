//! Cluster topologies (issue 12): origin nodes on a NATS JetStream cluster,
//! the failures a scenario plays on them, and what their logs prove.
//!
//! # Module map
//! - `nats.rs`: the NATS cluster launcher (child nats-servers, clustered,
//!   JetStream on, free ports, temporary data; kill and restart one).
//! - `proxy.rs`: a TCP proxy that can be cut (a node partitioned from
//!   NATS).
//! - `nodes.rs`: the origin nodes in process, each behind its proxies;
//!   kill, drain, partition, kill a NATS server; rooms opened on their
//!   owner; a room's state from whoever holds it.
//! - `logs.rs`: every room log read back from JetStream after a run.
//! - `writers.rs`: "no room ever had two writers" judged from those logs
//!   (pure), and when one room wrote again after a failure.
//! - `pauses.rs`: per failure, the pauses of the rooms it touched, p50/p99
//!   beside the 2 s goal; everything the logs showed (pure).

pub mod logs;
pub mod nats;
pub mod nodes;
pub mod pauses;
pub mod proxy;
pub mod writers;

pub use nats::NatsCluster;
pub use nodes::{ClusterSpec, Nodes, OriginNode};
pub use pauses::{ClusterEvidence, ClusterFailure, FailurePauses};
pub use proxy::TcpProxy;
pub use writers::{LogMessage, Resume, Violation, WriterReport};
