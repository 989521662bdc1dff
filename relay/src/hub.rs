//! The relay's core (pure: takes `now`, does no IO): which clients follow
//! which rooms, each room's cache, the actions waiting for the origin, and
//! what to send where. The driver in `server.rs` feeds it inputs and carries
//! its outputs to client connections and the upstream link.
//!
//! Rules it keeps:
//! - it never invents an ack: an action's outcome comes from the origin (the
//!   one refusal of its own, `NoGrant`, is final: the token does not grant
//!   the room; an action over the rate limit is simply not forwarded, and
//!   the SDK sends it again after its timeout);
//! - while the origin is unreachable, actions wait here and are sent again
//!   when the link returns (the origin's id memory makes that safe), and
//!   again if an ack is overdue;
//! - an upstream subscription is held while at least one local client
//!   follows the room;
//! - nothing that changes room membership is ever dropped: the hub keeps
//!   what the origin *should* know (subscriptions, who is present where) and
//!   what it has been *told* on the current link, and [`Hub::poll_upstream`]
//!   yields the difference, one message at a time, as fast as the link
//!   takes them (backpressure, not a queue that overflows). A new link
//!   starts from nothing told, so reconnecting reconciles instead of
//!   replaying stale messages;
//! - every resource a client can make it hold is bounded: rooms followed per
//!   client, actions waiting per client and on the whole relay (past either,
//!   the action is answered `Throttled`); a client's waiting actions are
//!   dropped when it goes (the SDK sends them again when it resumes);
//! - a repeated join of a room the client already follows is answered once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{Bytes, BytesMut};
use protocol::codec;
use protocol::message::{ActionMsg, Actor, DownMsg, ErrorCode, ServerMsg, UpMsg};
use protocol::room::Reason;
use protocol::{ActionId, Class, Event, RoomId, RoomState, Seq, SessionId, UserId};

use crate::cache::{RoomCache, Serve};
use crate::metrics::{class_name, ClassLabel, KindLabel, Metrics};
use crate::sched;

/// A client connection's number on this relay.
pub type ClientId = u64;

/// Something for one client connection to send.
#[derive(Debug, Clone)]
pub enum Out {
    /// A message for the datagram scheduler.
    Datagram(sched::Item),
    /// A frame for the control stream (reliable, ordered).
    Reliable(Bytes),
    /// A frame for a stream of its own (a snapshot of this room; a newer one
    /// replaces one still waiting to be sent).
    Snapshot(RoomId, Bytes),
    /// Close the connection.
    Close(ErrorCode, &'static str),
}

impl Out {
    /// Bytes this holds, for the per-client queue's byte bound.
    pub fn len(&self) -> usize {
        match self {
            Out::Datagram(item) => item.payload.len(),
            Out::Reliable(b) | Out::Snapshot(_, b) => b.len(),
            Out::Close(..) => 0,
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an output goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// To a client connection.
    Client(ClientId, Out),
}

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Events kept per room.
    pub ring: usize,
    /// Resend an action to the origin when its ack is this late (µs).
    pub resend_after_us: u64,
    /// Rooms that changed within this long get periodic heads (µs).
    pub head_window_us: u64,
    /// Rooms one client may follow at once.
    pub rooms_per_client: usize,
    /// Actions of one client waiting for the origin.
    pub pending_per_client: usize,
    /// Actions waiting for the origin on the whole relay.
    pub pending_total: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ring: 2048,
            resend_after_us: 1_500_000,
            head_window_us: 3_000_000,
            rooms_per_client: 16,
            pending_per_client: 256,
            pending_total: 65_536,
        }
    }
}

struct Room {
    cache: Option<RoomCache>,
    clients: BTreeSet<ClientId>,
    /// Clients that joined before the cache existed, with their `since`.
    waiting: Vec<(ClientId, Option<Seq>)>,
    /// Local connections per user, for presence.
    users: BTreeMap<UserId, usize>,
    changed_at: u64,
    /// A `Subscribe { since, history }` is due on the link.
    subscribe: Option<(Option<Seq>, Option<Seq>)>,
    /// Whether the origin has been told of the subscription on this link.
    told_subscribed: bool,
    /// The users the origin has been told are present, on this link.
    told_present: BTreeSet<UserId>,
}

impl Room {
    fn new(now: u64) -> Room {
        Room {
            cache: None,
            clients: BTreeSet::new(),
            waiting: Vec::new(),
            users: BTreeMap::new(),
            changed_at: now,
            subscribe: None,
            told_subscribed: false,
            told_present: BTreeSet::new(),
        }
    }
}

struct Client {
    session: SessionId,
    user: UserId,
    rooms: BTreeSet<RoomId>,
    /// When each room was last repaired for this client.
    resynced: BTreeMap<RoomId, u64>,
    /// Its actions waiting for the origin.
    pending: BTreeSet<(UserId, ActionId)>,
}

/// Least time between two repairs of one room for one client (µs).
const RESYNC_EVERY_US: u64 = 20_000;

/// Retry hint for an action refused because too many wait already (ms).
const THROTTLE_FULL_MS: u32 = 200;

struct Pending {
    client: ClientId,
    via_stream: bool,
    actor: Actor,
    msg: ActionMsg,
    /// When it reached the relay (µs), for `ringside_action_ack_seconds`.
    arrived: u64,
    /// When it last went upstream (µs); `None`: not yet.
    sent_at: Option<u64>,
    /// Waiting in the upstream queue.
    queued: bool,
}

/// The relay's state.
pub struct Hub {
    settings: Settings,
    rooms: BTreeMap<RoomId, Room>,
    clients: BTreeMap<ClientId, Client>,
    /// A session id is unique per user only: keyed by both, so another user
    /// presenting the same id can neither take a session over nor pre-empt
    /// one of its actions.
    sessions: BTreeMap<(UserId, SessionId), ClientId>,
    pending: BTreeMap<(UserId, ActionId), Pending>,
    upstream: bool,
    out: VecDeque<Output>,
    /// Rooms whose subscription or presence the origin must be told about.
    dirty: BTreeSet<RoomId>,
    /// Rooms no client follows any more, with the users the origin still
    /// thinks present: they go offline, then the room is unsubscribed.
    gone: BTreeMap<RoomId, BTreeSet<UserId>>,
    /// Actions to send upstream, in order.
    actions: VecDeque<(UserId, ActionId)>,
    /// Membership messages staged for the link (counted as told already),
    /// sent before anything else; at most one room's worth at a time.
    staged: VecDeque<UpMsg>,
    /// What the operator sees (atomic counters; they decide nothing).
    metrics: Metrics,
}

/// A session-class answer to a client (an ack, a throttle): twice as
/// datagrams, and on the control stream too when the question came that way.
pub(crate) fn answer(msg: &ServerMsg, via_stream: bool) -> impl Iterator<Item = Out> {
    let datagram = Out::Datagram(sched::Item {
        class: Class::Session,
        payload: payload(msg),
        coalesce: None,
        copies: sched::Copies::Twice,
    });
    let reliable = via_stream.then(|| Out::Reliable(frame(msg)));
    std::iter::once(datagram).chain(reliable)
}

/// A message as one datagram payload.
pub(crate) fn payload(msg: &ServerMsg) -> Bytes {
    // Server messages are plain data; encoding cannot fail.
    Bytes::from(codec::encode(msg).unwrap_or_default())
}

/// A message as one control-stream frame.
pub(crate) fn frame(msg: &ServerMsg) -> Bytes {
    let mut b = BytesMut::new();
    if let Err(e) = codec::write_frame(msg, &mut b) {
        tracing::error!(error = %e, "cannot frame a message for a client");
    }
    b.freeze()
}

impl Hub {
    /// An empty hub, upstream down.
    pub fn new(settings: Settings) -> Hub {
        Hub::with_metrics(settings, Metrics::default())
    }

    /// An empty hub that counts into `metrics`.
    pub fn with_metrics(settings: Settings, metrics: Metrics) -> Hub {
        Hub {
            metrics,
            settings,
            rooms: BTreeMap::new(),
            clients: BTreeMap::new(),
            sessions: BTreeMap::new(),
            pending: BTreeMap::new(),
            upstream: false,
            out: VecDeque::new(),
            dirty: BTreeSet::new(),
            gone: BTreeMap::new(),
            actions: VecDeque::new(),
            staged: VecDeque::new(),
        }
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether [`Hub::poll_upstream`] has something to send.
    pub fn has_upstream(&self) -> bool {
        self.upstream
            && !(self.staged.is_empty() && self.dirty.is_empty() && self.actions.is_empty())
    }

    /// The next message for the origin, while the link is up: what the
    /// origin must be told about membership first, then actions.
    pub fn poll_upstream(&mut self) -> Option<UpMsg> {
        if !self.upstream {
            return None;
        }
        while self.staged.is_empty() {
            let Some(room) = self.dirty.pop_first() else {
                break;
            };
            self.stage_membership(room);
        }
        if let Some(msg) = self.staged.pop_front() {
            return Some(msg);
        }
        while let Some(key) = self.actions.pop_front() {
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            if !p.queued {
                continue;
            }
            p.queued = false;
            return Some(UpMsg::Action {
                actor: p.actor,
                msg: p.msg.clone(),
            });
        }
        None
    }

    /// Stage every message that brings the origin's view of `room` to ours
    /// (one pass over its users: a room of 10,000 viewers announced after a
    /// reconnect costs 10,000 steps, not 10,000 scans), and count it told.
    fn stage_membership(&mut self, room: RoomId) {
        if let Some(users) = self.gone.remove(&room) {
            self.staged
                .extend(users.into_iter().map(|user| UpMsg::Presence {
                    room,
                    user,
                    online: false,
                }));
            self.staged.push_back(UpMsg::Unsubscribe { room });
        }
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if let Some((since, history)) = r.subscribe.take() {
            r.told_subscribed = true;
            self.staged.push_back(UpMsg::Subscribe {
                room,
                since,
                history,
            });
        }
        let online = (r.users.keys()).filter(|u| !r.told_present.contains(u));
        let offline = (r.told_present.iter()).filter(|u| !r.users.contains_key(u));
        let changes: Vec<(UserId, bool)> = (online.map(|u| (*u, true)))
            .chain(offline.map(|u| (*u, false)))
            .collect();
        for (user, on) in changes {
            if on {
                r.told_present.insert(user);
            } else {
                r.told_present.remove(&user);
            }
            self.staged.push_back(UpMsg::Presence {
                room,
                user,
                online: on,
            });
        }
    }

    fn queue_action(&mut self, now: u64, key: (UserId, ActionId)) {
        if !self.upstream {
            return;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            p.sent_at = Some(now);
            if !p.queued {
                p.queued = true;
                self.actions.push_back(key);
            }
        }
    }

    /// The next output to deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether the origin is reachable.
    pub fn upstream(&self) -> bool {
        self.upstream
    }

    /// Connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Actions waiting for the origin.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The cached state of a room.
    pub fn room_state(&self, room: RoomId) -> Option<&RoomState> {
        self.rooms.get(&room)?.cache.as_ref().map(RoomCache::state)
    }

    fn send_to(&mut self, client: ClientId, out: Out) {
        self.out.push_back(Output::Client(client, out));
    }

    /// A client said hello. A previous connection of the same session (a
    /// client that reconnected here) is replaced.
    pub fn handle_client_up(
        &mut self,
        now: u64,
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
    pub fn handle_join(&mut self, now: u64, client: ClientId, room: RoomId, since: Option<Seq>) {
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

    fn serve(&mut self, client: ClientId, room: RoomId, serve: Serve) {
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

    /// A client stops following a room.
    pub fn handle_leave(&mut self, _now: u64, client: ClientId, room: RoomId) {
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

    /// A client's action, with the actor its token proves. Past the bounds
    /// on waiting actions (per client, per relay) it is answered `Throttled`.
    pub fn handle_action(
        &mut self,
        now: u64,
        client: ClientId,
        actor: Actor,
        msg: ActionMsg,
        via_stream: bool,
    ) {
        let key = (actor.user, msg.id);
        if let Some(p) = self.pending.get_mut(&key) {
            // A copy (datagram twice, or the stream fallback): already on its
            // way. It may come from the session's newer connection.
            p.via_stream |= via_stream;
            let old = std::mem::replace(&mut p.client, client);
            if old != client {
                if let Some(c) = self.clients.get_mut(&old) {
                    c.pending.remove(&key);
                }
                if let Some(c) = self.clients.get_mut(&client) {
                    c.pending.insert(key);
                }
            }
            return;
        }
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        if c.pending.len() >= self.settings.pending_per_client
            || self.pending.len() >= self.settings.pending_total
        {
            let msg = ServerMsg::Throttled {
                id: msg.id,
                retry_after_ms: THROTTLE_FULL_MS,
            };
            for out in answer(&msg, via_stream) {
                self.send_to(client, out);
            }
            return;
        }
        c.pending.insert(key);
        self.pending.insert(
            key,
            Pending {
                client,
                via_stream,
                actor,
                msg,
                arrived: now,
                sent_at: None,
                queued: false,
            },
        );
        self.queue_action(now, key);
    }

    /// A client asks for the events of a room from `from` on.
    /// At most one repair per client and room every `RESYNC_EVERY_US`: a
    /// client asking again sooner gets nothing (its own timer asks later),
    /// so a tiny request cannot make the relay encode its whole ring at will.
    pub fn handle_resync(&mut self, now: u64, client: ClientId, room: RoomId, from: Seq) {
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
            .is_some_and(|t| now.saturating_sub(*t) < RESYNC_EVERY_US)
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

    /// A client connection ended (or was cut off); `clean` when it said
    /// goodbye. A session that ends while a room it follows has a live
    /// interaction counts in `ringside_interaction_sessions_total`, and in
    /// `..._session_losses_total` too when it vanished (it may resume on
    /// another relay: from here that cannot be told from a crash, so the
    /// loss rate is an upper bound of the crash rate).
    pub fn handle_client_gone(&mut self, now: u64, client: ClientId, clean: bool) {
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

    fn remove_client(&mut self, _now: u64, client: ClientId) {
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

    /// The link to the origin is up (a new link: the origin knows nothing of
    /// us): every room is subscribed again from what we hold, every present
    /// user announced, and every waiting action sent again.
    pub fn handle_upstream_up(&mut self, now: u64) {
        self.upstream = true;
        self.reset_told();
        for (id, r) in &mut self.rooms {
            let history = r.waiting.iter().filter_map(|(_, s)| *s).min();
            r.subscribe = Some(match &r.cache {
                Some(cache) => (Some(cache.seq()), None),
                None => (None, history),
            });
            self.dirty.insert(*id);
        }
        let keys: Vec<(UserId, ActionId)> = self.pending.keys().copied().collect();
        for key in keys {
            self.queue_action(now, key);
        }
        self.broadcast_status();
    }

    /// Forget what the origin was told: the link that carried it is gone.
    fn reset_told(&mut self) {
        for r in self.rooms.values_mut() {
            r.told_subscribed = false;
            r.told_present.clear();
            r.subscribe = None;
        }
        self.gone.clear();
        self.dirty.clear();
        self.staged.clear();
        self.actions.clear();
        for p in self.pending.values_mut() {
            p.queued = false;
        }
    }

    /// The link to the origin is down: tell clients; keep everything else.
    pub fn handle_upstream_down(&mut self, _now: u64) {
        if !self.upstream {
            return;
        }
        self.upstream = false;
        self.reset_told();
        self.broadcast_status();
    }

    fn broadcast_status(&mut self) {
        let msg = frame(&ServerMsg::Upstream {
            connected: self.upstream,
        });
        let clients: Vec<ClientId> = self.clients.keys().copied().collect();
        for c in clients {
            self.send_to(c, Out::Reliable(msg.clone()));
        }
    }

    /// A message from the origin.
    pub fn handle_down(&mut self, now: u64, msg: DownMsg) {
        match msg {
            DownMsg::Snapshot {
                room,
                state,
                recent,
            } => self.handle_snapshot(now, room, *state, recent),
            DownMsg::Events { room, events } => self.handle_events(now, room, events),
            DownMsg::Ack { user, id, outcome } => {
                let Some(p) = self.take_pending((user, id)) else {
                    return;
                };
                let class = class_name(p.msg.action.class());
                let waited = now.saturating_sub(p.arrived) as f64 / 1e6;
                (self.metrics.action_ack.get_or_create(&ClassLabel { class })).observe(waited);
                // The session may have moved to a newer connection here.
                let client = (self.sessions.get(&(user, id.session)).copied()).unwrap_or(p.client);
                let ack = ServerMsg::Ack { id, outcome };
                for out in answer(&ack, p.via_stream) {
                    self.send_to(client, out);
                }
            }
            DownMsg::Throttled {
                user,
                id,
                retry_after_ms,
            } => {
                // The origin's per-user backstop: nothing was decided, so the
                // action stops waiting here and its sender retries later.
                let Some(p) = self.take_pending((user, id)) else {
                    return;
                };
                let client = (self.sessions.get(&(user, id.session)).copied()).unwrap_or(p.client);
                let msg = ServerMsg::Throttled { id, retry_after_ms };
                self.send_to(client, Out::Reliable(frame(&msg)));
            }
            DownMsg::Welcome { .. } | DownMsg::Pong { .. } => {}
            DownMsg::Error { code, message } => {
                tracing::warn!(%code, %message, "origin reported an error");
            }
        }
    }

    fn take_pending(&mut self, key: (UserId, ActionId)) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        if let Some(c) = self.clients.get_mut(&p.client) {
            c.pending.remove(&key);
        }
        Some(p)
    }

    fn handle_snapshot(&mut self, now: u64, room: RoomId, state: RoomState, recent: Vec<Event>) {
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

    fn serve_waiting(&mut self, room: RoomId) {
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

    fn handle_events(&mut self, now: u64, room: RoomId, events: Vec<Event>) {
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
        if !new.is_empty() {
            r.changed_at = now;
        }
        let clients: Vec<ClientId> = r.clients.iter().copied().collect();
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

    /// Periodic work: heads for rooms that changed lately (so a client notices
    /// a lost last event) and resends of overdue actions.
    pub fn handle_tick(&mut self, now: u64) {
        let window = self.settings.head_window_us;
        let mut heads = Vec::new();
        for (id, r) in &self.rooms {
            if let Some(cache) = &r.cache {
                if now.saturating_sub(r.changed_at) <= window {
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
        let overdue: Vec<(UserId, ActionId)> = (self.pending.iter())
            .filter(|(_, p)| {
                p.sent_at
                    .is_none_or(|t| now.saturating_sub(t) >= self.settings.resend_after_us)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in overdue {
            self.queue_action(now, key);
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

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::room::Grant;
    use protocol::{Action, GiftId, Outcome, ServerTime};

    fn drain(h: &mut Hub) -> Vec<Output> {
        std::iter::from_fn(|| h.poll_output()).collect()
    }

    fn gift(session: SessionId, n: u64, gift: u32) -> ActionMsg {
        ActionMsg {
            id: ActionId { session, n },
            room: RoomId(1),
            sent_at: ServerTime(0),
            action: Action::Gift {
                gift: GiftId(gift),
                count: 1,
            },
        }
    }

    fn viewer(user: u64) -> Actor {
        Actor {
            user: UserId(user),
            grant: Grant::Viewer,
        }
    }

    #[test]
    fn another_user_cannot_take_a_session_over() {
        let mut h = Hub::new(Settings::default());
        h.handle_upstream_up(0);
        let s = SessionId(0xfeed);
        h.handle_client_up(0, 1, s, UserId(7));
        h.handle_action(0, 1, viewer(7), gift(s, 1, 1), false);
        drain(&mut h);
        // Another user says hello with the victim's session id (ids are
        // public: every event's cause carries one).
        h.handle_client_up(1, 2, s, UserId(666));
        let out = drain(&mut h);
        assert!(
            !out.iter()
                .any(|o| matches!(o, Output::Client(1, Out::Close(..)))),
            "the victim was closed"
        );
        let ack = DownMsg::Ack {
            user: UserId(7),
            id: ActionId { session: s, n: 1 },
            outcome: Outcome::Applied { seq: Seq(2) },
        };
        h.handle_down(2, ack);
        let out = drain(&mut h);
        assert!(
            out.iter().any(|o| matches!(o, Output::Client(1, _))),
            "the victim gets its ack"
        );
        assert!(
            !out.iter().any(|o| matches!(o, Output::Client(2, _))),
            "the other user gets nothing"
        );
    }

    #[test]
    fn a_forged_id_does_not_preempt_the_owners_action() {
        let mut h = Hub::new(Settings::default());
        h.handle_upstream_up(0);
        let s = SessionId(0xfeed);
        h.handle_client_up(0, 1, s, UserId(7));
        h.handle_client_up(0, 2, SessionId(1), UserId(666));
        drain(&mut h);
        h.handle_action(0, 2, viewer(666), gift(s, 5, 1), false);
        h.handle_action(1, 1, viewer(7), gift(s, 5, 5), false);
        drain(&mut h);
        let owners: Vec<UserId> = std::iter::from_fn(|| h.poll_upstream())
            .filter_map(|m| match m {
                UpMsg::Action { actor, .. } => Some(actor.user),
                _ => None,
            })
            .collect();
        assert_eq!(
            owners,
            vec![UserId(666), UserId(7)],
            "both go upstream, each as its own"
        );
    }

    #[test]
    fn repairs_are_rate_limited_per_client_and_room() {
        let mut h = Hub::new(Settings::default());
        h.handle_upstream_up(0);
        h.handle_client_up(0, 1, SessionId(1), UserId(7));
        h.handle_join(0, 1, RoomId(1), None);
        h.handle_down(
            0,
            DownMsg::Snapshot {
                room: RoomId(1),
                state: Box::new(RoomState::new(RoomId(1))),
                recent: vec![],
            },
        );
        drain(&mut h);
        h.handle_resync(1_000, 1, RoomId(1), Seq(1));
        assert_eq!(drain(&mut h).len(), 1);
        h.handle_resync(2_000, 1, RoomId(1), Seq(1));
        assert!(
            drain(&mut h).is_empty(),
            "a second repair within the limit is ignored"
        );
        h.handle_resync(1_000 + RESYNC_EVERY_US, 1, RoomId(1), Seq(1));
        assert_eq!(drain(&mut h).len(), 1);
    }

    fn snapshot(h: &mut Hub, room: RoomId) {
        h.handle_down(
            0,
            DownMsg::Snapshot {
                room,
                state: Box::new(RoomState::new(room)),
                recent: vec![],
            },
        );
    }

    fn upstream(h: &mut Hub) -> Vec<UpMsg> {
        std::iter::from_fn(|| h.poll_upstream()).collect()
    }

    #[test]
    fn a_repeated_join_is_answered_once_and_rooms_per_client_are_capped() {
        let mut h = Hub::new(Settings {
            rooms_per_client: 2,
            ..Settings::default()
        });
        h.handle_upstream_up(0);
        h.handle_client_up(0, 1, SessionId(1), UserId(7));
        snapshot(&mut h, RoomId(1));
        h.handle_join(0, 1, RoomId(1), None);
        snapshot(&mut h, RoomId(1));
        drain(&mut h);
        for _ in 0..100 {
            h.handle_join(1, 1, RoomId(1), None);
        }
        assert!(
            drain(&mut h).is_empty(),
            "a room already followed is not served again"
        );
        h.handle_join(1, 1, RoomId(2), None);
        h.handle_join(1, 1, RoomId(3), None);
        let refused = drain(&mut h)
            .into_iter()
            .filter(|o| matches!(o, Output::Client(1, Out::Reliable(_))))
            .count();
        assert_eq!(refused, 1, "the third room is refused");
        assert_eq!(h.rooms.len(), 2);
    }

    #[test]
    fn membership_is_reconciled_on_a_new_link_not_replayed() {
        let mut h = Hub::new(Settings::default());
        h.handle_upstream_up(0);
        h.handle_client_up(0, 1, SessionId(1), UserId(7));
        h.handle_client_up(0, 2, SessionId(2), UserId(8));
        h.handle_join(0, 1, RoomId(1), None);
        h.handle_join(0, 2, RoomId(1), None);
        let first = upstream(&mut h);
        assert_eq!(first.len(), 3, "subscribe and two presences: {first:?}");
        // The link drops; meanwhile user 8 leaves and user 7 joins room 2.
        h.handle_upstream_down(1);
        h.handle_leave(2, 2, RoomId(1));
        h.handle_join(2, 1, RoomId(2), None);
        assert!(
            upstream(&mut h).is_empty(),
            "nothing goes up while the link is down"
        );
        h.handle_upstream_up(3);
        let again = upstream(&mut h);
        let online: Vec<(RoomId, UserId)> = (again.iter())
            .filter_map(|m| match m {
                UpMsg::Presence {
                    room,
                    user,
                    online: true,
                } => Some((*room, *user)),
                _ => None,
            })
            .collect();
        assert_eq!(online, vec![(RoomId(1), UserId(7)), (RoomId(2), UserId(7))]);
        assert!(
            !again
                .iter()
                .any(|m| matches!(m, UpMsg::Presence { online: false, .. })),
            "no stale offline from the old link: {again:?}"
        );
        let subs = again
            .iter()
            .filter(|m| matches!(m, UpMsg::Subscribe { .. }))
            .count();
        assert_eq!(subs, 2);
    }

    #[test]
    fn membership_changes_wait_for_the_link_and_are_never_dropped() {
        let mut h = Hub::new(Settings::default());
        h.handle_upstream_up(0);
        h.handle_client_up(0, 1, SessionId(1), UserId(7));
        for r in 0..10_000 {
            h.handle_join(0, 1, RoomId(r), None);
        }
        // Nothing is taken for a while (a slow link): it all waits here.
        assert!(h.has_upstream());
        let subs = upstream(&mut h)
            .into_iter()
            .filter(|m| matches!(m, UpMsg::Subscribe { .. }))
            .count();
        assert_eq!(subs, 16, "only the rooms the client may follow");
        h.handle_client_gone(1, 1, true);
        let gone = upstream(&mut h);
        let unsubs = gone
            .iter()
            .filter(|m| matches!(m, UpMsg::Unsubscribe { .. }))
            .count();
        let offline = (gone.iter())
            .filter(|m| matches!(m, UpMsg::Presence { online: false, .. }))
            .count();
        assert_eq!((unsubs, offline), (16, 16));
    }

    #[test]
    fn waiting_actions_are_bounded_and_leave_with_their_client() {
        let mut h = Hub::new(Settings {
            pending_per_client: 3,
            ..Settings::default()
        });
        let s = SessionId(1);
        h.handle_client_up(0, 1, s, UserId(7));
        // The origin is out of reach: actions wait.
        for n in 1..=5 {
            h.handle_action(0, 1, viewer(7), gift(s, n, 1), false);
        }
        assert_eq!(h.pending(), 3);
        let throttled = drain(&mut h)
            .into_iter()
            .filter(|o| matches!(o, Output::Client(1, Out::Datagram(_))))
            .count();
        assert_eq!(throttled, 2, "the two past the bound are answered");
        h.handle_client_gone(1, 1, true);
        assert_eq!(
            h.pending(),
            0,
            "dropped with the client; the SDK resends on resume"
        );
        h.handle_upstream_up(2);
        assert!(upstream(&mut h).is_empty());
    }
}
