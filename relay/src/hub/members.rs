//! Who is here: clients saying hello (a session resuming here replaces its
//! old connection), following and leaving rooms, going away, and being told
//! to move when the relay drains; standby connections, told at once when
//! the relay their session is live on is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use protocol::message::{ErrorCode, ServerMsg};
use protocol::room::Reason;
use protocol::{RoomId, Seq, SessionId, UserId};

use crate::cache::RoomCache;
use crate::metrics::KindLabel;

use super::out::{frame, ClientId, Out};
use super::state::{Client, Hub, Room};

/// The longest relay name a standby may name (relay names are short).
const MAX_RELAY_NAME: usize = 128;

impl Hub {
    /// A client said hello. A previous connection of the same session (a
    /// client that reconnected here) is replaced.
    pub fn handle_client_up(
        &mut self,
        now: Instant,
        client: ClientId,
        session: SessionId,
        user: UserId,
    ) {
        if let Some(old) = self.sessions.insert((user, session), client) {
            if old != client {
                self.send_to(
                    old,
                    Out::Close(ErrorCode::Normal, "session resumed elsewhere"),
                );
                // The session goes on here: not an ending.
                self.remove_client(now, old);
                self.sessions.insert((user, session), client);
            }
        }
        self.clients.insert(
            client,
            Client {
                session,
                user,
                rooms: BTreeSet::new(),
                resynced: BTreeMap::new(),
                pending: BTreeSet::new(),
                standby_for: None,
            },
        );
        let status = ServerMsg::Upstream {
            connected: self.upstream,
        };
        self.send_to(client, Out::Reliable(frame(&status)));
    }

    /// A client follows a room, holding it at `since` (or not at all). A
    /// room it already follows is not served again (a client that lost its
    /// place asks with `Resync`); past `rooms_per_client` the join fails.
    pub fn handle_join(
        &mut self,
        now: Instant,
        client: ClientId,
        room: RoomId,
        since: Option<Seq>,
    ) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.rooms.contains(&room) {
            return;
        }
        if c.rooms.len() >= self.settings.rooms_per_client {
            self.refuse_join(client, room, Reason::TooMany);
            return;
        }
        c.rooms.insert(room);
        let user = c.user;
        let r = self.rooms.entry(room).or_insert_with(|| Room::new(now));
        let first_client = r.clients.is_empty() && r.waiting.is_empty();
        *r.users.entry(user).or_insert(0) += 1;
        self.dirty.insert(room);
        match &r.cache {
            Some(cache) => {
                let serve = cache.serve(since);
                r.clients.insert(client);
                self.serve(client, room, serve);
            }
            None => {
                r.waiting.push((client, since));
                if first_client {
                    // A resuming client's `since` asks the origin for the
                    // events after it too, so the resume can be gap-free.
                    r.subscribe = Some((None, since));
                }
            }
        }
    }

    /// A client stops following a room.
    pub fn handle_leave(&mut self, _now: Instant, client: ClientId, room: RoomId) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if !c.rooms.remove(&room) {
            return;
        }
        let user = c.user;
        self.detach(client, user, room);
    }

    fn detach(&mut self, client: ClientId, user: UserId, room: RoomId) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.clients.remove(&client);
        r.waiting.retain(|(c, _)| *c != client);
        if let Some(n) = r.users.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                r.users.remove(&user);
            }
        }
        self.dirty.insert(room);
        if r.clients.is_empty() && r.waiting.is_empty() {
            let told = r.told_subscribed;
            let present = std::mem::take(&mut r.told_present);
            self.rooms.remove(&room);
            if told {
                self.gone.entry(room).or_default().extend(present);
            }
        }
    }

    /// A client connection ended (or was cut off); `clean` when it said
    /// goodbye. A session that ends while a room it follows has a live
    /// interaction counts in `ringside_interaction_sessions_total`, and in
    /// `..._session_losses_total` too when it vanished (it may resume on
    /// another relay: from here that cannot be told from a crash, so the
    /// loss rate is an upper bound of the crash rate).
    pub fn handle_client_gone(&mut self, now: Instant, client: ClientId, clean: bool) {
        if let Some(c) = self.clients.get(&client) {
            let (mut pk, mut challenge) = (false, false);
            for room in &c.rooms {
                let state = (self.rooms.get(room))
                    .and_then(|r| r.cache.as_ref())
                    .map(RoomCache::state);
                if let Some(state) = state {
                    pk |= state.battle.as_ref().is_some_and(|b| b.result.is_none());
                    challenge |= state.challenge.is_some();
                }
            }
            for (kind, live) in [("pk", pk), ("challenge", challenge)] {
                if live {
                    let label = KindLabel { kind };
                    self.metrics
                        .interaction_sessions
                        .get_or_create(&label)
                        .inc();
                    if !clean {
                        self.metrics.interaction_losses.get_or_create(&label).inc();
                    }
                }
            }
        }
        self.remove_client(now, client);
    }

    fn remove_client(&mut self, _now: Instant, client: ClientId) {
        let Some(c) = self.clients.remove(&client) else {
            return;
        };
        if self.sessions.get(&(c.user, c.session)) == Some(&client) {
            self.sessions.remove(&(c.user, c.session));
        }
        // Its waiting actions go with it: the SDK sends them again when it
        // resumes, and the origin's id memory makes that safe.
        for key in &c.pending {
            self.pending.remove(key);
        }
        for room in c.rooms {
            self.detach(client, c.user, room);
        }
    }

    /// The client's connection is its session's warm standby, its live
    /// connection on the relay named `primary` (a later call replaces it).
    /// A name longer than any relay's is not kept.
    pub fn handle_standby(&mut self, client: ClientId, primary: String) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.standby_for = (primary.len() <= MAX_RELAY_NAME).then_some(primary);
        }
    }

    /// The origin lost the relay named `relay`: every standby connection of
    /// a session live there is told to resume here now. (A walk over the
    /// clients: once per relay death, not per client or per second.)
    pub fn handle_relay_gone(&mut self, relay: &str) {
        let watching: Vec<ClientId> = (self.clients.iter())
            .filter(|(_, c)| c.standby_for.as_deref() == Some(relay))
            .map(|(id, _)| *id)
            .collect();
        let standbys = (self.clients.values())
            .filter(|c| c.standby_for.is_some())
            .count();
        tracing::info!(
            relay,
            clients = watching.len(),
            standbys,
            "origin lost a relay; telling its clients' standbys"
        );
        if watching.is_empty() {
            return;
        }
        let msg = frame(&ServerMsg::RelayGone {
            relay: relay.to_owned(),
        });
        for c in watching {
            if let Some(client) = self.clients.get_mut(&c) {
                client.standby_for = None;
            }
            self.send_to(c, Out::Reliable(msg.clone()));
        }
    }

    /// Draining: tell every client to move to one of `alternatives`.
    pub fn handle_drain(&mut self, alternatives: &[String]) {
        let msg = frame(&ServerMsg::GoAway {
            alternatives: alternatives.to_vec(),
        });
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for c in clients {
            self.send_to(c, Out::Reliable(msg.clone()));
        }
    }

    /// Refuse a join (no grant) without touching any state.
    pub fn refuse_join(&mut self, client: ClientId, room: RoomId, reason: Reason) {
        let msg = ServerMsg::JoinFailed { room, reason };
        self.send_to(client, Out::Reliable(frame(&msg)));
    }
}
