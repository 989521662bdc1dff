//! Serving rooms from the cache: joins and resyncs (gap repairs, rate
//! limited), the origin's snapshots and events fanned out to followers,
//! and periodic heads.

use std::time::Instant;

use protocol::codec;
use protocol::message::{DownMsg, ServerMsg};
use protocol::{Class, Event, RoomId, RoomState, Seq};

use crate::cache::{RoomCache, Serve};
use crate::sched;

use super::out::{frame, payload, ClientId, Out};
use super::state::{Hub, RESYNC_EVERY};

impl Hub {
    pub(super) fn serve(&mut self, client: ClientId, room: RoomId, serve: Serve) {
        match serve {
            // A long backlog goes as several frames.
            Serve::Events(events) => {
                for events in codec::chunk_events(events, codec::EVENTS_PER_FRAME_BYTES) {
                    let msg = ServerMsg::Events { room, events };
                    self.send_to(client, Out::Reliable(frame(&msg)));
                }
            }
            Serve::Snapshot(state) => {
                self.metrics.snapshots.inc();
                let msg = ServerMsg::Snapshot { room, state };
                self.send_to(client, Out::Snapshot(room, frame(&msg)));
            }
        }
    }

    /// A client asks for the events of a room from `from` on.
    /// At most one repair per client and room every `RESYNC_EVERY`: a
    /// client asking again sooner gets nothing (its own timer asks later),
    /// so a tiny request cannot make the relay encode its whole ring at will.
    pub fn handle_resync(&mut self, now: Instant, client: ClientId, room: RoomId, from: Seq) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        if !r.clients.contains(&client) {
            return;
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.resynced
            .get(&room)
            .is_some_and(|t| now.saturating_duration_since(*t) < RESYNC_EVERY)
        {
            return;
        }
        c.resynced.insert(room, now);
        let Some(cache) = &r.cache else { return };
        let since = Seq(from.0.saturating_sub(1));
        let serve = cache.serve(Some(since));
        self.metrics.resyncs.inc();
        self.serve(client, room, serve);
    }

    /// A message from the origin.
    pub fn handle_down(&mut self, now: Instant, msg: DownMsg) {
        match msg {
            DownMsg::Snapshot {
                room,
                state,
                recent,
            } => self.handle_snapshot(now, room, *state, recent),
            DownMsg::Events { room, events } => self.handle_events(now, room, events),
            DownMsg::Ack { user, id, outcome } => self.handle_ack(now, user, id, outcome),
            DownMsg::Throttled {
                user,
                id,
                retry_after_ms,
            } => self.handle_throttled(user, id, retry_after_ms),
            DownMsg::RelayGone { relay } => self.handle_relay_gone(&relay),
            DownMsg::Welcome { .. } | DownMsg::Pong { .. } => {}
            // Cluster mode's routing answers: the upstream links handle
            // them (a hub never sees them).
            DownMsg::Moved { .. } | DownMsg::Redirect { .. } | DownMsg::Serving { .. } => {}
            DownMsg::Error { code, message } => {
                tracing::warn!(%code, %message, "origin reported an error");
            }
        }
    }

    fn handle_snapshot(
        &mut self,
        now: Instant,
        room: RoomId,
        state: RoomState,
        recent: Vec<Event>,
    ) {
        let ring = self.settings.ring;
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let replaced = r.cache.is_some();
        r.cache = Some(RoomCache::with_recent(state, recent, ring));
        r.changed_at = now;
        // Clients that followed the room already may have missed what the
        // snapshot covers: they get it too.
        let current: Vec<ClientId> = if replaced {
            r.clients.iter().copied().collect()
        } else {
            Vec::new()
        };
        self.room_changed(now);
        if let (false, Some(state)) = (current.is_empty(), self.room_state(room)) {
            // Encoded once for all of them.
            let msg = ServerMsg::Snapshot {
                room,
                state: Box::new(state.clone()),
            };
            let bytes = frame(&msg);
            for c in current {
                self.send_to(c, Out::Snapshot(room, bytes.clone()));
            }
        }
        self.serve_waiting(room);
    }

    pub(super) fn serve_waiting(&mut self, room: RoomId) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some(cache) = &r.cache else { return };
        let waiting = std::mem::take(&mut r.waiting);
        let serves: Vec<(ClientId, Serve)> = waiting
            .into_iter()
            .map(|(c, since)| (c, cache.serve(since)))
            .collect();
        for (c, _) in &serves {
            r.clients.insert(*c);
        }
        for (c, serve) in serves {
            self.serve(c, room, serve);
        }
    }

    fn handle_events(&mut self, now: Instant, room: RoomId, events: Vec<Event>) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some(cache) = &mut r.cache else {
            return;
        };
        let new = match cache.handle_events(&events) {
            Ok(new) => new,
            Err(e) => {
                tracing::warn!(%room, error = %e, "gap in the origin's events; resubscribing");
                r.subscribe = Some((Some(cache.seq()), None));
                self.dirty.insert(room);
                return;
            }
        };
        let clients: Vec<ClientId> = r.clients.iter().copied().collect();
        if !new.is_empty() {
            r.changed_at = now;
            self.room_changed(now);
        }
        for e in new {
            let item = sched::Item {
                class: e.class(),
                payload: payload(&ServerMsg::Events {
                    room,
                    events: vec![e],
                }),
                coalesce: None,
                copies: sched::Copies::IfLossy,
            };
            for c in &clients {
                self.send_to(*c, Out::Datagram(item.clone()));
            }
        }
        self.serve_waiting(room);
    }

    /// Heads for rooms that changed lately but not just now, so that a
    /// client notices a lost last event. A room whose events still flow
    /// gets none: its next event shows a gap as well as a head would, and a
    /// head per follower per round was a third of a busy relay's datagrams.
    /// A room counts as quiet after half a round without a change, so a lost
    /// last event is noticed within 1.5 rounds of it.
    pub(super) fn send_heads(&mut self, now: Instant) {
        let window = self.settings.head_window;
        let quiet_after = self.settings.head_every / 2;
        let mut heads = Vec::new();
        for (id, r) in &self.rooms {
            if let Some(cache) = &r.cache {
                let quiet = now.saturating_duration_since(r.changed_at);
                if quiet >= quiet_after && quiet <= window {
                    heads.push((
                        *id,
                        cache.seq(),
                        r.clients.iter().copied().collect::<Vec<_>>(),
                    ));
                }
            }
        }
        for (room, seq, clients) in heads {
            let item = sched::Item {
                class: Class::Ambient,
                payload: payload(&ServerMsg::Head { room, seq }),
                coalesce: Some(room.0),
                copies: sched::Copies::Once,
            };
            for c in clients {
                self.send_to(c, Out::Datagram(item.clone()));
            }
        }
    }
}
