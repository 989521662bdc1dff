//! Cluster mode: routing and deciding a batch of inputs, then one group
//! commit to the room logs, and only then what leaves (see `cluster.rs`).
//!
//! Per input: a room the policy gives another node is answered `Moved`
//! (a subscription) or `Redirect` (an action), undecided; a room the
//! policy gives this node but not held yet is parked while the node wins
//! it; a held room's input is decided by the node's one
//! [`Authority`](crate::rules::Authority). After the batch's appends,
//! a record's ack and events leave only if every room it touched was
//! appended and is still held under a valid lease; otherwise the events of
//! the rooms that were are published, the action is handed back
//! (`Redirect` with no owner: the relay resends it, and the id memory,
//! which travels in the log, answers it exactly once) and the rooms whose
//! append failed are dropped, then won again (a new epoch, fenced, rebuilt)
//! while the policy still gives them to this node. An action whose record
//! was appended nowhere is forgotten by the id memory (the node's one
//! authority outlives the room), so its resend is decided afresh rather
//! than answered with an outcome no log holds.

use std::collections::BTreeSet;
use std::time::Instant;

use protocol::message::{ActionMsg, Actor, UpMsg};
use protocol::{Outcome, RoomId};

use super::cluster::Driver;
use super::outs::{Appended, Out};
use super::pipeline::Status;
use super::shared::{Input, Item, RelayId};
use crate::cluster::{split, split_linked};
use crate::rules::{Decision, Record};

/// Where a room's input goes.
enum Place {
    /// Held here: decide it.
    Here,
    /// The policy gives it to this node, which is winning it (or, for a
    /// battle's room, its partner): park it until that room is won.
    Win(RoomId),
    /// The policy gives it to another node (or none is known).
    Other(Option<String>),
}

/// A batch being decided.
#[derive(Default)]
struct Batch {
    /// What the committer appends, per room.
    records: Vec<(RoomId, Record)>,
    out: Vec<Out>,
}

impl Batch {
    fn item(&mut self, item: Item) {
        self.out.push(Out::Item(item));
    }

    /// `record` (acked in `home` if it has an ack) goes to the room logs,
    /// a battle's two rooms together (`linked`, see [`split_linked`]).
    fn record(
        &mut self,
        record: Record,
        home: RoomId,
        reply: Option<(RelayId, Actor, ActionMsg)>,
        linked: impl Fn(RoomId) -> Vec<RoomId>,
        held: impl Fn(RoomId) -> bool,
    ) {
        if record.is_empty() {
            return;
        }
        let mut parts = split_linked(record.clone(), home, linked);
        // A copy for a linked room the record did not touch goes only to
        // one written here (a partner being won again is not: its own log
        // is rebuilt, and its append would fail).
        let own = split(record.clone(), home);
        parts.retain(|(r, _)| own.iter().any(|(o, _)| o == r) || held(*r));
        if record.ack.is_none() && reply.is_none() {
            // Events alone (timers, presence): each room's leave when its
            // own append is acknowledged, not held back by a slow room's.
            self.records.extend(parts);
            for (room, part) in own {
                self.out.push(Out::Record {
                    record: part,
                    rooms: vec![room],
                    home: None,
                    reply: None,
                });
            }
            return;
        }
        let rooms = parts.iter().map(|(r, _)| *r).collect();
        let home = record.ack.is_some().then_some(home);
        self.records.extend(parts);
        self.out.push(Out::Record {
            record,
            rooms,
            home,
            reply,
        });
    }
}

impl Driver {
    /// Decide a batch of inputs, append it, pass on what may leave.
    pub(super) async fn handle(&mut self, inputs: Vec<Input>) -> Result<(), ()> {
        let mut batch = Batch::default();
        for input in inputs {
            self.route(input, &mut batch);
        }
        self.commit(batch).await
    }

    /// `record` to the room logs, each room with its battle partner.
    fn store(
        &self,
        batch: &mut Batch,
        record: Record,
        home: RoomId,
        reply: Option<(RelayId, Actor, ActionMsg)>,
    ) {
        let linked = |room| self.linked(room, false);
        batch.record(record, home, reply, linked, |room| {
            self.held.contains(&room)
        });
    }

    /// Fire the timers due.
    pub(super) async fn fire_timers(&mut self) -> Result<(), ()> {
        let now = self.now_t();
        if (self.auth.poll_timeout()).is_none_or(|t| t > now) {
            return Ok(());
        }
        let mut batch = Batch::default();
        let record = self.auth.handle_timeout(now);
        self.store(&mut batch, record, RoomId(0), None);
        self.commit(batch).await
    }

    fn place(&mut self, room: RoomId) -> Place {
        if let Some(owner) = self.elsewhere(room) {
            return Place::Other(Some(owner));
        }
        if self.policy.owner_of(room).is_none() {
            return Place::Other(None);
        }
        if self.held.contains(&room) {
            // A battle's room is served only with its partner: the two are
            // decided together (a stream's election can drop one alone).
            let away = (self.linked(room, false).into_iter())
                .find(|p| !self.held.contains(p) && self.elsewhere(*p).is_none());
            return match away {
                Some(partner) => {
                    self.want(partner);
                    Place::Win(partner)
                }
                None => Place::Here,
            };
        }
        self.want(room);
        Place::Win(room)
    }

    /// Win `room` for an input waiting on it, unless it was let go for a
    /// failed append or fence and its wait is not over
    /// ([`Driver::retry`]): a stream electing a leader would otherwise be
    /// fenced again at every action, and each fence of its partner written
    /// for nothing.
    pub(super) fn want(&mut self, room: RoomId) {
        if !self.rewin.contains_key(&room) {
            self.keeper.want(Instant::now(), room);
        }
    }

    fn park(&mut self, room: RoomId, input: Input, batch: &mut Batch) {
        if let Err(input) = self.parked.park(Instant::now(), room, input) {
            tracing::warn!(%room, "too many requests waiting for rooms to be won");
            for item in self.give_up(input) {
                batch.item(item);
            }
        }
    }

    /// A parked request that cannot wait longer: handed back with no owner
    /// (the relay tries again shortly).
    pub(super) fn give_up(&mut self, input: Input) -> Vec<Item> {
        match input {
            Input::Up {
                relay,
                msg: UpMsg::Action { actor, msg },
            } => vec![Item::Redirect {
                relay,
                actor,
                msg,
                owner: None,
            }],
            Input::Up {
                relay,
                msg: UpMsg::Subscribe { room, .. },
            } => vec![Item::Moved {
                room,
                owner: None,
                relay: Some(relay),
            }],
            Input::Open { reply, .. } => {
                let _ = reply.send(false);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn route(&mut self, input: Input, batch: &mut Batch) {
        match input {
            Input::RelayUp {
                relay,
                name,
                out,
                conn,
            } => batch.item(Item::RelayUp {
                relay,
                name,
                out,
                conn,
            }),
            Input::RelayGone { relay, name, lost } => {
                let now = self.now_t();
                for (room, user) in self.presence.relay_gone(relay) {
                    self.kpi.handle_presence(now, room, user, false);
                    if self.held.contains(&room) {
                        let record = self.auth.handle_presence(now, room, user, false);
                        self.store(batch, record, room, None);
                    }
                }
                batch.item(Item::RelayGone { relay, name, lost });
            }
            Input::Query { room, reply } => batch.item(Item::Query { room, reply }),
            Input::Open { room, reply } => match self.place(room) {
                Place::Here => {
                    let record = self.auth.handle_open(self.now_t(), room);
                    self.store(batch, record, room, None);
                    let _ = reply.send(self.auth.room(room).is_some());
                }
                Place::Win(wait) => self.park(wait, Input::Open { room, reply }, batch),
                Place::Other(_) => {
                    let _ = reply.send(false);
                }
            },
            Input::Up { relay, msg } => self.route_up(relay, msg, batch),
        }
    }

    fn route_up(&mut self, relay: RelayId, msg: UpMsg, batch: &mut Batch) {
        match msg {
            UpMsg::Subscribe { room, .. } => match self.place(room) {
                Place::Here => {
                    let UpMsg::Subscribe {
                        room,
                        since,
                        history,
                    } = msg
                    else {
                        return;
                    };
                    batch.item(Item::Subscribe {
                        relay,
                        room,
                        since,
                        history,
                    });
                }
                Place::Win(wait) => self.park(wait, Input::Up { relay, msg }, batch),
                Place::Other(owner) => batch.item(Item::Moved {
                    room,
                    owner,
                    relay: Some(relay),
                }),
            },
            UpMsg::Unsubscribe { room } => batch.item(Item::Unsubscribe { relay, room }),
            UpMsg::Action { actor, msg } => self.action(relay, actor, msg, batch),
            UpMsg::Presence { room, user, online } => match self.place(room) {
                Place::Here => {
                    if let Some(now_online) = self.presence.report(relay, room, user, online) {
                        let now = self.now_t();
                        self.kpi.handle_presence(now, room, user, now_online);
                        let record = self.auth.handle_presence(now, room, user, now_online);
                        self.store(batch, record, room, None);
                    }
                }
                Place::Win(wait) => {
                    let msg = UpMsg::Presence { room, user, online };
                    self.park(wait, Input::Up { relay, msg }, batch);
                }
                // The relay reports presence where it routes the room.
                Place::Other(_) => {}
            },
            UpMsg::Hello { .. } | UpMsg::Ping { .. } => {}
        }
    }

    fn action(&mut self, relay: RelayId, actor: Actor, msg: ActionMsg, batch: &mut Batch) {
        let room = msg.room;
        match self.place(room) {
            Place::Other(owner) => {
                return batch.item(Item::Redirect {
                    relay,
                    actor,
                    msg,
                    owner,
                })
            }
            Place::Win(wait) => {
                let msg = UpMsg::Action { actor, msg };
                return self.park(wait, Input::Up { relay, msg }, batch);
            }
            Place::Here => {}
        }
        // A PK invitation to a room held elsewhere: bring that room here
        // first (pinned to this one), then decide.
        let away =
            (self.auth.missing(&msg).into_iter()).find(|r| *r != room && !self.held.contains(r));
        if let Some(invited) = away {
            // Placed here anyway: only win it. Else pin it here and fetch it.
            if self.elsewhere(invited).is_some() {
                let steps = self.pairs.handle_invite(Instant::now(), room, invited);
                self.fetch(steps);
                self.refresh_policy(Instant::now());
            }
            self.keeper.want(Instant::now(), invited);
            let msg = UpMsg::Action { actor, msg };
            return self.park(invited, Input::Up { relay, msg }, batch);
        }
        // Both rooms of an invitation held here already: pin them together
        // all the same, so that whoever takes them over after a crash
        // takes both (placement alone may part them).
        if let protocol::Action::PkInvite { to, .. } = msg.action {
            let steps = self.pairs.handle_local_invite(room, to);
            if !steps.is_empty() {
                self.fetch(steps);
                self.refresh_policy(Instant::now());
            }
        }
        let now = self.now_t();
        match self.auth.handle_action(now, actor, &msg) {
            Decision::Decided(record) => {
                match record.ack.map(|a| a.outcome) {
                    Some(Outcome::Applied { .. }) => {
                        self.metrics.applied.inc();
                    }
                    Some(Outcome::Rejected { reason }) => {
                        self.kpi.handle_refused(&msg.action, reason);
                    }
                    None => {}
                }
                self.store(batch, record, room, Some((relay, actor, msg)));
            }
            Decision::Answered { outcome, timers } => {
                self.store(batch, timers, room, None);
                let item = Item::Answer {
                    relay,
                    user: actor.user,
                    id: msg.id,
                    outcome,
                };
                let redirect = (relay, actor, msg);
                batch.out.push(Out::Answer {
                    room,
                    item,
                    redirect,
                });
            }
            Decision::Throttled {
                retry_after,
                timers,
            } => {
                self.store(batch, timers, room, None);
                let ms = retry_after.as_millis().max(1);
                batch.item(Item::Throttled {
                    relay,
                    user: actor.user,
                    id: msg.id,
                    retry_after_ms: u32::try_from(ms).unwrap_or(u32::MAX),
                });
            }
        }
    }

    /// Hand the batch's records to the pipeline (each room's append goes
    /// as soon as its previous one is acknowledged) and pass on what may
    /// leave already.
    async fn commit(&mut self, batch: Batch) -> Result<(), ()> {
        let mut items = Vec::new();
        for (room, record) in batch.records {
            // The epochs the other rooms are written at now, as decided
            // (the append may go later, after one of them was dropped).
            let linked = self.committer.linked(room, std::slice::from_ref(&record));
            self.pipeline.add(room, record, &linked);
        }
        for out in batch.out {
            match out {
                Out::Item(item) => items.push(item),
                out => {
                    let rooms = out.rooms();
                    self.pipeline.wait(out, &rooms);
                }
            }
        }
        self.send_appends().await;
        self.settle(&mut items);
        self.pass_on(items).await
    }

    /// Send every append the pipeline has due; their answers come back
    /// through [`Driver::appended`].
    pub(super) async fn send_appends(&mut self) {
        for due in self.pipeline.take_due() {
            let (room, ticket) = (due.room, due.ticket);
            match self.committer.start(room, due.records, &due.linked).await {
                Ok(flight) => self.inflight.push(Box::pin(async move {
                    let (epoch, expected) = (flight.epoch, flight.expected);
                    let result = flight.wait().await;
                    Appended {
                        room,
                        ticket,
                        epoch,
                        expected,
                        result,
                    }
                })),
                Err(e) => {
                    tracing::warn!(%room, error = %e, "cannot send an append");
                    self.pipeline.handle_done(room, ticket, false);
                    let mut items = Vec::new();
                    self.drop_room(room, &mut items);
                    self.retry(room);
                    self.settle(&mut items);
                    self.pending_items.append(&mut items);
                }
            }
        }
    }

    /// An append's answer: the room's next append goes, what waited for it
    /// leaves; a failed one drops the room (to be won again, fenced and
    /// rebuilt: its outcome is unknown).
    pub(super) async fn appended(&mut self, done: Appended) -> Result<(), ()> {
        let Appended {
            room,
            ticket,
            epoch,
            expected,
            result,
        } = done;
        self.committer.complete(room, epoch, expected, &result);
        let mut items = Vec::new();
        match result {
            Ok(_) => {
                self.failures.remove(&room);
                self.pipeline.handle_done(room, ticket, true);
            }
            Err(e) => {
                self.pipeline.handle_done(room, ticket, false);
                if self.held.contains(&room) {
                    tracing::warn!(%room, error = %e, "append failed: room dropped");
                    self.drop_room(room, &mut items);
                    self.retry(room);
                }
            }
        }
        self.send_appends().await;
        self.settle(&mut items);
        self.pass_on(items).await
    }

    /// Pass on `items`, after any left by a failed send and before the
    /// `Moved` of battle partners dropped meanwhile.
    pub(super) async fn pass_on(&mut self, mut items: Vec<Item>) -> Result<(), ()> {
        if !self.pending_items.is_empty() {
            let mut all = std::mem::take(&mut self.pending_items);
            all.append(&mut items);
            items = all;
        }
        items.append(&mut self.pending_moved);
        if items.is_empty() {
            return Ok(());
        }
        self.batches.send(items).await.map_err(|_| ())
    }

    /// Take what the pipeline releases into `items`, in order: a record's
    /// ack and events leave if every room it touched was appended and is
    /// still held under a valid lease; otherwise the events of the rooms
    /// that were leave, the action is handed back, and the rooms that
    /// failed or whose lease lapsed are dropped (then won again). Runs
    /// before anything else can touch the dropped rooms (a rebuild), so the
    /// id memory forgets an action appended nowhere before a rebuild could
    /// restore it from a log that has it after all.
    pub(super) fn settle(&mut self, items: &mut Vec<Item>) {
        let from = items.len();
        self.settle_into(items);
        // The KPIs count what is published: appended, and served here.
        let now = self.now_t();
        for item in &items[from..] {
            if let Item::Record { record, .. } = item {
                self.kpi.handle_record(now, record, &self.presence);
            }
        }
    }

    fn settle_into(&mut self, items: &mut Vec<Item>) {
        // Each dropped room's `Moved` goes after what was handed back.
        let mut moved = Vec::new();
        // Bounded: each round drops at least one held room, or ends.
        for _ in 0..=self.held.len() + 1 {
            let now = Instant::now();
            let ready = self.pipeline.poll_ready();
            let mut failed = BTreeSet::new();
            let mut forget = Vec::new();
            for (out, statuses) in ready {
                let status =
                    |room: &RoomId| (statuses.iter()).find(|(r, _)| r == room).map(|(_, s)| *s);
                failed.extend(
                    (statuses.iter())
                        .filter(|(_, s)| *s == Status::Failed)
                        .map(|(r, _)| *r),
                );
                let (keeper, held) = (&self.keeper, &self.held);
                // Appended, still served here and under a valid lease (a
                // room dropped since has had its `Moved` already).
                let ok = |room: &RoomId| {
                    status(room) == Some(Status::Ok)
                        && held.contains(room)
                        && keeper.owned(*room, now).is_some()
                };
                match out {
                    Out::Item(item) => items.push(item),
                    Out::Record {
                        record,
                        rooms,
                        home,
                        reply,
                    } => {
                        // Not appended where it was addressed: forgotten,
                        // even if a partner's copy was (a rebuild that
                        // takes the copy records it again; one that does
                        // not must not leave an answer no log holds).
                        if let (Some(ack), Some(home)) = (record.ack, home) {
                            if status(&home) == Some(Status::Failed) {
                                forget.push((ack.id, ack.user));
                            }
                        }
                        if rooms.iter().all(ok) {
                            let reply = reply.map(|(relay, _, _)| relay);
                            items.push(Item::Record { record, reply });
                            continue;
                        }
                        let events: Vec<_> =
                            (record.events.into_iter()).filter(|(r, _)| ok(r)).collect();
                        if !events.is_empty() {
                            let record = Record { ack: None, events };
                            items.push(Item::Record {
                                record,
                                reply: None,
                            });
                        }
                        if let Some((relay, actor, msg)) = reply {
                            items.push(Item::Redirect {
                                relay,
                                actor,
                                msg,
                                owner: None,
                            });
                        }
                    }
                    Out::Answer {
                        room,
                        item,
                        redirect: (relay, actor, msg),
                    } => items.push(match ok(&room) {
                        true => item,
                        false => Item::Redirect {
                            relay,
                            actor,
                            msg,
                            owner: None,
                        },
                    }),
                }
            }
            // Decided, appended nowhere: the id memory must not answer it.
            for (id, user) in forget {
                self.auth.forget_outcome(id, user);
            }
            let lost: Vec<RoomId> = (self.held.iter().copied())
                .filter(|r| failed.contains(r) || self.keeper.owned(*r, now).is_none())
                .collect();
            if lost.is_empty() {
                break;
            }
            for room in lost {
                tracing::warn!(%room, "append failed or lease lapsed: room dropped");
                self.unserve(room, &mut moved);
                self.retry(room);
            }
        }
        items.append(&mut moved);
    }
}
