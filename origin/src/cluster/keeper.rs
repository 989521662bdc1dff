//! The lease keeper: every room lease of one node, driven against the
//! bucket. A thin driver around [`Lease`]: the caller says which rooms the
//! node wants (from the [`Policy`](super::Policy)) or hands over, calls
//! [`Keeper::step`] at [`Keeper::poll_timeout`] (and after every change of
//! wants), and hears which rooms it gained (fence and rebuild them before
//! serving) and lost (stop acting for them at once).

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::future::join_all;
use protocol::RoomId;

use super::lease::{Lease, Timing};
use super::placement::{Outcome, Placement};

/// A change of ownership, as [`Keeper::step`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node now holds the room at `epoch`: fence its log with that
    /// epoch and rebuild it before serving.
    Gained {
        /// The room.
        room: RoomId,
        /// The lease revision it was won at.
        epoch: u64,
    },
    /// The node no longer holds the room (expired, refused, handed over):
    /// it must not decide, append or ack for it any more.
    Lost {
        /// The room.
        room: RoomId,
    },
}

/// Every room lease of one node.
pub struct Keeper {
    node: String,
    timing: Timing,
    placement: Placement,
    leases: BTreeMap<RoomId, Lease>,
    /// What [`Keeper::step`] last reported as held, per room.
    held: BTreeMap<RoomId, u64>,
    /// The node's own lease (key `node.<name>`): other nodes count it alive
    /// while it is renewed ([`Members`](super::members::Members)).
    membership: Lease,
    /// Set by [`Keeper::leave`]: the membership is not taken again.
    leaving: bool,
}

impl Keeper {
    /// A keeper for node `node`, wanting no room yet.
    pub fn new(node: impl Into<String>, timing: Timing, placement: Placement) -> Keeper {
        let node = node.into();
        Keeper {
            membership: Lease::new(node.clone(), timing),
            node,
            timing,
            placement,
            leases: BTreeMap::new(),
            held: BTreeMap::new(),
            leaving: false,
        }
    }

    /// Whether the node holds its membership at `now` (others count it
    /// alive).
    pub fn is_member(&self, now: Instant) -> bool {
        self.membership.owned(now).is_some()
    }

    /// Drain: hand every room over and give up the membership, so others
    /// take the rooms without waiting for leases to run out. Every room
    /// counts as lost from now on.
    pub fn leave(&mut self) {
        self.leaving = true;
        self.membership.handle_release();
        for lease in self.leases.values_mut() {
            lease.handle_release();
        }
    }

    /// The lease bucket it drives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The node wants `room`: acquire it when free, take it over once its
    /// holder's lease runs out.
    pub fn want(&mut self, now: Instant, room: RoomId) {
        let (node, timing) = (&self.node, self.timing);
        (self.leases.entry(room))
            .or_insert_with(|| Lease::new(node.clone(), timing))
            .handle_want(now);
    }

    /// Want `room`, whose lease this node saw at `revision`, unchanged
    /// since `since` (see [`Lease::handle_seen`]).
    pub fn want_seen(&mut self, now: Instant, room: RoomId, revision: u64, since: Instant) {
        let (node, timing) = (&self.node, self.timing);
        let lease = (self.leases.entry(room)).or_insert_with(|| Lease::new(node.clone(), timing));
        lease.handle_seen(revision, since);
        lease.handle_want(now);
    }

    /// Hand `room` over (drain, or placement moved it): the lease is
    /// deleted so the next owner need not wait for it to run out. The room
    /// counts as lost from now on.
    pub fn release(&mut self, room: RoomId) {
        if let Some(lease) = self.leases.get_mut(&room) {
            lease.handle_release();
        }
    }

    /// The epoch the node holds `room` at, if it may act for it at `now`.
    pub fn owned(&self, room: RoomId, now: Instant) -> Option<u64> {
        self.leases.get(&room).and_then(|l| l.owned(now))
    }

    /// The rooms held at `now`.
    pub fn rooms(&self, now: Instant) -> impl Iterator<Item = RoomId> + '_ {
        (self.leases.iter())
            .filter(move |(_, l)| l.owned(now).is_some())
            .map(|(r, _)| *r)
    }

    /// When to step next (besides after every `want` or `release`).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.leases.values())
            .chain([&self.membership])
            .filter_map(Lease::poll_timeout)
            .min()
    }

    /// Run every command due at `now`, all rooms at once, feed the answers
    /// back (at `Instant::now()` when they came), and report what changed.
    /// Bounded: at most four rounds of commands per room per step.
    pub async fn step(&mut self, now: Instant) -> Vec<Change> {
        if !self.leaving {
            self.membership.handle_want(now);
        }
        for _ in 0..4 {
            // `None`: the node's own lease.
            let mut due: Vec<(Option<RoomId>, _)> = (self.leases.iter_mut())
                .filter_map(|(room, lease)| lease.poll_command(now).map(|c| (Some(*room), c)))
                .collect();
            if let Some(c) = self.membership.poll_command(now) {
                due.push((None, c));
            }
            if due.is_empty() {
                break;
            }
            let (placement, node) = (&self.placement, &self.node);
            let answers = join_all(due.into_iter().map(|(room, command)| async move {
                let key = room.map_or_else(|| Placement::node_key(node), Placement::key);
                (
                    room,
                    placement.execute_key(key, command).await,
                    Instant::now(),
                )
            }))
            .await;
            for (room, outcome, at) in answers {
                let lease = match room {
                    Some(room) => self.leases.get_mut(&room),
                    None => Some(&mut self.membership),
                };
                let Some(lease) = lease else {
                    continue;
                };
                match outcome {
                    Outcome::Read(seen) => lease.handle_read(at, seen),
                    Outcome::Written(revision) => lease.handle_written(at, revision),
                    Outcome::Refused => lease.handle_refused(at),
                    Outcome::Failed(why) => {
                        tracing::warn!(?room, reason = %why, "lease bucket request failed");
                        lease.handle_failed(at);
                    }
                }
            }
        }
        self.changes(Instant::now())
    }

    /// Ownership now against what was last reported.
    fn changes(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        for (room, lease) in &self.leases {
            match (self.held.get(room).copied(), lease.owned(now)) {
                (None, Some(epoch)) => out.push(Change::Gained { room: *room, epoch }),
                (Some(old), Some(epoch)) if old != epoch => {
                    out.push(Change::Lost { room: *room });
                    out.push(Change::Gained { room: *room, epoch });
                }
                (Some(_), None) => out.push(Change::Lost { room: *room }),
                _ => {}
            }
        }
        for change in &out {
            match *change {
                Change::Gained { room, epoch } => {
                    self.held.insert(room, epoch);
                }
                Change::Lost { room } => {
                    self.held.remove(&room);
                }
            }
        }
        out
    }
}
