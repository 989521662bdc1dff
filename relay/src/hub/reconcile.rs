//! What the origin must be told: membership (subscriptions, who is present
//! where) reconciled against what it has been told on the current link,
//! yielded one message at a time as the link takes them; the link going
//! down and coming back; one room moving to another origin node (cluster
//! mode).

use std::time::Instant;

use protocol::message::{ServerMsg, UpMsg};
use protocol::{ActionId, RoomId, UserId};

use super::out::{frame, ClientId, Out};
use super::state::Hub;

impl Hub {
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

    /// The link to the origin is up (a new link: the origin knows nothing of
    /// us): every room is subscribed again from what we hold, every present
    /// user announced, and every waiting action sent again.
    pub fn handle_upstream_up(&mut self, now: Instant) {
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

    /// Cluster mode: `room` now goes to another origin node, which knows
    /// nothing of us. As a new link for that one room: it is subscribed
    /// again from what we hold (the same `since` as after a reconnect), its
    /// present users announced again, and with `requeue` its waiting actions
    /// sent again (the old node died without answering them).
    pub fn handle_rehome(&mut self, now: Instant, room: RoomId, requeue: bool) {
        if !self.upstream {
            return; // the link's return states every room
        }
        let Some(r) = self.rooms.get_mut(&room) else {
            return; // no longer followed
        };
        let history = r.waiting.iter().filter_map(|(_, s)| *s).min();
        r.subscribe = Some(match &r.cache {
            Some(cache) => (Some(cache.seq()), None),
            None => (None, history),
        });
        r.told_subscribed = false;
        r.told_present.clear();
        self.dirty.insert(room);
        if requeue {
            let keys: Vec<(UserId, ActionId)> = (self.pending.iter())
                .filter(|(_, p)| p.msg.room == room)
                .map(|(key, _)| *key)
                .collect();
            for key in keys {
                self.queue_action(now, key);
            }
        }
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
    pub fn handle_upstream_down(&mut self, _now: Instant) {
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
}
