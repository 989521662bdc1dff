//! The publisher: sees only committed items. It keeps each room's committed
//! state and a ring of its recent events, serves subscriptions from them,
//! fans events out to subscribed relays and routes acks back. Every frame is
//! encoded once and shared by all the relays it goes to.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use protocol::codec;
use protocol::message::{DownMsg, ErrorCode};
use protocol::{Event, RoomId, RoomState, Seq};
use tokio::sync::mpsc;

use super::shared::{Item, RelayId};

struct Room {
    /// Committed state: what a snapshot shows.
    state: RoomState,
    /// The last committed events, oldest first.
    ring: VecDeque<Event>,
    subscribers: BTreeSet<RelayId>,
}

struct Relay {
    /// Its name, as its clients know it (from its hello).
    name: String,
    out: mpsc::Sender<Bytes>,
    conn: quinn::Connection,
    rooms: BTreeSet<RoomId>,
}

pub(super) struct Publisher {
    rooms: BTreeMap<RoomId, Room>,
    relays: BTreeMap<RelayId, Relay>,
    ring: usize,
}

fn frame(msg: &DownMsg) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    match codec::write_frame(msg, &mut buf) {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a frame for relays");
            None
        }
    }
}

impl Publisher {
    pub(super) fn new(rooms: impl Iterator<Item = RoomState>, ring: usize) -> Publisher {
        let rooms = rooms
            .map(|state| {
                let room = Room {
                    state,
                    ring: VecDeque::new(),
                    subscribers: BTreeSet::new(),
                };
                (room.state.room, room)
            })
            .collect();
        Publisher {
            rooms,
            relays: BTreeMap::new(),
            ring: ring.max(1),
        }
    }

    pub(super) async fn run(mut self, mut batches: mpsc::Receiver<Vec<Item>>) {
        while let Some(batch) = batches.recv().await {
            for item in batch {
                self.handle(item);
            }
        }
    }

    fn handle(&mut self, item: Item) {
        match item {
            Item::Record { record, reply } => {
                // The ack first: both are durable by now, and the sender
                // should not wait behind the fan-out of its own gift.
                if let (Some(relay), Some(ack)) = (reply, record.ack) {
                    let msg = DownMsg::Ack {
                        user: ack.user,
                        id: ack.id,
                        outcome: ack.outcome,
                    };
                    self.send(relay, frame(&msg));
                }
                let mut i = 0;
                let events = record.events;
                // Consecutive events of one room go out as one message.
                while i < events.len() {
                    let room = events[i].0;
                    let mut j = i;
                    while j < events.len() && events[j].0 == room {
                        j += 1;
                    }
                    let run: Vec<Event> = events[i..j].iter().map(|(_, e)| e.clone()).collect();
                    self.publish(room, run);
                    i = j;
                }
            }
            Item::Answer {
                relay,
                user,
                id,
                outcome,
            } => {
                self.send(relay, frame(&DownMsg::Ack { user, id, outcome }));
            }
            Item::Throttled {
                relay,
                user,
                id,
                retry_after_ms,
            } => {
                let msg = DownMsg::Throttled {
                    user,
                    id,
                    retry_after_ms,
                };
                self.send(relay, frame(&msg));
            }
            Item::Subscribe {
                relay,
                room,
                since,
                history,
            } => self.subscribe(relay, room, since, history),
            // The rules unload only rooms no relay follows.
            Item::Unloaded(room) => {
                if self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.subscribers.is_empty())
                {
                    self.rooms.remove(&room);
                }
            }
            Item::Load(state) => {
                let room = state.room;
                self.rooms.entry(room).or_insert_with(|| Room {
                    state,
                    ring: VecDeque::new(),
                    subscribers: BTreeSet::new(),
                });
            }
            // The commit thread turns these into `Unloaded`.
            Item::Unload(_) => {}
            Item::Unsubscribe { relay, room } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    r.subscribers.remove(&relay);
                }
                if let Some(r) = self.relays.get_mut(&relay) {
                    r.rooms.remove(&room);
                }
                self.forget_if_unopened(room);
            }
            Item::RelayUp {
                relay,
                name,
                out,
                conn,
            } => {
                let rooms = BTreeSet::new();
                let r = Relay {
                    name,
                    out,
                    conn,
                    rooms,
                };
                self.relays.insert(relay, r);
            }
            Item::RelayGone { relay, name, lost } => {
                self.drop_relay(relay);
                if lost {
                    self.announce_lost(name);
                }
            }
            Item::Won { .. } | Item::Moved { .. } | Item::Redirect { .. } => self.cluster(item),
            // The commit thread consumes checkpoints.
            Item::Checkpoint(_) => {}
            Item::Query { room, reply } => {
                let _ = reply.send(self.rooms.get(&room).map(|r| r.state.clone()));
            }
        }
    }

    fn publish(&mut self, room: RoomId, events: Vec<Event>) {
        let ring = self.ring;
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            state: RoomState::new(room),
            ring: VecDeque::new(),
            subscribers: BTreeSet::new(),
        });
        for e in &events {
            if let Err(err) = r.state.apply(e) {
                tracing::error!(%room, error = %err, "committed event does not apply");
            }
            r.ring.push_back(e.clone());
            if r.ring.len() > ring {
                r.ring.pop_front();
            }
        }
        if r.subscribers.is_empty() {
            return;
        }
        let subscribers: Vec<RelayId> = r.subscribers.iter().copied().collect();
        let bytes = frame(&DownMsg::Events { room, events });
        for relay in subscribers {
            self.send(relay, bytes.clone());
        }
    }

    /// Serve a subscription from the ring when it covers `since`, else with a
    /// snapshot (and, when asked, the ring's events after `history`, so the
    /// relay can serve clients resuming from there); either way the relay is
    /// current afterwards. Long backlogs go as several frames.
    fn subscribe(
        &mut self,
        relay: RelayId,
        room: RoomId,
        since: Option<Seq>,
        history: Option<Seq>,
    ) {
        if !self.relays.contains_key(&relay) {
            return;
        }
        // A room nobody has acted in yet is served unopened (seq 0); its
        // first event reaches the subscriber like any other.
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            state: RoomState::new(room),
            ring: VecDeque::new(),
            subscribers: BTreeSet::new(),
        });
        r.subscribers.insert(relay);
        let head = r.state.seq;
        let first = r.ring.front().map_or(head.next(), |e| e.seq);
        let after =
            |s: Seq| -> Vec<Event> { r.ring.iter().filter(|e| e.seq > s).cloned().collect() };
        let frames: Vec<Option<Bytes>> = match since {
            Some(s) if s <= head && s.next() >= first => {
                codec::chunk_events(after(s), codec::EVENTS_PER_FRAME_BYTES)
                    .into_iter()
                    .map(|events| frame(&DownMsg::Events { room, events }))
                    .collect()
            }
            _ => {
                let mut recent = history.map(after).unwrap_or_default();
                // The newest events that fit in the snapshot's frame.
                let mut chunks =
                    codec::chunk_events(recent.split_off(0), codec::EVENTS_PER_FRAME_BYTES);
                let recent = chunks.pop().unwrap_or_default();
                let state = Box::new(r.state.clone());
                vec![frame(&DownMsg::Snapshot {
                    room,
                    state,
                    recent,
                })]
            }
        };
        if let Some(rel) = self.relays.get_mut(&relay) {
            rel.rooms.insert(room);
        }
        for f in frames {
            self.send(relay, f);
        }
    }

    /// Cluster mode's items: a room won, a room moved, an action handed back.
    fn cluster(&mut self, item: Item) {
        match item {
            Item::Won { room, state } => {
                let room = Room {
                    state: state.unwrap_or_else(|| RoomState::new(room)),
                    ring: VecDeque::new(),
                    subscribers: BTreeSet::new(),
                };
                let id = room.state.room;
                self.rooms.insert(id, room);
                // Every relay hears it: those waiting for the room's node
                // route it here now.
                let bytes = frame(&DownMsg::Serving { rooms: vec![id] });
                let relays: Vec<RelayId> = self.relays.keys().copied().collect();
                for relay in relays {
                    self.send(relay, bytes.clone());
                }
            }
            Item::Moved { room, owner, relay } => self.moved(room, owner, relay),
            Item::Redirect {
                relay,
                actor,
                msg,
                owner,
            } => {
                let msg = DownMsg::Redirect { actor, msg, owner };
                self.send(relay, frame(&msg));
            }
            _ => {}
        }
    }

    /// Cluster mode: `room` is not served here. Only `relay` is told (an
    /// answer to its Subscribe), or every subscriber, and the room is
    /// forgotten (the node lost or released it).
    fn moved(&mut self, room: RoomId, owner: Option<String>, relay: Option<RelayId>) {
        let bytes = frame(&DownMsg::Moved { room, owner });
        let to: Vec<RelayId> = match relay {
            Some(relay) => vec![relay],
            None => (self.rooms.remove(&room))
                .map(|r| r.subscribers.into_iter().collect())
                .unwrap_or_default(),
        };
        for relay in to {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.subscribers.remove(&relay);
            }
            if let Some(r) = self.relays.get_mut(&relay) {
                r.rooms.remove(&room);
            }
            self.send(relay, bytes.clone());
        }
    }

    fn send(&mut self, relay: RelayId, bytes: Option<Bytes>) {
        let Some(bytes) = bytes else { return };
        let Some(r) = self.relays.get(&relay) else {
            return;
        };
        if let Err(e) = r.out.try_send(bytes) {
            // Too slow: cut it off rather than queue without bound; it
            // reconnects and resubscribes from its last seq. Already gone: the
            // link's own goodbye is on its way.
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                tracing::warn!(relay, "relay cannot keep up; closing its link");
                net::close(&r.conn, ErrorCode::Flood, "relay queue full");
            }
            self.drop_relay(relay);
        }
    }

    /// Tell every other relay that the relay named `name` was lost, so the
    /// standby connections of its clients move them at once (one frame per
    /// relay: the cost of a relay's death, not of its clients' idling).
    /// Not when a relay of that name is linked again already (it came back
    /// before its old link timed out here).
    fn announce_lost(&mut self, name: String) {
        if self.relays.values().any(|r| r.name == name) {
            return;
        }
        let others: Vec<RelayId> = self.relays.keys().copied().collect();
        tracing::info!(lost = %name, relays = others.len(), "telling the other relays a relay was lost");
        let bytes = frame(&DownMsg::RelayGone { relay: name });
        for relay in others {
            self.send(relay, bytes.clone());
        }
    }

    fn drop_relay(&mut self, relay: RelayId) {
        if let Some(r) = self.relays.remove(&relay) {
            for room in r.rooms {
                if let Some(state) = self.rooms.get_mut(&room) {
                    state.subscribers.remove(&relay);
                }
                self.forget_if_unopened(room);
            }
        }
    }

    /// An unopened room with no subscriber is nothing: forget it.
    fn forget_if_unopened(&mut self, room: RoomId) {
        let unused =
            (self.rooms.get(&room)).is_some_and(|r| !r.state.is_open() && r.subscribers.is_empty());
        if unused {
            self.rooms.remove(&room);
        }
    }
}
