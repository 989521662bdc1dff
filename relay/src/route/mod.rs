//! Cluster mode's routing (pure: takes `now`, does no IO): which origin
//! node each room's traffic goes to, over the links that are up.
//!
//! The hub still decides *what* the origin must be told (subscriptions,
//! presence, actions) as if there were one origin; the router decides
//! *where* each of those messages goes, and reacts to the nodes' routing
//! answers:
//! - a room's first `Subscribe` goes to the placement's choice among the
//!   live nodes ([`protocol::placement::owner`]), and every later message of
//!   that room follows it, until
//! - `Moved { room, owner }` from the node the room is routed to: the room
//!   goes to `owner` when it is a live link (at once the first time), or,
//!   when `owner` is unknown or not connected, it waits a bounded backoff
//!   (`retry_min` doubling to `retry_max`) and then tries the placement's
//!   choice among the live links. Moving a room is [`RouteOut::Rehome`]: the
//!   hub states the room again (subscribe from its last seq, presence) and
//!   that goes to the new node;
//! - a link going down re-homes every room routed to it at once (with its
//!   waiting actions sent again: the dead node never answered them); the
//!   last link going down is the hub's link down ([`RouteOut::HubDown`]),
//!   the first one up its link up;
//! - `Redirect { actor, msg, owner }`: the action goes to `owner` if that is
//!   a live link other than the sender, else to the room's current node if
//!   that is another one, else it is held (per room at most
//!   `held_per_room`, each action at most `held_for` from when it was first
//!   held, however often it bounces) and sent when the room is re-homed
//!   (dropped instead when its node died: the hub then sends every waiting
//!   action of the room again), or after `held_retry` to the room's node
//!   (a node handing back an action it could not commit). One redirect sends the action
//!   at most once; the hub's own resend of an overdue action and the
//!   client's retry with the same id are the backstops, and the origin's
//!   id memory makes a duplicate harmless.
//!
//! - `Serving { rooms }`: a node has just won these rooms; each one
//!   routed elsewhere or waiting goes to it at once (a dead node's rooms
//!   resume when they are won, not at the next retry).
//!
//! While a room waits for a node, its membership messages are dropped (the
//! re-home states the room afresh) and its actions are held.
//!
//! Drive it like the hub: inputs are `handle_*` methods taking `now`; then
//! take [`Router::poll_output`] until `None`; sleep until
//! [`Router::poll_timeout`] and call [`Router::handle_timeout`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use protocol::message::{ActionMsg, Actor, UpMsg};
use protocol::placement;
use protocol::{ActionId, RoomId, UserId};

use crate::metrics::Metrics;

#[cfg(test)]
mod tests;

/// The router's settings.
#[derive(Debug, Clone)]
pub struct RouteSettings {
    /// First wait before a room with no known live owner tries again.
    pub retry_min: Duration,
    /// Longest such wait (the wait doubles from `retry_min` up to this).
    pub retry_max: Duration,
    /// A room not moved for this long starts its backoff over.
    pub calm_after: Duration,
    /// Actions held per room, at most (more are dropped).
    pub held_per_room: usize,
    /// How long an action may stay held, from when it was first held.
    pub held_for: Duration,
    /// Held actions of a room that has a node go to it after this long.
    pub held_retry: Duration,
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            calm_after: Duration::from_secs(2),
            held_per_room: 256,
            held_for: Duration::from_secs(3),
            held_retry: Duration::from_millis(100),
        }
    }
}

/// What the router hands its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteOut {
    /// Send this to the node of that name.
    Send(String, UpMsg),
    /// The room now goes to another node: the hub must state it again
    /// (subscribe from its last seq, presence) and, with `requeue`, send its
    /// waiting actions again (the old node died without answering them).
    Rehome {
        /// The room.
        room: RoomId,
        /// Send its waiting actions again.
        requeue: bool,
    },
    /// The first link is up: the hub's link up.
    HubUp,
    /// The last link is down: the hub's link down.
    HubDown,
}

/// Where one subscribed room goes.
#[derive(Debug, Default)]
struct Route {
    /// The node its messages go to (always a live link); `None`: waiting
    /// until `retry_at` for one.
    node: Option<String>,
    /// When to try again (while `node` is `None`).
    retry_at: Option<Instant>,
    /// The owner a `Moved` named, tried first at `retry_at` if still live.
    hint: Option<String>,
    /// Moves in a row, each within `calm_after` of the last.
    moves: u32,
    /// When it last moved.
    moved_at: Option<Instant>,
}

/// One held action.
#[derive(Debug)]
struct Held {
    actor: Actor,
    msg: ActionMsg,
}

/// A room's held actions.
#[derive(Debug, Default)]
struct HeldRoom {
    items: VecDeque<Held>,
    /// When to send them to the room's node (when it has one).
    flush_at: Option<Instant>,
}

type Key = (UserId, ActionId);

/// Cluster mode's routing state. See the module docs.
pub struct Router {
    settings: RouteSettings,
    /// The nodes with a live link, by their `Welcome` name.
    live: BTreeSet<String>,
    rooms: BTreeMap<RoomId, Route>,
    held: BTreeMap<RoomId, HeldRoom>,
    /// Until when each action once held may be held (kept for another
    /// `held_for` past that, so a bouncing action stays dropped).
    until: BTreeMap<Key, Instant>,
    /// Rooms with something due, by when (stale entries are harmless).
    timers: BTreeSet<(Instant, RoomId)>,
    out: VecDeque<RouteOut>,
    metrics: Metrics,
}

impl Router {
    /// A router with no live link, counting into `metrics`.
    pub fn new(settings: RouteSettings, metrics: Metrics) -> Router {
        Router {
            settings,
            live: BTreeSet::new(),
            rooms: BTreeMap::new(),
            held: BTreeMap::new(),
            until: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            metrics,
        }
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<RouteOut> {
        self.out.pop_front()
    }

    /// When something is next due (the driver then calls
    /// [`Router::handle_timeout`]; waking early is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The node `room` is routed to, if any.
    pub fn node_of(&self, room: RoomId) -> Option<&str> {
        self.rooms.get(&room)?.node.as_deref()
    }

    /// Actions held for `room`.
    pub fn held(&self, room: RoomId) -> usize {
        self.held.get(&room).map_or(0, |h| h.items.len())
    }

    /// The live nodes.
    pub fn live(&self) -> impl Iterator<Item = &str> {
        self.live.iter().map(String::as_str)
    }

    /// The placement's choice for `room` among the live nodes.
    fn choice(&self, room: RoomId) -> Option<String> {
        placement::owner(room, self.live.iter().map(String::as_str)).map(str::to_string)
    }

    fn send(&mut self, node: &str, msg: UpMsg) {
        self.out.push_back(RouteOut::Send(node.to_string(), msg));
    }

    /// A link to node `name` is up (its `Welcome` named it so).
    pub fn handle_link_up(&mut self, now: Instant, name: &str) {
        if !self.live.insert(name.to_string()) {
            return;
        }
        self.metrics.origin_links_up.set(self.live.len() as i64);
        if self.live.len() == 1 {
            self.out.push_back(RouteOut::HubUp);
            return;
        }
        // A node joined or came back: rooms waiting for one try now.
        let waiting: Vec<RoomId> = (self.rooms.iter())
            .filter(|(_, r)| r.node.is_none())
            .map(|(room, _)| *room)
            .collect();
        for room in waiting {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.retry_at = Some(now);
            }
            self.timers.insert((now, room));
        }
    }

    /// The link to node `name` is down: its rooms go to the placement's
    /// choice among the others, with their waiting actions sent again.
    pub fn handle_link_down(&mut self, now: Instant, name: &str) {
        if !self.live.remove(name) {
            return;
        }
        self.metrics.origin_links_up.set(self.live.len() as i64);
        if self.live.is_empty() {
            // The hub states everything afresh when a link returns.
            self.rooms.clear();
            self.held.clear();
            self.until.clear();
            self.timers.clear();
            self.out.push_back(RouteOut::HubDown);
            return;
        }
        let orphans: Vec<RoomId> = (self.rooms.iter())
            .filter(|(_, r)| r.node.as_deref() == Some(name))
            .map(|(room, _)| *room)
            .collect();
        for room in orphans {
            if let Some(node) = self.choice(room) {
                self.note_move(now, room);
                self.route_to(now, room, node, true);
            }
        }
    }

    /// Count a move of `room` (the backoff's step); returns moves in a row.
    fn note_move(&mut self, now: Instant, room: RoomId) -> u32 {
        let calm = self.settings.calm_after;
        let Some(r) = self.rooms.get_mut(&room) else {
            return 0;
        };
        let recent = r
            .moved_at
            .is_some_and(|t| now.saturating_duration_since(t) < calm);
        r.moves = if recent { r.moves.saturating_add(1) } else { 0 };
        r.moved_at = Some(now);
        r.moves
    }

    /// The wait before try number `n` (0-based) of a room with no owner.
    fn backoff(&self, n: u32) -> Duration {
        let doubled = self.settings.retry_min.saturating_mul(1 << n.min(16));
        doubled.min(self.settings.retry_max)
    }

    /// Route `room` to `node` from now on: the hub states it again there,
    /// and its held actions go there.
    fn route_to(&mut self, now: Instant, room: RoomId, node: String, requeue: bool) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.node = Some(node.clone());
        r.retry_at = None;
        r.hint = None;
        self.out.push_back(RouteOut::Rehome { room, requeue });
        if requeue {
            // The hub sends every waiting action of the room again: held
            // copies would reach the node twice.
            self.held.remove(&room);
        } else {
            self.flush_held(now, room, &node);
        }
    }

    /// Send `room`'s held actions (those still within their bound) to `node`.
    fn flush_held(&mut self, now: Instant, room: RoomId, node: &str) {
        let Some(h) = self.held.remove(&room) else {
            return;
        };
        for held in h.items {
            let key = (held.actor.user, held.msg.id);
            if self.until.get(&key).is_some_and(|t| *t <= now) {
                self.metrics.held_dropped.inc();
                continue;
            }
            self.send(
                node,
                UpMsg::Action {
                    actor: held.actor,
                    msg: held.msg,
                },
            );
        }
    }

    /// `node` says it does not serve `room`; `owner` is who should.
    pub fn handle_moved(&mut self, now: Instant, from: &str, room: RoomId, owner: Option<String>) {
        if self.node_of(room) != Some(from) {
            return; // stale: the room has moved on already (or is gone)
        }
        self.metrics.moved.inc();
        let moves = self.note_move(now, room);
        let owner = owner.filter(|o| o != from && self.live.contains(o));
        let wait = match (&owner, moves) {
            (Some(_), 0) => Duration::ZERO,
            (Some(_), n) => self.backoff(n - 1),
            (None, n) => self.backoff(n),
        };
        if let (Some(node), true) = (&owner, wait.is_zero()) {
            self.route_to(now, room, node.clone(), false);
            return;
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.node = None;
            r.hint = owner;
            r.retry_at = Some(now + wait);
            self.timers.insert((now + wait, room));
        }
    }

    /// `from` has just won `rooms`: each one this relay routes, and not to
    /// `from`, goes there now (the newest winner is the room's writer; a
    /// node that lost it since answers `Moved`). Rooms this relay does not
    /// route are ignored.
    pub fn handle_serving(&mut self, now: Instant, from: &str, rooms: &[RoomId]) {
        if !self.live.contains(from) {
            return;
        }
        for room in rooms {
            if self.rooms.contains_key(room) && self.node_of(*room) != Some(from) {
                self.route_to(now, *room, from.to_string(), false);
            }
        }
    }

    /// `from` handed an action back undecided; `owner` is who should
    /// decide it.
    pub fn handle_redirect(
        &mut self,
        now: Instant,
        from: &str,
        actor: Actor,
        msg: ActionMsg,
        owner: Option<String>,
    ) {
        self.metrics.redirects.inc();
        let room = msg.room;
        let current = self.node_of(room).map(str::to_string);
        let target = (owner.filter(|o| self.live.contains(o)))
            .into_iter()
            .chain(current)
            .find(|n| n != from);
        match target {
            Some(node) => self.send(&node, UpMsg::Action { actor, msg }),
            None => self.hold(now, room, actor, msg),
        }
    }

    /// Hold an action until its room has a node (within the bounds).
    fn hold(&mut self, now: Instant, room: RoomId, actor: Actor, msg: ActionMsg) {
        let key = (actor.user, msg.id);
        let until = *self
            .until
            .entry(key)
            .or_insert(now + self.settings.held_for);
        let h = self.held.entry(room).or_default();
        let already = (h.items.iter()).any(|x| x.actor.user == key.0 && x.msg.id == key.1);
        if until <= now || h.items.len() >= self.settings.held_per_room {
            self.metrics.held_dropped.inc();
        } else if !already {
            h.items.push_back(Held { actor, msg });
        }
        if h.items.is_empty() {
            self.held.remove(&room);
            return;
        }
        // Waiting rooms get theirs at the re-home; others after a while.
        let waiting = self.rooms.get(&room).is_some_and(|r| r.node.is_none());
        if !waiting && h.flush_at.is_none() {
            let at = now + self.settings.held_retry;
            h.flush_at = Some(at);
            self.timers.insert((at, room));
        }
        self.timers.insert((until, room));
    }

    /// A message the hub wants the origin to have: to its room's node.
    pub fn handle_up(&mut self, now: Instant, msg: UpMsg) {
        let room = match &msg {
            UpMsg::Subscribe { room, .. }
            | UpMsg::Unsubscribe { room }
            | UpMsg::Presence { room, .. } => *room,
            UpMsg::Action { msg: action, .. } => action.room,
            // Each link says hello and pings by itself.
            UpMsg::Hello { .. } | UpMsg::Ping { .. } => return,
        };
        match (&msg, self.rooms.get(&room)) {
            (UpMsg::Unsubscribe { .. }, _) => {
                if let Some(node) = self.rooms.remove(&room).and_then(|r| r.node) {
                    self.send(&node, msg);
                }
            }
            (
                _,
                Some(Route {
                    node: Some(node), ..
                }),
            ) => {
                let node = node.clone();
                self.send(&node, msg);
            }
            (UpMsg::Action { actor, msg: action }, Some(_)) => {
                let (actor, action) = (*actor, action.clone());
                self.hold(now, room, actor, action);
            }
            // Waiting for a node: the re-home states the room afresh.
            (_, Some(_)) => {}
            (_, None) => {
                let Some(node) = self.choice(room) else {
                    return; // no link: the hub states everything when one is up
                };
                if matches!(msg, UpMsg::Subscribe { .. }) {
                    let route = Route {
                        node: Some(node.clone()),
                        ..Route::default()
                    };
                    self.rooms.insert(room, route);
                }
                self.send(&node, msg);
            }
        }
    }

    /// Do what is due at `now`: rooms trying a node again, held actions
    /// sent on or dropped past their bound.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, room)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.retry_room(now, room);
            self.held_due(now, room);
        }
        let keep = self.settings.held_for;
        self.until.retain(|_, t| *t + keep > now);
    }

    fn retry_room(&mut self, now: Instant, room: RoomId) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        if r.node.is_some() || r.retry_at.is_none_or(|t| t > now) {
            return;
        }
        let hint = (r.hint.clone()).filter(|h| self.live.contains(h));
        if let Some(node) = hint.or_else(|| self.choice(room)) {
            self.route_to(now, room, node, false);
        }
    }

    fn held_due(&mut self, now: Instant, room: RoomId) {
        let Some(h) = self.held.get_mut(&room) else {
            return;
        };
        let until = &self.until;
        let before = h.items.len();
        h.items.retain(|x| {
            until
                .get(&(x.actor.user, x.msg.id))
                .is_none_or(|t| *t > now)
        });
        let dropped = before - h.items.len();
        self.metrics.held_dropped.inc_by(dropped as u64);
        if h.items.is_empty() {
            self.held.remove(&room);
            return;
        }
        if h.flush_at.is_none_or(|t| t > now) {
            return;
        }
        h.flush_at = None;
        let target = match self.rooms.get(&room) {
            Some(r) => r.node.clone(),
            None => self.choice(room),
        };
        if let Some(node) = target {
            self.flush_held(now, room, &node);
        }
    }
}
