//! What `testbed attack` runs: the attacks by name and the run's knobs.

use std::path::PathBuf;
use std::time::Duration;

/// One abuse of a relay. The names are what `--attacks` takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attack {
    /// Open every uni and bidi stream allowed and write until blocked,
    /// never finish.
    #[default]
    Streams,
    /// Frame headers announcing huge or maximum-size frames, then a trickle
    /// or nothing; uni streams with bogus lengths; some before hello.
    Frames,
    /// Join many rooms, the same room again and again, and resync floods.
    Joins,
    /// A client that grants no stream credit keeps joining rooms, so the
    /// relay wants to send it snapshots it cannot take.
    SnapshotStall,
    /// Actions and joins on many unknown room ids.
    Rooms,
    /// Many sessions per user: hello with a new session id on a new
    /// connection, one gift, close, again.
    Sessions,
    /// Gift combos far over the rate (500 at once, then a flood).
    Actions,
    /// Joins the busy rooms and never reads: tiny receive windows.
    SlowReader,
    /// Undecodable datagrams and frames after a valid hello.
    Malformed,
    /// Hellos with bad tokens: junk, another secret, expired, a cluster
    /// proof, oversized.
    Tokens,
    /// UDP packets that are not QUIC at the relay's port.
    JunkUdp,
    /// Complete QUIC handshakes that never say hello.
    Handshakes,
    /// QUIC Initials that never finish the handshake.
    HalfOpen,
    /// Connections with valid hellos, as many as possible, all from one
    /// source address.
    ConnFlood,
}

impl Attack {
    /// Every attack, in the order they run: stream exhaustion last, since
    /// on an unhardened relay it leaves hundreds of MiB resident (the
    /// allocator keeps what quinn freed) and would mask every later
    /// attack's own growth.
    pub const ALL: [Attack; 14] = [
        Attack::Frames,
        Attack::Joins,
        Attack::SnapshotStall,
        Attack::Rooms,
        Attack::Sessions,
        Attack::Actions,
        Attack::SlowReader,
        Attack::Malformed,
        Attack::Tokens,
        Attack::JunkUdp,
        Attack::Handshakes,
        Attack::HalfOpen,
        Attack::ConnFlood,
        Attack::Streams,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Streams => "streams",
            Attack::Frames => "frames",
            Attack::Joins => "joins",
            Attack::SnapshotStall => "snapshot-stall",
            Attack::Rooms => "rooms",
            Attack::Sessions => "sessions",
            Attack::Actions => "actions",
            Attack::SlowReader => "slow-reader",
            Attack::Malformed => "malformed",
            Attack::Tokens => "tokens",
            Attack::JunkUdp => "junk-udp",
            Attack::Handshakes => "handshakes",
            Attack::HalfOpen => "half-open",
            Attack::ConnFlood => "conn-flood",
        }
    }

    /// One line on what it does.
    pub fn what(self) -> &'static str {
        match self {
            Attack::Streams => {
                "every allowed uni+bidi stream opened, written until blocked, never finished"
            }
            Attack::Frames => {
                "frame headers of 4 GiB / 64 KiB, then a trickle or nothing (some before hello)"
            }
            Attack::Joins => {
                "joins of the busy rooms, again and again, of unknown rooms, and resyncs"
            }
            Attack::SnapshotStall => {
                "no stream credit granted (max uni streams 0), joins that want snapshots"
            }
            Attack::Rooms => "gifts and joins on unknown room ids",
            Attack::Sessions => {
                "a new session id on every new connection (one gift each), few users"
            }
            Attack::Actions => "gift combos of 500 at once, then a flood, into a busy room",
            Attack::SlowReader => "joins the busy rooms, never reads (1 KiB stream windows)",
            Attack::Malformed => "undecodable datagrams and frames after a valid hello",
            Attack::Tokens => {
                "hellos with junk, foreign, expired, cluster-purpose or 60 KiB tokens"
            }
            Attack::JunkUdp => "random UDP packets (some shaped like QUIC Initials) at the port",
            Attack::Handshakes => {
                "complete QUIC handshakes that never say hello, 10 at a time each"
            }
            Attack::HalfOpen => "real QUIC Initials replayed from raw sockets, never answered",
            Attack::ConnFlood => {
                "connections with valid hellos, as many as possible, one source address"
            }
        }
    }

    /// The attack called `name`.
    pub fn from_name(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The testbed binary (it serves the origin and relay processes).
    pub exe: PathBuf,
    /// Parent of the temporary directory; the system temp dir if `None`.
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (child logs).
    pub keep_dir: bool,
    /// The attacks, in order.
    pub attacks: Vec<Attack>,
    /// Hostile connections (attackers) per attack.
    pub attackers: usize,
    /// Distinct users the attackers' tokens name (attacker `i` is user
    /// `i % attacker_users`): an abusive account has many connections.
    pub attacker_users: usize,
    /// How long each attack runs.
    pub duration: Duration,
    /// How long each baseline phase runs: one before the first attack and
    /// one after each attack, so every attack is compared with the two
    /// measured beside it (pooled), on the machine as it was then.
    pub baseline: Duration,
    /// After an attack, how long to wait before reading "after" figures.
    pub settle: Duration,
    /// Honest SDK clients (two of them are the battle's hosts).
    pub honest: usize,
    /// Gifts each honest viewer sends per second.
    pub gift_rate: f64,
    /// An honest gift that has no applied outcome by then is lost.
    pub action_deadline: Duration,
    /// Relay RSS bound, bytes: past it the run fails.
    pub rss_bound: u64,
    /// Relay RSS at which an attack is stopped early to protect the
    /// machine, bytes.
    pub rss_abort: u64,
    /// Honest gift ack p99 during an attack may be at most this many times
    /// the baseline's.
    pub p99_factor: f64,
    /// Only warn (do not fail the run) when an attack's honest ack p99
    /// passes `p99_factor` times the baselines' beside it.
    pub p99_warn_only: bool,
    /// Seed for every random choice (rooms, junk, timings).
    pub seed: u64,
    /// Run the aioquic client's attack too.
    pub aioquic: bool,
    /// The Python interpreter for the aioquic script.
    pub python: String,
    /// The aioquic script.
    pub aioquic_script: PathBuf,
    /// Connections the aioquic script opens.
    pub aioquic_connections: usize,
    /// The relay's documented memory per connection, bytes: the aioquic
    /// attack fails if the relay grows more than this per connection above
    /// its baseline.
    pub per_connection_bound: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            exe: PathBuf::from("testbed"),
            dir: None,
            keep_dir: false,
            attacks: Attack::ALL.to_vec(),
            attackers: 100,
            attacker_users: 10,
            duration: Duration::from_secs(8),
            baseline: Duration::from_secs(4),
            settle: Duration::from_millis(1500),
            honest: 50,
            gift_rate: 2.0,
            action_deadline: Duration::from_secs(15),
            rss_bound: 256 << 20,
            rss_abort: 1 << 30,
            p99_factor: 2.0,
            p99_warn_only: false,
            seed: 1,
            aioquic: false,
            python: "python3".into(),
            aioquic_script: PathBuf::from("testbed/attack/aioquic_attack.py"),
            aioquic_connections: 20,
            per_connection_bound: 1 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_has_a_distinct_name_that_parses_back() {
        let mut names: Vec<&str> = Attack::ALL.iter().map(|a| a.name()).collect();
        for a in Attack::ALL {
            assert_eq!(Attack::from_name(a.name()), Some(a));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Attack::ALL.len());
        assert_eq!(Attack::from_name("nope"), None);
    }
}
