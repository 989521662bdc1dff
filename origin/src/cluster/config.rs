//! The `[cluster]` section of the origin's configuration. Absent by
//! default: the origin then runs alone on its local write-ahead log.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where the room logs and leases live, and how leases are timed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's name: what its leases and log entries say. Unique among
    /// the cluster's live nodes (two processes with one name would take
    /// each other's leases for their own; the log's fencing would still
    /// keep one writer per room).
    pub node: String,
    /// The NATS servers, comma-separated (`nats://a:4222,nats://b:4222`).
    pub nats_url: String,
    /// The streams holding the room logs are named `<stream>_<shard>`.
    pub stream: String,
    /// Each room's log is the subject `<subject_prefix>.<shard>.<room id>`.
    pub subject_prefix: String,
    /// How many streams the rooms are spread over (by a hash of the room
    /// id; default 8). Each stream has a leader of its own, which the
    /// servers share, so one server's death pauses only the rooms of the
    /// streams it led. Fixed for a cluster's life: changing it moves every
    /// room's log to another subject.
    pub shards: u32,
    /// The key-value bucket holding room leases.
    pub bucket: String,
    /// Copies of the stream and the bucket: 3 in a three-server cluster, 1
    /// for a single local server.
    pub replicas: usize,
    /// How long a node lease lasts without renewal, in milliseconds
    /// (`lease_ttl_ms`, default 800). Renewed (one key per node, however
    /// many rooms it holds) every quarter of it. A dead node's rooms are
    /// taken over [`Config::takeover_delay`] after its last renewal was
    /// first seen.
    #[serde(rename = "lease_ttl_ms", with = "millis")]
    pub lease_ttl: Duration,
    /// The allowance for clock-rate differences between nodes and for the
    /// bucket's round trip (`lease_margin_ms`, default 200): the holder
    /// stops at `ttl - margin`, others take over at `ttl + margin`.
    #[serde(rename = "lease_margin_ms", with = "millis")]
    pub lease_margin: Duration,
    /// How long an append or a read waits for JetStream's answer
    /// (`request_timeout_ms`). A request without an answer drops the room
    /// (its outcome is unknown) until it is fenced and read again, so this
    /// bounds how long a room stalls behind a lost server.
    #[serde(rename = "request_timeout_ms", with = "millis")]
    pub request_timeout: Duration,
    /// How long past its validity a node keeps its lease, and so its rooms,
    /// while the bucket answers nothing but the node's connection to NATS
    /// is up (`blind_hold_ms`, default 15000; 0: never). That is the
    /// bucket's stream electing a leader after its leader died (4–9 s on
    /// nats-server 2.9), when every node's renewals fail alike: without the
    /// hold every node drops every room and wins them all back afterwards.
    /// Safe because every append to a room's log is fenced: a node that
    /// keeps a room another node took cannot append to it. Its cost: a node
    /// cut off from the bucket but not from the room logs keeps its rooms
    /// up to this long after its lease ran out, or until an append of its
    /// is fenced.
    #[serde(rename = "blind_hold_ms", with = "millis")]
    pub blind_hold: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: "origin".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            stream: "RINGSIDE_ROOMS".into(),
            subject_prefix: "ringside.room".into(),
            shards: 8,
            bucket: "ringside-placement".into(),
            replicas: 1,
            lease_ttl: Duration::from_millis(800),
            lease_margin: Duration::from_millis(200),
            request_timeout: Duration::from_millis(2000),
            blind_hold: Duration::from_millis(15_000),
        }
    }
}

impl Config {
    /// How long after first seeing a node lease's last renewal another node
    /// counts it dead and takes its rooms (`lease_ttl + lease_margin`,
    /// default 1 s). From a death, the rooms move after this give or take
    /// a quarter of the ttl (where the death fell between renewals, and the
    /// listing's lag), plus the fence and rebuild: about 0.8–1.4 s with the
    /// defaults, under the 2 s for every affected room.
    pub fn takeover_delay(&self) -> Duration {
        self.lease_ttl + self.lease_margin
    }
}

/// `Duration` as whole milliseconds in config files.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
