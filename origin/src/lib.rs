//! The origin: the one authority for every room.
//!
//! - [`rules`]: the room rules as a sans-IO state machine — PK battles,
//!   co-host seats, gifts and timed engagement events. It takes `now` with
//!   every input, reads no clock and does no IO; the same inputs at the same
//!   times give the same events, byte for byte.
//! - [`wal`]: the write-ahead log: an ack means durable; group commit makes
//!   durability cheap; replay rebuilds every room after a crash.
//! - [`server`]: the QUIC server for relays: one task runs the rules, a
//!   commit thread makes their records durable, a publisher fans committed
//!   events out and routes acks (in cluster mode one driver task decides
//!   and appends to JetStream instead of the first two).
//! - [`cluster`]: cluster mode (off unless configured): each room's log in
//!   a NATS JetStream subject, rooms leased to origin nodes through a
//!   JetStream key-value bucket, a deposed owner fenced by the log itself.
//! - [`metrics`] and [`kpi`]: what operators scrape (`metrics_listen`):
//!   the interaction KPIs only the authority sees (starts, completions,
//!   gifts by window, conversion, retention) and the log's and rooms'
//!   operations figures.
//!
//! Limits it holds on its own, whatever relays let through: only a host (or
//! operator) opens a room, and at most `rules.max_rooms` are live; idle rooms
//! leave memory for a per-room archive and come back on demand; the id
//! memory is bounded in bytes, per user and in all, and a forgotten session
//! answers `Stale`, never `New`; a per-user action rate backstop answers
//! `Throttled` without deciding. See [`rules`] for each argument.
//!
//! What it deliberately does not do: talk to clients (relays do, and check
//! their tokens; the origin trusts the actor a relay verified), or keep a
//! second way to compute state (every change is an event applied with
//! [`protocol::RoomState::apply`]).

//! # Module map
//! Pure (take `now`, do no IO):
//! - `rules/mod.rs`: the authority's contract, its inputs and `decide()`.
//! - `rules/world.rs`: what a transaction changes (rooms, their timers, id
//!   counters), and every room's timers derived from its state.
//! - `rules/txn.rs`: an input's changes as one transaction; the actor's role.
//! - `rules/pk.rs`: PK invitations, battles, forfeits, settlement.
//! - `rules/seats.rs`: co-host seats, invitations, applications, holds.
//! - `rules/engage.rs`: gifts, chat, likes, challenges.
//! - `rules/deadline.rs`: firing a room's earliest timer.
//! - `rules/sessions.rs`: the id memory (exactly-once), bounded per user.
//! - `rules/rate.rs`: the per-user action rate backstop.
//! - `rules/config.rs`: the rules' settings and the gift catalogue.
//! - `cluster/lease.rs`: one lease (a node's own) on one node (acquire,
//!   renew, expire, take over), on a clock it is given.
//! - `cluster/claim.rs`: one room's claim (win, wait while its holder's node
//!   lease lives, take over by compare-and-set, release).
//! - `cluster/entry.rs`: what a room's log in JetStream holds; rebuilding
//!   the rules from it.
//! - `cluster/policy.rs`: which live node should own which room.
//! - `cluster/pairs.rs`: PK battles across nodes: pin, fetch, let go.
//! - `cluster/members.rs`: which nodes are alive, from their node leases.
//! - `cluster/strays.rs`: which messages of a room's log count (racing
//!   appends JetStream let through are left out).
//! - `cluster/config.rs`: the `[cluster]` settings (absent by default).
//! - `kpi.rs`: the interaction KPIs, from records and presence.
//! - `wal/format.rs`: the log's record framing and its decoder.
//! - `wal/crc.rs`: the checksum.
//!
//! IO and drivers:
//! - `wal/mod.rs`: the write-ahead log: append, group sync, checkpoint, replay.
//! - `wal/types.rs`: log sequence numbers, errors, the checkpoint's header.
//! - `wal/files.rs`: segment and checkpoint files, made durable.
//! - `wal/archive.rs`: per-room archives of unloaded rooms.
//! - `wal/fuzzing.rs`: the log's fuzz target bodies.
//! - `server/mod.rs`: starts the origin (replay, endpoint, tasks), stops it.
//! - `server/authority.rs`: the task that runs the rules, with presence.
//! - `server/commit.rs`: the commit thread: group commit, then publish.
//! - `server/publish.rs`: committed events to followers, acks to askers.
//! - `server/link.rs`: one relay's link: hello, frames in and out.
//! - `server/cluster.rs`: cluster mode's driver in place of the authority
//!   task and the commit thread: membership, rooms won (rebuilt) and lost
//!   (`Moved`), PK pairs fetched across nodes, rooms handed over.
//! - `server/rewin.rs`: cluster mode: rooms let go for a failed append or
//!   fence, won again after a doubling wait, battle partners together.
//! - `server/parked.rs`: cluster mode: requests waiting while their room
//!   is won (bounded in all, per room and in time).
//! - `server/route.rs`: cluster mode: a batch routed (`Moved`, `Redirect`,
//!   parked) and decided, one group commit to JetStream, then what leaves.
//! - `server/shared.rs`: what the tasks share: their messages, the store of
//!   unloaded rooms, what every relay link holds.
//! - `cluster/mod.rs`: cluster mode's design (logs in NATS JetStream,
//!   leases in a key-value bucket, fencing, what survives what).
//! - `cluster/log.rs`: room logs on JetStream, spread over shard streams:
//!   fenced group commit, reading a room back.
//! - `cluster/placement.rs`: the lease bucket.
//! - `cluster/keeper.rs`: one node's lease, member list and room claims,
//!   driven; rooms gained and lost.
//! - `cluster/node.rs`: a cluster node serving the rooms it holds (in
//!   process, no relay wire: the binary uses `server/cluster.rs`).
//! - `clock.rs`: the origin's clock, the reference every time is in.
//! - `config.rs`: configuration (TOML and environment).
//! - `metrics.rs`: what the operator sees.
//! - `main.rs`: the `origin` binary.

pub mod clock;
pub mod cluster;
pub mod config;
pub mod kpi;
pub mod metrics;
pub mod rules;
pub mod server;
pub mod wal;

pub use config::Config;
pub use server::{Error, Origin};
