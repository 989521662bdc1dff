//! Actions waiting for the origin: bounded per client and per relay, sent
//! up as the link takes them, sent again when their ack is overdue, and
//! answered with the origin's outcome on the session's current connection.

use std::time::Instant;

use protocol::message::{ActionMsg, Actor, ServerMsg};
use protocol::{ActionId, Outcome, UserId};

use crate::metrics::{class_name, ClassLabel};

use super::out::{answer, frame, ClientId, Out};
use super::state::{Hub, Pending, THROTTLE_FULL_MS};

impl Hub {
    pub(super) fn queue_action(&mut self, now: Instant, key: (UserId, ActionId)) {
        if !self.upstream {
            return;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            p.sent_at = Some(now);
            let due = now + self.settings.resend_after;
            self.resend_at = Some(self.resend_at.map_or(due, |at| at.min(due)));
            if !p.queued {
                p.queued = true;
                self.actions.push_back(key);
            }
        }
    }

    /// A client's action, with the actor its token proves. Past the bounds
    /// on waiting actions (per client, per relay) it is answered `Throttled`.
    pub fn handle_action(
        &mut self,
        now: Instant,
        client: ClientId,
        actor: Actor,
        msg: ActionMsg,
        via_stream: bool,
    ) {
        let key = (actor.user, msg.id);
        if let Some(p) = self.pending.get_mut(&key) {
            // A copy (a datagram copy, or the stream fallback): already on its
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

    pub(super) fn take_pending(&mut self, key: (UserId, ActionId)) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        if let Some(c) = self.clients.get_mut(&p.client) {
            c.pending.remove(&key);
        }
        Some(p)
    }

    /// The origin's outcome of an action: to the session's current
    /// connection here, the way the action came.
    pub(super) fn handle_ack(
        &mut self,
        now: Instant,
        user: UserId,
        id: ActionId,
        outcome: Outcome,
    ) {
        let Some(p) = self.take_pending((user, id)) else {
            return;
        };
        let class = class_name(p.msg.action.class());
        let waited = now.saturating_duration_since(p.arrived).as_secs_f64();
        (self.metrics.action_ack.get_or_create(&ClassLabel { class })).observe(waited);
        // The session may have moved to a newer connection here.
        let client = (self.sessions.get(&(user, id.session)).copied()).unwrap_or(p.client);
        let ack = ServerMsg::Ack { id, outcome };
        for out in answer(&ack, p.via_stream) {
            self.send_to(client, out);
        }
    }

    /// The origin's per-user backstop: nothing was decided, so the action
    /// stops waiting here and its sender retries later.
    pub(super) fn handle_throttled(&mut self, user: UserId, id: ActionId, retry_after_ms: u32) {
        let Some(p) = self.take_pending((user, id)) else {
            return;
        };
        let client = (self.sessions.get(&(user, id.session)).copied()).unwrap_or(p.client);
        let msg = ServerMsg::Throttled { id, retry_after_ms };
        self.send_to(client, Out::Reliable(frame(&msg)));
    }

    /// Send again every action whose ack is overdue.
    pub(super) fn resend_overdue(&mut self, now: Instant) {
        let overdue: Vec<(UserId, ActionId)> = (self.pending.iter())
            .filter(|(_, p)| {
                p.sent_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.settings.resend_after)
            })
            .map(|(key, _)| *key)
            .collect();
        self.resend_at = None;
        for key in overdue {
            self.queue_action(now, key);
        }
        // Those not overdue yet: the earliest of them.
        let after = self.settings.resend_after;
        let next = (self.pending.values())
            .map(|p| p.sent_at.map_or(now, |t| t + after))
            .min();
        self.resend_at = match (self.resend_at, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}
