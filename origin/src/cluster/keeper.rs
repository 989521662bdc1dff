//! The lease keeper: one node's lease and its room claims, driven against
//! the bucket. A thin driver around [`Lease`] (the node lease, the only
//! key renewed), `RoomClaim` (`claim.rs`, one per room, written once when won) and
//! [`Members`] (the node leases listed every quarter of a lease): the
//! caller says which rooms the node wants (from the
//! [`Policy`](super::Policy)) or hands over, calls [`Keeper::step`] at
//! [`Keeper::poll_timeout`] (and after every change of wants), and hears
//! which rooms it gained (fence and rebuild them before serving) and lost
//! (stop acting for them at once). A room is held while the node lease
//! is: when it lapses every room is lost at once. The node lease is
//! renewed by a task of its own, started by the first step and ended with
//! the keeper (or [`Keeper::halt`], [`Keeper::leave`]): whatever the caller
//! awaits between steps, the lease lives while the process and its NATS
//! connection do. A renewal that fails
//! while the node is connected to NATS goes to
//! [`Lease::handle_unanswered`] (the bucket is silent for everyone: the
//! lease may be kept blind), one that fails while it is not to
//! [`Lease::handle_failed`]; renewed after a blind hold, the node reads
//! the claims of its rooms once (another node may have taken some).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use protocol::RoomId;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::claim::RoomClaim;
use super::lease::{Lease, Timing};
use super::members::Members;
use super::placement::{Outcome, Placement};

/// A change of ownership, as [`Keeper::step`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The node now holds the room at `epoch`: fence its log with that
    /// epoch and rebuild it before serving.
    Gained {
        /// The room.
        room: RoomId,
        /// The claim revision it was won at.
        epoch: u64,
    },
    /// The node no longer holds the room (its node lease lapsed, the claim
    /// was taken, handed over): it must not decide, append or ack for it
    /// any more.
    Lost {
        /// The room.
        room: RoomId,
    },
}

/// The node leases known are read every quarter of a lease; every key of
/// the bucket is listed (to find nodes that joined) this many times less
/// often.
const FULL_LIST_EVERY: u32 = 8;

/// One node's lease and room claims.
pub struct Keeper {
    node: String,
    timing: Timing,
    placement: Placement,
    claims: BTreeMap<RoomId, RoomClaim>,
    /// What [`Keeper::step`] last reported as held, per room.
    held: BTreeMap<RoomId, u64>,
    /// Rooms handed back by [`Keeper::release`] since the last report: a
    /// room released and held again under the same claim before the next
    /// report (its release failed, and it was wanted again) is reported
    /// lost and gained all the same, since the caller stopped serving it.
    released: BTreeSet<RoomId>,
    /// The node's own lease (key `node.<name>`): its rooms are its while
    /// it is renewed, and other nodes count it alive. Renewed by a task of
    /// its own ([`renew`]), so that nothing the caller awaits between
    /// steps (a listing that times out) lets it lapse.
    membership: Arc<Mutex<Lease>>,
    /// The renewing task, once started (by the first step).
    renewer: Option<JoinHandle<()>>,
    /// Wakes the renewing task (the lease is wanted again).
    wake: Arc<Notify>,
    /// Notified by the renewing task after each answer it fed.
    fed: Arc<Notify>,
    /// Set by [`Keeper::halt`]: the renewing task is not started again.
    halted: bool,
    /// Every node lease, as last listed.
    members: Members,
    /// When to read the node leases next.
    next_list: Instant,
    /// When to list every key of the bucket next (to find new nodes).
    next_full: Instant,
    /// Set by [`Keeper::leave`]: the membership is not taken again.
    leaving: bool,
}

impl Keeper {
    /// A keeper for node `node`, wanting no room yet.
    pub fn new(node: impl Into<String>, timing: Timing, placement: Placement) -> Keeper {
        let node = node.into();
        Keeper {
            membership: Arc::new(Mutex::new(
                Lease::new(node.clone(), timing).with_blind_hold(placement.blind_hold()),
            )),
            renewer: None,
            wake: Arc::new(Notify::new()),
            fed: Arc::new(Notify::new()),
            halted: false,
            members: Members::new(timing),
            node,
            timing,
            placement,
            claims: BTreeMap::new(),
            held: BTreeMap::new(),
            released: BTreeSet::new(),
            next_list: Instant::now(),
            next_full: Instant::now(),
            leaving: false,
        }
    }

    /// Whether the node holds its membership at `now` (others count it
    /// alive, and its rooms are its).
    pub fn is_member(&self, now: Instant) -> bool {
        self.lease().owned(now).is_some()
    }

    /// The node lease, locked (briefly: no lock is held across an await).
    fn lease(&self) -> MutexGuard<'_, Lease> {
        lock(&self.membership)
    }

    /// Stop renewing the node lease, as if the process had died here (a
    /// test's stand-in for a kill): the rooms lapse with the lease, and
    /// other nodes take them.
    pub fn halt(&mut self) {
        self.halted = true;
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
    }

    /// The node leases as last listed (this node's own included once seen).
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// Drain: hand every room over and give up the membership, so others
    /// take the rooms without waiting for the node lease to run out. Every
    /// room counts as lost from now on.
    pub fn leave(&mut self) {
        self.leaving = true;
        for claim in self.claims.values_mut() {
            claim.handle_release();
        }
    }

    /// The lease bucket it drives.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The node wants `room`: win it when free, take it over once its
    /// holder's node lease is dead.
    pub fn want(&mut self, now: Instant, room: RoomId) {
        let (node, recheck) = (&self.node, self.timing.ttl);
        (self.claims.entry(room))
            .or_insert_with(|| RoomClaim::new(node.clone(), recheck))
            .handle_want(now);
    }

    /// Hand `room` over (drain, or placement moved it): its claim is
    /// deleted so the next owner need not wait. The room counts as lost
    /// from now on.
    pub fn release(&mut self, room: RoomId) {
        if let Some(claim) = self.claims.get_mut(&room) {
            claim.handle_release();
            self.released.insert(room);
        }
    }

    /// The bucket lists a claim of this node's on `room` at `revision`
    /// that the policy gives to another node: delete it (only if still at
    /// `revision`) unless the node holds it or is already letting it go.
    pub fn release_listed(&mut self, room: RoomId, revision: u64) {
        let (node, recheck) = (&self.node, self.timing.ttl);
        (self.claims.entry(room))
            .or_insert_with(|| RoomClaim::new(node.clone(), recheck))
            .handle_release_listed(revision);
    }

    /// The epoch the node holds `room` at, if it may act for it at `now`.
    pub fn owned(&self, room: RoomId, now: Instant) -> Option<u64> {
        let member = self.lease().owned(now)?;
        self.claims.get(&room).and_then(|c| c.owned(member))
    }

    /// The rooms held at `now`.
    pub fn rooms(&self, now: Instant) -> impl Iterator<Item = RoomId> + '_ {
        let member = self.lease().owned(now);
        (self.claims.iter())
            .filter(move |(_, c)| member.is_some_and(|m| c.owned(m).is_some()))
            .map(|(r, _)| *r)
    }

    /// When to step next (besides after every `want` or `release`): the
    /// next listing, claim re-read, the node lease's lapse (its renewals
    /// are its own task's), or another node lease's death.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let now = Instant::now();
        (self.claims.values())
            .filter_map(RoomClaim::poll_timeout)
            .chain(self.lease().lapses_at().filter(|t| *t > now))
            .chain(self.members.next_death(now))
            .chain([self.next_list])
            .min()
    }

    /// Run every command due at `now`, all rooms at once, feed the answers
    /// back (at `Instant::now()` when they came), and report what changed.
    /// Bounded: at most four rounds of commands per step.
    pub async fn step(&mut self, now: Instant) -> Vec<Change> {
        if self.next_list <= now {
            self.next_list = now + self.timing.renew_every();
            let listed = if self.next_full <= now {
                // A full listing finds nodes that joined.
                self.next_full = now + self.timing.renew_every() * FULL_LIST_EVERY;
                self.placement.nodes().await
            } else {
                let mut known: Vec<String> = self.members.known().map(str::to_owned).collect();
                if !known.contains(&self.node) {
                    known.push(self.node.clone());
                }
                self.placement.node_leases(known).await
            };
            match listed {
                Ok(listed) => self.members.handle_listed(Instant::now(), listed),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the node leases");
                    self.members.handle_failed(Instant::now());
                }
            }
        }
        if !self.leaving && !self.halted {
            self.lease().handle_want(now);
            self.wake.notify_one();
            if self.start_renewer() {
                // The first step: let the new task take the lease (a read
                // and a create, or a few turns: bounded), so the rooms can
                // be claimed in this step.
                for _ in 0..4 {
                    if self.is_member(Instant::now()) {
                        break;
                    }
                    let fed = self.fed.notified();
                    let _ = tokio::time::timeout(self.timing.renew_every(), fed).await;
                }
            }
        }
        self.after_blind(now);
        for _ in 0..4 {
            if !self.round(now).await {
                break;
            }
        }
        // Leaving: the claims were released in the rounds above (while the
        // node lease still held), now the node lease goes too.
        if self.leaving {
            if let Some(task) = self.renewer.take() {
                task.abort();
            }
            let command = {
                let mut lease = self.lease();
                lease.handle_release();
                lease.poll_command(Instant::now())
            };
            if let Some(command) = command {
                let key = Placement::node_key(&self.node);
                let outcome = self.placement.execute_key(key, command).await;
                let connected = self.placement.connected();
                feed(&mut self.lease(), outcome, Instant::now(), connected);
            }
        }
        self.changes(Instant::now())
    }

    /// Start the task renewing the node lease unless it runs: whether it
    /// was started now.
    fn start_renewer(&mut self) -> bool {
        if self.renewer.is_some() {
            return false;
        }
        let lease = self.membership.clone();
        let wakes = (self.wake.clone(), self.fed.clone());
        let (placement, key) = (self.placement.clone(), Placement::node_key(&self.node));
        self.renewer = Some(tokio::spawn(renew(lease, placement, key, wakes)));
        true
    }

    /// One round of room claim commands; `false` when none was due.
    async fn round(&mut self, now: Instant) -> bool {
        let mut due = Vec::new();
        let member = self.lease().owned(now);
        match member {
            Some(member) => {
                let (members, at) = (&self.members, Instant::now());
                for (room, claim) in &mut self.claims {
                    let alive = |n: &str, m| members.holds(n, m, at);
                    if let Some(c) = claim.poll_command(now, member, alive) {
                        tracing::debug!(%room, command = ?c, "room claim command");
                        due.push((*room, c));
                    }
                }
            }
            None => self
                .claims
                .values_mut()
                .for_each(RoomClaim::handle_member_lost),
        }
        if due.is_empty() {
            return false;
        }
        let placement = &self.placement;
        let answers = join_all(due.into_iter().map(|(room, command)| async move {
            let outcome = placement.execute(room, command).await;
            (room, outcome, Instant::now())
        }))
        .await;
        let retry = self.timing.margin / 2;
        for (room, outcome, at) in answers {
            let (Some(claim), Some(member)) = (self.claims.get_mut(&room), member) else {
                continue;
            };
            tracing::debug!(%room, ?outcome, "room claim answer");
            match outcome {
                Outcome::Read(seen) => claim.handle_read(at, seen, member),
                Outcome::Written(revision) => claim.handle_written(revision, member),
                Outcome::Refused => claim.handle_refused(at),
                Outcome::Failed(why) => {
                    tracing::warn!(%room, reason = %why, "room claim request failed");
                    claim.handle_failed(at, retry);
                }
            }
        }
        true
    }

    /// The node lease was just renewed after a blind hold: another node
    /// may have counted this one dead meanwhile (if it saw the bucket when
    /// this one did not) and taken rooms, so every room held has its claim
    /// read once (held meanwhile; lost if no longer this node's).
    fn after_blind(&mut self, now: Instant) {
        if self.lease().take_back_from_blind() {
            tracing::info!(
                rooms = self.held.len(),
                "node lease renewed after a blind hold: checking the room claims"
            );
            self.claims.values_mut().for_each(|c| c.handle_check(now));
        }
    }

    /// Ownership now against what was last reported.
    fn changes(&mut self, now: Instant) -> Vec<Change> {
        let mut out = Vec::new();
        let member = self.lease().owned(now);
        for (room, claim) in &self.claims {
            let owned = member.and_then(|m| claim.owned(m));
            match (self.held.get(room).copied(), owned) {
                (None, Some(epoch)) => out.push(Change::Gained { room: *room, epoch }),
                (Some(old), Some(epoch)) if old != epoch || self.released.contains(room) => {
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
        self.released.clear();
        out
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(task) = self.renewer.take() {
            task.abort();
        }
    }
}

/// Lock the node lease. A panic while it was held (there is no await nor
/// anything that panics under the lock) would leave it as it was: use it.
fn lock(lease: &Mutex<Lease>) -> MutexGuard<'_, Lease> {
    lease.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The task renewing the node lease at `key`: runs the lease's commands
/// against the bucket and feeds the answers back, for as long as the
/// keeper lives (aborted when it is dropped, halted or leaves). Each turn
/// awaits a request or a timer, so it never spins;
/// `wake` wakes it; it notifies `fed` after each answer.
async fn renew(
    lease: Arc<Mutex<Lease>>,
    placement: Placement,
    key: String,
    (wake, fed): (Arc<Notify>, Arc<Notify>),
) {
    loop {
        let command = lock(&lease).poll_command(Instant::now());
        if let Some(command) = command {
            let outcome = placement.execute_key(key.clone(), command).await;
            let connected = placement.connected();
            feed(&mut lock(&lease), outcome, Instant::now(), connected);
            fed.notify_one();
            continue;
        }
        let next = lock(&lease).poll_timeout();
        match next {
            Some(at) => {
                // Nothing due at `now`: an instant past cannot be due.
                let at = at.max(Instant::now() + Duration::from_millis(1));
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Feed the node lease a bucket answer; a failure while `connected` (to
/// NATS) is an unanswered request, which may keep the lease blind.
fn feed(lease: &mut Lease, outcome: Outcome, at: Instant, connected: bool) {
    match outcome {
        Outcome::Read(seen) => lease.handle_read(at, seen),
        Outcome::Written(revision) => lease.handle_written(at, revision),
        Outcome::Refused => lease.handle_refused(at),
        Outcome::Failed(why) if connected => {
            let was_blind = lease.is_blind(at);
            lease.handle_unanswered(at);
            match lease.is_blind(at) {
                // Retried every margin / 2 through an election: once is news.
                true if was_blind => tracing::debug!(reason = %why, "node lease still unanswered"),
                blind => tracing::warn!(reason = %why, blind, "node lease request unanswered"),
            }
        }
        Outcome::Failed(why) => {
            tracing::warn!(reason = %why, "node lease request failed, disconnected from NATS");
            lease.handle_failed(at);
        }
    }
}
