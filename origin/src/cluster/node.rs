//! An origin node in cluster mode, in process: it serves only the rooms it
//! holds, each room (state, timers, id memory) an [`Authority`] of its own
//! rebuilt from the room's log when the node wins it. No relay wire yet:
//! [`Node::act`] is what a relay link will call.
//!
//! One task runs the node: it steps the [`Keeper`] (its node lease, the
//! member list, room claims), lists the room claims whenever the live
//! members change (and every `SWEEP_EVERY` renewals), and takes
//! actions in batches: every action waiting is decided, the batch's
//! records go out in one group commit, and only then is each answered —
//! `Decided` if its room's append was acknowledged and the lease still
//! holds, else `Unavailable` (the client retries; the id memory, which
//! moved with the room, settles it exactly once).
//!
//! Where a room goes is the [`Policy`] over the live [`Members`](super::Members): an action
//! for a room another live node should own is answered `NotOwner`; a room
//! this node holds that the policy now gives to another live node is
//! released (hand-over); a room held by a dead node that the policy gives
//! to this one is wanted (taken over at once: its node lease is dead).
//!
//! Not yet: PK battles (the invited room pinned to the inviter's node and
//! both rooms in one authority), unloading idle rooms, presence, snapshots.

use std::collections::BTreeMap;
use std::time::Instant;

use protocol::message::{ActionMsg, Actor};
use protocol::{Outcome, RoomId, RoomState, ServerTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::Config;
use super::entry::{rebuild, split};
use super::error::Error;
use super::keeper::{Change, Keeper};
use super::lease::Timing;
use super::log::{Committer, RoomLog};
use super::placement::Placement;
use super::policy::Policy;
use crate::clock::Clock;
use crate::rules::{self, Authority, Decision, Record};

/// A node's answer to an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Decided (or answered from the id memory), durable: send it.
    Decided(Outcome),
    /// Another node should own the room: send the action there.
    NotOwner {
        /// The node the placement names (`None`: none known alive).
        owner: Option<String>,
    },
    /// Not answerable now (the room is being won, or was just lost):
    /// retry shortly. Nothing was acked.
    Unavailable(String),
}

enum Cmd {
    Act {
        actor: Actor,
        msg: ActionMsg,
        reply: oneshot::Sender<Answer>,
    },
    Room {
        room: RoomId,
        reply: oneshot::Sender<Option<RoomState>>,
    },
    Leave {
        reply: oneshot::Sender<()>,
    },
    Members {
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// A running node.
pub struct Node {
    name: String,
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

impl Node {
    /// Connect to NATS and start serving.
    pub async fn start(config: Config, rules: rules::Config) -> Result<Node, Error> {
        let (log, js) = RoomLog::connect(&config).await?;
        let placement = Placement::open(&js, &config).await?;
        let timing = Timing {
            ttl: config.lease_ttl,
            margin: config.lease_margin,
        };
        let run = Run {
            name: config.node.clone(),
            rules,
            clock: Clock::new(),
            keeper: Keeper::new(config.node.clone(), timing, placement),
            committer: Committer::new(log, config.node.clone()),
            timing,
            rooms: BTreeMap::new(),
            next_sweep: Instant::now(),
            alive: Vec::new(),
        };
        let (tx, rx) = mpsc::channel(1 << 12);
        Ok(Node {
            name: config.node,
            tx,
            task: tokio::spawn(run.run(rx)),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decide `msg`, sent by `actor`, if this node serves its room.
    pub async fn act(&self, actor: Actor, msg: ActionMsg) -> Answer {
        let (reply, rx) = oneshot::channel();
        let gone = || Answer::Unavailable("node stopped".into());
        if (self.tx.send(Cmd::Act { actor, msg, reply }).await).is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// A room's state, if this node serves it.
    pub async fn room(&self, room: RoomId) -> Option<RoomState> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Room { room, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// The nodes this node counts alive (itself included while it holds
    /// its membership), as of its last look at the bucket.
    pub async fn members(&self) -> Vec<String> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Members { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Drain: hand every room over, leave the membership, stop.
    pub async fn leave(self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Leave { reply }).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }

    /// Stop at once, as a crash would: nothing more is renewed, appended
    /// or answered.
    pub fn abort(self) {
        self.task.abort();
    }
}

struct Run {
    name: String,
    rules: rules::Config,
    clock: Clock,
    keeper: Keeper,
    committer: Committer,
    timing: Timing,
    /// The rooms served, each its own authority.
    rooms: BTreeMap<RoomId, Authority>,
    /// When to list the room claims next whatever happens (a sweep for
    /// rooms nobody took).
    next_sweep: Instant,
    /// The live nodes when the room claims were last listed: a change
    /// (a death, a join) lists them again at once.
    alive: Vec<String>,
}

/// Room claims are swept this many node-lease renewals apart when no
/// member changed (orphans left by a failed hand-over).
const SWEEP_EVERY: u32 = 20;

/// An action decided, waiting for its room's append.
struct Pending {
    room: RoomId,
    outcome: Outcome,
    reply: oneshot::Sender<Answer>,
}

impl Run {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        loop {
            let changes = self.keeper.step(Instant::now()).await;
            self.apply(changes).await;
            let now = Instant::now();
            let alive: Vec<String> = self.policy(now).nodes().map(str::to_owned).collect();
            if self.next_sweep <= now || alive != self.alive {
                self.next_sweep = now + self.timing.renew_every() * SWEEP_EVERY;
                self.alive = alive;
                self.look_around().await;
            }
            self.fire_timers().await;
            let deadline = self.deadline();
            let first = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => cmd,
                    None => return,
                },
                () = tokio::time::sleep_until(deadline.into()) => continue,
            };
            let mut cmds = vec![first];
            while let Ok(cmd) = rx.try_recv() {
                cmds.push(cmd);
            }
            if self.handle(cmds).await.is_err() {
                return;
            }
        }
    }

    fn deadline(&self) -> Instant {
        let timers = (self.rooms.values())
            .filter_map(Authority::poll_timeout)
            .map(|t| self.clock.instant(t));
        (timers.chain(self.keeper.poll_timeout()))
            .chain([self.next_sweep])
            .min()
            .unwrap_or(self.next_sweep)
    }

    /// The policy over the live members (this node included while it
    /// holds its membership).
    fn policy(&self, now: Instant) -> Policy {
        let mut policy = Policy::new(self.keeper.members().alive(now).map(str::to_owned));
        if self.keeper.is_member(now) {
            policy.handle_joined(&self.name);
        }
        policy
    }

    /// List the room claims (after a member died or joined, and now and
    /// then): want the rooms the policy gives this node whose holder's node
    /// lease is dead, release those it gives to another live node.
    async fn look_around(&mut self) {
        let rooms = match self.keeper.placement().rooms().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the room claims");
                return;
            }
        };
        let now = Instant::now();
        let policy = self.policy(now);
        for (room, claim, _) in rooms {
            let mine = policy.owner_of(room) == Some(self.name.as_str());
            if claim.node == self.name {
                if !mine && policy.owner_of(room).is_some() {
                    self.keeper.release(room);
                } else if mine && self.keeper.owned(room, now).is_none() {
                    // An earlier incarnation's claim: take it back.
                    self.keeper.want(now, room);
                }
            } else if mine && !(self.keeper.members()).holds(&claim.node, claim.member, now) {
                self.keeper.want(now, room);
            }
        }
    }

    async fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Gained { room, epoch } => match self.committer.acquire(room, epoch).await {
                    Ok(entries) => {
                        let mut auth = Authority::new(self.rules.clone());
                        if let Err(e) = rebuild(&mut auth, &entries) {
                            tracing::error!(%room, error = %e, "room log does not replay");
                            self.keeper.release(room);
                            continue;
                        }
                        auth.handle_started(self.clock.now());
                        tracing::info!(%room, epoch, entries = entries.len(), "room won");
                        self.rooms.insert(room, auth);
                    }
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "cannot fence a won room");
                        self.keeper.release(room);
                    }
                },
                Change::Lost { room } => {
                    self.rooms.remove(&room);
                    self.committer.drop_room(room);
                }
            }
        }
    }

    /// Origin time for `room`: never before its last event, whatever this
    /// node's clock says (see the module docs of [`crate::cluster`]).
    fn now_for(&self, auth: &Authority, room: RoomId) -> ServerTime {
        let now = self.clock.now();
        auth.room(room).map_or(now, |s| now.max(s.at))
    }

    async fn fire_timers(&mut self) {
        let mut records = Vec::new();
        for (room, auth) in &mut self.rooms {
            let due = (auth.poll_timeout()).is_some_and(|t| t <= self.clock.now());
            if due {
                let now = self
                    .clock
                    .now()
                    .max(auth.room(*room).map_or(ServerTime(0), |s| s.at));
                let record = auth.handle_timeout(now);
                if !record.is_empty() {
                    records.extend(split(record, *room));
                }
            }
        }
        if !records.is_empty() {
            let done = self.committer.commit(records).await;
            self.drop_failed(done.iter().filter(|a| a.result.is_err()).map(|a| a.room));
        }
    }

    fn drop_failed(&mut self, rooms: impl Iterator<Item = RoomId>) {
        for room in rooms {
            tracing::warn!(%room, "append failed: room dropped");
            self.rooms.remove(&room);
            self.keeper.release(room);
        }
    }

    async fn handle(&mut self, cmds: Vec<Cmd>) -> Result<(), ()> {
        let mut records: Vec<(RoomId, Record)> = Vec::new();
        let mut pending = Vec::new();
        for cmd in cmds {
            match cmd {
                Cmd::Room { room, reply } => {
                    let _ = reply.send(self.rooms.get(&room).and_then(|a| a.room(room).cloned()));
                }
                Cmd::Members { reply } => {
                    let policy = self.policy(Instant::now());
                    let _ = reply.send(policy.nodes().map(str::to_owned).collect());
                }
                Cmd::Leave { reply } => {
                    self.keeper.leave();
                    let changes = self.keeper.step(Instant::now()).await;
                    self.apply(changes).await;
                    let _ = reply.send(());
                    return Err(());
                }
                Cmd::Act { actor, msg, reply } => {
                    if let Some(p) = self.decide(actor, &msg, reply, &mut records).await {
                        pending.push(p);
                    }
                }
            }
        }
        let done = self.committer.commit(records).await;
        let failed: Vec<RoomId> = (done.iter())
            .filter(|a| a.result.is_err())
            .map(|a| a.room)
            .collect();
        let now = Instant::now();
        for p in pending {
            let answer = if failed.contains(&p.room) || self.keeper.owned(p.room, now).is_none() {
                Answer::Unavailable(format!("{} lost", p.room))
            } else {
                Answer::Decided(p.outcome)
            };
            let _ = p.reply.send(answer);
        }
        self.drop_failed(failed.into_iter());
        Ok(())
    }

    /// Route and decide one action; its records join the batch.
    async fn decide(
        &mut self,
        actor: Actor,
        msg: &ActionMsg,
        reply: oneshot::Sender<Answer>,
        records: &mut Vec<(RoomId, Record)>,
    ) -> Option<Pending> {
        let room = msg.room;
        let now = Instant::now();
        let owner = self.policy(now).owner_of(room).map(str::to_owned);
        if owner.as_deref() != Some(self.name.as_str()) {
            let _ = reply.send(Answer::NotOwner { owner });
            return None;
        }
        if !self.rooms.contains_key(&room) {
            self.keeper.want(now, room);
            let changes = self.keeper.step(now).await;
            self.apply(changes).await;
        }
        let Some(auth) = self.rooms.get(&room) else {
            let _ = reply.send(Answer::Unavailable(format!("{room} is being won")));
            return None;
        };
        let at = self.now_for(auth, room);
        let auth = self.rooms.get_mut(&room)?;
        let (record, outcome) = match auth.handle_action(at, actor, msg) {
            Decision::Decided(record) => {
                let outcome = record.ack.map(|a| a.outcome)?;
                (record, outcome)
            }
            Decision::Answered { outcome, timers } => (timers, outcome),
            Decision::Throttled { timers, .. } => {
                let _ = reply.send(Answer::Unavailable("throttled".into()));
                records.extend(split(timers, room));
                return None;
            }
        };
        if !record.is_empty() {
            records.extend(split(record, room));
        }
        Some(Pending {
            room,
            outcome,
            reply,
        })
    }
}
