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
}

impl Keeper {
    /// A keeper for node `node`, wanting no room yet.
    pub fn new(node: impl Into<String>, timing: Timing, placement: Placement) -> Keeper {
        Keeper {
            node: node.into(),
            timing,
            placement,
            leases: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// The node wants `room`: acquire it when free, take it over once its
    /// holder's lease runs out.
    pub fn want(&mut self, now: Instant, room: RoomId) {
        let (node, timing) = (&self.node, self.timing);
        (self.leases.entry(room))
            .or_insert_with(|| Lease::new(node.clone(), timing))
            .handle_want(now);
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
        self.leases.values().filter_map(Lease::poll_timeout).min()
    }

    /// Run every command due at `now`, all rooms at once, feed the answers
    /// back (at `Instant::now()` when they came), and report what changed.
    /// Bounded: at most four rounds of commands per room per step.
    pub async fn step(&mut self, now: Instant) -> Vec<Change> {
        for _ in 0..4 {
            let due: Vec<(RoomId, _)> = (self.leases.iter_mut())
                .filter_map(|(room, lease)| lease.poll_command(now).map(|c| (*room, c)))
                .collect();
            if due.is_empty() {
                break;
            }
            let placement = &self.placement;
            let answers = join_all(due.into_iter().map(|(room, command)| async move {
                (room, placement.execute(room, command).await, Instant::now())
            }))
            .await;
            for (room, outcome, at) in answers {
                let Some(lease) = self.leases.get_mut(&room) else {
                    continue;
                };
                match outcome {
                    Outcome::Read(seen) => lease.handle_read(at, seen),
                    Outcome::Written(revision) => lease.handle_written(at, revision),
                    Outcome::Refused => lease.handle_refused(at),
                    Outcome::Failed(why) => {
                        tracing::warn!(%room, reason = %why, "lease bucket request failed");
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
