//! Cluster mode: rooms spread over origin nodes, each room's log kept in
//! NATS JetStream (rooms spread over several streams), room ownership as
//! claims on node leases in a JetStream key-value bucket. Off unless the configuration has a `[cluster]` section: without
//! one the origin is the single process with its local write-ahead log
//! ([`crate::wal`]) it always was.
//!
//! # Where things are
//!
//! ```text
//! streams RINGSIDE_ROOMS_<k>  k in 0..shards (default 8); subjects ringside.room.<k>.>
//!         a room's log: subject ringside.room.<k>.<room id>, k = hash(room id) % shards
//!         replicas 3 (a three-server cluster) or 1 (one local server), file storage
//!         message  = postcard(Entry) with headers Ringside-Node, Ringside-Epoch
//!         Entry    = Records([Record])   what one group commit stored for that room
//!                                        (with its PK partner's events of the same records)
//!                  | Fence { node, epoch }  written by a new owner before it serves
//! bucket  ringside-placement  key node.<name>    = {"node": .., "epoch": ..}  a node's lease (JSON),
//!                                                  renewed every ttl / 4: the only key renewed
//!                             key room.<room id> = {"node": .., "epoch": .., "member": ..}
//!                                                  a room's claim, written once when won; "member"
//!                                                  is the epoch of the holder's node lease
//!                             key pin.<room id>  = "<inviter room id>"  a PK battle's invited
//!                                                  room lives with the inviter's (pairs.rs)
//!         history 1, no max_age (a claim must outlive any quiet stretch of its room)
//! ```
//!
//! A room is its holder's while the node lease its claim names lives. A
//! node renews one key however many rooms it holds (was: every room's
//! lease every ttl / 3, 600 writes a second for 200 rooms and a 1 s
//! lease).
//!
//! # Module map
//! Pure (take `now`, do no IO):
//! - `lease.rs`: one lease (a node's own) from one node's point of view:
//!   acquire, renew, notice expiry, take over by compare-and-set, release;
//!   tested on a virtual clock.
//! - `claim.rs`: one room's claim: read, create, wait while its holder's
//!   node lease lives, take over by compare-and-set once it is dead (or
//!   was this node's earlier incarnation), release.
//! - `entry.rs`: what a room's log holds ([`Entry`]), a group commit's
//!   records split per room, and rebuilding the rules from a room's entries.
//! - `members.rs`: which nodes (and which incarnation of each) are alive,
//!   from their node leases.
//! - `strays.rs`: which messages of a room's log count (`valid`).
//! - `policy.rs`: which live node should own which room (rendezvous
//!   hashing; a PK battle's rooms pinned together).
//! - `pairs.rs`: PK battles across nodes: which rooms to pin, fetch from
//!   their holder, and let go.
//! - `config.rs`: the `[cluster]` settings.
//! - `error.rs`: what can go wrong.
//!
//! IO (async-nats, the NATS project's own client):
//! - `log.rs`: the room logs on JetStream (a room's stream by hash):
//!   fenced appends with group commit
//!   ([`Committer`]), reading a room's subject back ([`RoomLog::read`]).
//! - `placement.rs`: the lease bucket: read, create, compare-and-set,
//!   delete; it executes [`lease::Command`]s.
//! - `keeper.rs`: one node's lease (renewed by a task of its own), its
//!   room claims and the member list, driven against the bucket; reports
//!   rooms gained and lost.
//! - `node.rs`: a node serving the rooms it holds, in process (no relay
//!   wire): each room an authority of its own, rebuilt from its log. The
//!   origin binary's driver (`server/cluster.rs`) is what relays reach.
//!
//! # One writer per room
//!
//! Safety comes from the log, not from clocks. A node that wins a room's
//! claim (a create, or a compare-and-set on the key's revision, so two
//! nodes cannot both win the same revision) reads the room's subject to its last sequence `S`
//! and appends `Fence { node, epoch }` with `Nats-Expected-Last-Subject-
//! Sequence: S`. From then on every append of a previous owner carries an
//! expected sequence `<= S` and is refused by JetStream; if an old owner
//! slipped one in between the read and the fence, the fence is refused
//! instead, and the new owner reads again (bounded tries). Every later
//! append by the owner expects the sequence its previous append (or its
//! fence) got. So:
//! - the records a room's log holds after a fence are all the fencing
//!   node's, under that epoch; no room ever has two writers in one stretch;
//! - a deposed, partitioned or paused (SIGSTOP) owner cannot append after
//!   the new owner's fence, whatever its clock says; its append fails
//!   ([`Error::Fenced`]) and it drops the room;
//! - everything an old owner appended before the fence is in the log the
//!   new owner read, so nothing it acknowledged is lost.
//!
//! The epoch is the lease bucket's revision at which the node won the
//! room's claim: bucket revisions are the bucket stream's sequence numbers, unique
//! and increasing across keys and never reused (even after a key expires),
//! so a room's epochs only grow.
//!
//! # What an ack waits for
//!
//! An action's ack and its events leave a node only after the room's
//! append is acknowledged by JetStream. JetStream acknowledges a publish
//! once the stream's leader has it and a majority of the replicas (2 of 3)
//! have stored it. Group commit: the [`Committer`] takes every record
//! waiting, puts one room's records in one message (one publish per room
//! per commit, since an expected-last-subject-sequence needs the previous
//! append's sequence), sends the publishes of all rooms at once and awaits
//! their acks together. A room's append that fails fails only that room.
//!
//! # What survives what
//!
//! With three servers, replicas 3 and `sync_interval: always` on every
//! server (see `deploy/nats/`): an acknowledged record survives the loss of
//! any one server, disk included, and a crash or power loss of all three at
//! once (each server fsyncs before it acknowledges). Jepsen found
//! acknowledged writes lost under the default sync interval (two minutes),
//! where a simultaneous power loss of a majority loses what the page cache
//! held. `sync_interval` needs nats-server 2.10 or later: Debian bookworm's
//! 2.9.10 (what the tests run on) refuses the key and always runs with the
//! default, so with it an acknowledged record survives the loss of any one
//! server but not a power loss of two or three at once. Nothing here
//! survives losing two servers' disks at once, or a bug in nats-server. One
//! local server with replicas 1 (tests, a single machine) survives a crash
//! of its process but not the loss of its disk.
//!
//! A server's death pauses appends to every stream it led until the
//! stream elects a new leader (appends meanwhile find no responder; each
//! try fails within `request_timeout_ms`, drops the room, and the node
//! fences and reads it again). So the rooms are spread over `shards`
//! streams (default 8), each a Raft group of its own whose leaders the
//! servers share: one server's death pauses only the rooms of the streams
//! it led (about a third of them with three servers; JetStream places
//! leaders, unevenly at times: 3/4/1 of 8 in one run). The pause itself
//! is the election: nats-server's Raft waits 4–9 s (compiled-in constants
//! in `server/raft.go`: election timeout 4–9 s, heartbeat 1 s; 2.9 has no
//! configuration key for them, nor has any later release as far as we
//! found) before a follower campaigns. Measured on 2.9.10 (`cargo test -p
//! ringside-origin --test cluster_nats3 -- --nocapture`, 16 rooms, 8
//! streams, three runs): the dead server led 3 of the 8 streams, and
//! their 3–6 rooms paused 4.0–8.4 s; every other room at most 52 ms (was:
//! every room 4.3–7.6 s with one stream). A planned
//! restart should put the server in lame-duck mode first (`nats-server
//! --signal ldm`), which hands its leaderships over without an election.
//!
//! The server leading the lease bucket's stream is a case of its own: its
//! death silences the bucket for that stream's election, and every node's
//! lease renewal fails meanwhile. A node lease lives `ttl - margin` (600
//! ms) past its last renewal, far less than the election, so without more
//! every node would drop every room and win them all back afterwards
//! (pauses of 10–48 s measured under load). So a node keeps its lease through it:
//! the *blind hold* (`blind_hold_ms`, default 15 s, see [`lease`]). A
//! renewal that fails while the node's NATS connection is up (the bucket
//! is silent, not the node cut off) leaves the lease owned for up to
//! `blind_hold` past its validity, renewed again every `margin / 2`; a
//! renewal accepted ends the hold (and the node then reads the claims of
//! its rooms once, in case another node took some meanwhile), a refusal
//! drops the lease at once, a failure while disconnected ends the hold.
//! Nobody else can take the rooms while the bucket is silent (the claims
//! are in it, and [`Members`] counts no node dead while it cannot list
//! them). The node lease is renewed by a task of its own, so a driver held
//! up (by a bucket listing, which fails at once while the bucket is
//! silent) cannot let it lapse; the NATS client pings every `ttl / 2`,
//! so a connection dead without a word is noticed in about 1.2 s instead
//! of about three minutes with the client's default (a ping a minute).
//!
//! Why the hold is safe: nothing about it decides who writes a room. Every
//! append is fenced (a new owner's `Fence`; a deposed owner's next append
//! is refused and it drops the room), and acks and events leave only
//! after an append succeeded, so a holder acting past its lease while it
//! cannot learn otherwise costs liveness, never an acked gift or a second
//! writer. Its limit: a node cut off from the bucket but not from its
//! room logs (its connection up, the bucket unreachable from its server
//! alone) keeps its rooms up to `blind_hold` after its lease ran out, or
//! until an append of theirs is fenced by the node that took them. Measured
//! (`cargo test -p ringside-origin --features fault --test cluster_serve
//! a_nats_leader -- --nocapture`, two nodes, 16 rooms, a gift per room
//! every 250 ms for 14 s after the kill of the bucket's leader, each room
//! paced on its own, three runs): rooms on streams the dead server did not
//! lead waited at most 17–110 ms; those on streams it led 5.1–7.0 s, their
//! stream's election. With the hold off (`RINGSIDE_TEST_BLIND_HOLD_MS=0`)
//! every room paused, the others 5.1–5.2 s (one run); before the hold and
//! the lease's own task, rooms came back after up to 24–29 s, or some not
//! within 30 s.

//! An origin node holds nothing durable: its death loses only what it had
//! not yet had acknowledged (and so had not acked).
//!
//! # Leases and clocks
//!
//! Lease timing uses each node's monotonic clock only (durations, never
//! timestamps compared across machines): the holder counts its node lease
//! (and so every room it holds) as valid until `sent + ttl - margin`,
//! where `sent` is when it sent the write that the bucket accepted;
//! another node counts the node dead, and takes over its rooms, only after
//! it has seen the node lease's revision unchanged for `ttl + margin`
//! since it first read it (which is after it was written). With clock rates within
//! `margin / ttl` of each other, the holder stops acting before anyone may
//! take over. (If they do not, the log's fencing still holds: timing only
//! decides how soon a dead node's rooms move, never whether two nodes can
//! both write.) A monotonic clock keeps running while a process is
//! stopped, so a resumed process sees its lease expired at its next look.
//! One exception: while its renewals go unanswered on a live connection,
//! the holder keeps its lease up to `blind_hold` past `ttl - margin` (the
//! blind hold, under "What survives what"); others cannot take over
//! meanwhile unless they see the bucket, and if they do, the log's fence
//! stops the holder's next append.
//!
//! # Node clocks and timer deadlines
//!
//! Deadlines (battle bells, seat holds) are origin times (`ServerTime`)
//! stored in the room's state, so they travel with the room: the new owner
//! derives them from the rebuilt state and fires them on its own clock.
//! Each node's origin time is its system clock ([`crate::clock`]), so nodes
//! must keep their system clocks in step (NTP / chrony; a few milliseconds
//! within a data centre). What drift costs: a room moved to a node whose
//! clock is `d` ahead rings its bell `d` early in real time, and clients
//! see their clock offset change by `d` (their estimators re-converge
//! within a few pings). A node whose clock is behind the room's last event
//! time must not decide earlier than that event: the node takes the
//! room's time as `max(now, last event's at)` (`node.rs`).
//!
//! # A room is the unit of ownership
//!
//! A room's state, its timers (derived from state) and the id memory of
//! the actions addressed to it are all rebuilt from the room's log alone,
//! so the id memory travels with the room. The origin binary keeps one
//! [`Authority`](crate::rules::Authority) per node holding every room the
//! node holds (a room won is replayed into it, a room lost is removed with
//! `Authority::remove_room`), so a PK battle between two rooms of one node
//! is one transaction of the rules; the per-user rate backstop is per node.
//! Battle and challenge ids stay unique across nodes: each node counts
//! from its start time in microseconds (`Authority::seed_ids`), and past
//! every id its rooms' logs show.
//! (`node.rs`, the in-process node, keeps an authority per room.)
//!
//! # Acks
//!
//! A node answers an action only when the room's append is acknowledged
//! and the lease still holds at that moment (`node.rs`): a node that was
//! paused between the append and the answer answers nothing (the client's
//! retry reaches the new owner, whose id memory holds the outcome).
//!
//! # How fast a dead node's rooms move
//!
//! Every node renews its node lease and reads the node leases every
//! `ttl / 4`. A dead node is counted dead `takeover_delay` = `ttl +
//! margin` (default 800 + 200 ms, [`Config::takeover_delay`]) after its
//! last renewal was first seen; the survivors then list the room claims
//! (a member died) and take the dead node's rooms the policy gives them,
//! each by one compare-and-set, then fence and rebuild them. So the rooms
//! move `takeover_delay` ± `ttl / 4` after the death, plus the fence and
//! rebuild: measured 1.0 s (`--test cluster_keeper`, 10 rooms),
//! 1.2 s (`--test cluster_node`, every victim room answering again) and
//! 1.0 s through relay links (`cargo test -p ringside-origin --features
//! fault --test cluster_serve -- --nocapture`: a battle's node killed, both
//! rooms answering again on a survivor; and of 200 rooms over three
//! nodes, the 55 of the killed node answering again p50 0.94 s, p99 1.06 s)
//! with the defaults, against the issue's 2 s p99 (was 1.86 s with a 1 s room
//! lease, ~5.5 s with the old 3 s default). Shorter leases cost more
//! spurious take-overs when a node stalls (a GC pause, a slow bucket)
//! longer than `ttl - margin`: the node then loses every room at once
//! (safely: it stops acting, and the log's fence stops its appends).
//!
//! Cost: a node writes its lease 4 / ttl times a second (5 with the
//! defaults) whatever it holds; a room's claim is written only when the
//! room changes hands. Measured (`--test cluster_keeper`): a node holding
//! 200 rooms wrote 4.7 times a second (per-room renewal at this ttl would
//! be 1000). Reads: every `ttl / 4` a node reads the node
//! leases it knows (one direct read each); every eighth time it lists
//! every key of the bucket instead (async-nats lists keys over the whole
//! bucket), to find nodes that joined; the room claims are read after a
//! member died or joined, and every 20 renewals. A watch on `node.>`
//! would make all of this incremental.

//! # What is built and what is not
//!
//! Built and tested against real servers: the node lease and room claim
//! state machines and their keeper, membership, the placement policy, the
//! room logs (sharded streams) with fenced group commit, rebuilding a room
//! (state, timers, id memory) from its log, an in-process node serving the
//! rooms it holds (`node.rs`), a three-server cluster losing a stream
//! leader; and the `origin` binary serving cluster mode behind its relay
//! links (`server/cluster.rs`, `server/route.rs`; `--test cluster_serve`):
//! one [`Authority`](crate::rules::Authority) per node holding every room
//! it holds (a room won is replayed into it from its log, a room lost is
//! removed), `Moved` / `Redirect` naming the owner for requests at the
//! wrong node, requests parked while a room is won, and PK battles across
//! nodes: the invited room pinned to the inviter's (bucket key
//! `pin.<invited>`, in every node's [`Policy`]), released by its holder on
//! request (`<subject_prefix>.ctl.node.<name>.release`), won by the
//! inviter's node before the invitation is decided, unpinned once neither
//! room has a battle or an invitation ([`pairs::Pairs`]); a node that takes
//! a dead node's rooms over follows the pins. Killing the node of a running
//! battle loses no acked gift and counts none twice (`--test cluster_serve`).
//!
//! A battle's two rooms stay consistent although JetStream appends one
//! subject at a time: while two rooms are linked, every record of either is
//! appended whole to both logs (`entry::split_linked`), so if one append is
//! lost (a crash between the two, a request that timed out) the other log
//! still has it; a room won is rebuilt from its own log, then takes the
//! tail it lacks from its partner's log and appends it to its own
//! (`entry::merge_tail`). An ack leaves only once every room's append
//! succeeded. An action whose own room's append failed is forgotten by the
//! node's id memory; if the room's rebuild takes it from the partner's log,
//! it is committed after all and the memory answers a resend again.
//!
//! Through the origin binary (`--test cluster_serve`, two nodes, three
//! servers, replicas 3): killing a server that leads nothing costs the
//! rooms a reconnect (8 ms, one run); killing the server that leads the
//! bucket's stream pauses only the rooms of the streams it also led (the
//! nodes keep their leases through the bucket's election: the blind hold,
//! above).
//!
//! Not yet: presence re-announced to a room's new node (relays report
//! presence where they route a room; a node that wins a room knows nobody
//! online in it until its relays say so again, and a seated guest nobody
//! announces keeps the seat); idle rooms unloaded; the KPI tracker in
//! cluster mode (the operators' listener serves the other metrics);
//! snapshots in JetStream to bound rebuild time (a rebuild reads every
//! message of the room, ~0.1 ms each); the node leases watched rather than
//! listed; dead nodes' keys removed from the bucket (they stay, harmless,
//! until then); the testbed topologies and scenarios of issue 12.

mod claim;
mod config;
mod entry;
mod error;
pub mod keeper;
pub mod lease;
mod log;
mod members;
pub mod node;
pub mod pairs;
mod placement;
mod policy;
mod strays;

pub use config::Config;
pub use entry::{last_writer, merge_tail, rebuild, rebuild_room, split, split_linked, Entry};
pub use error::Error;
pub use log::{
    shard_of, Appended, Committer, InFlight, Logged, RoomLog, HEADER_EPOCH, HEADER_LINKED,
    HEADER_NODE,
};
pub use members::{Listed, Members};
pub use placement::{Outcome, Placement};
pub use policy::Policy;
pub use strays::valid;
