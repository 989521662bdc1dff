//! Cluster mode: rooms handed between nodes for PK battles (see
//! [`crate::cluster::pairs`]): a node asks a room's holder to release it
//! (a core NATS request to `<subject_prefix>.ctl.node.<holder>.release`,
//! answered once released), and a node that let a room go tells its new
//! owner to take it (`...ctl.node.<owner>.take`).

use std::time::Instant;

use protocol::RoomId;
use serde::{Deserialize, Serialize};

use super::cluster::Driver;
use crate::cluster::pairs::Step;

/// A release request's body: `room` is pinned to `to`; release it.
#[derive(Serialize, Deserialize)]
pub(super) struct Release {
    pub room: u64,
    pub to: u64,
}

/// The subject a node answers release requests on.
pub(super) fn release_subject(ctl: &str, node: &str) -> String {
    format!("{ctl}.node.{node}.release")
}

/// Where a node is told to take a room handed over to it (body: the room
/// id): the placement gives it the room and its holder just let go.
pub(super) fn take_subject(ctl: &str, node: &str) -> String {
    format!("{ctl}.node.{node}.take")
}

impl Driver {
    /// Tell `owner` to take `room` now, which this node just let go (not
    /// at the next request for it; relays follow the `Moved` too).
    pub(super) async fn tell_to_take(&mut self, room: RoomId, owner: &str) {
        let subject = take_subject(&self.ctl, owner);
        let body = room.0.to_string();
        if let Err(e) = self.nats.publish(subject, body.into()).await {
            tracing::warn!(%room, error = %e, "cannot hand a room over");
        }
    }

    /// Another node pinned a room held here to its partner and asks for it:
    /// release it, then answer. An append of it still in flight either
    /// lands before the next holder's fence (which then reads it) or is
    /// refused; what waited for it is handed back, and a resend is answered
    /// by the id memory the next holder rebuilds from the log.
    pub(super) async fn release_asked(&mut self, msg: async_nats::Message) {
        if msg.subject.as_str() == take_subject(&self.ctl, &self.name) {
            let room = std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|s| s.parse().ok());
            if let Some(room) = room.map(RoomId) {
                self.refresh_policy(Instant::now());
                if self.elsewhere(room).is_none() && !self.held.contains(&room) {
                    tracing::info!(%room, "taking a room handed over");
                    self.keeper.want(Instant::now(), room);
                }
            }
            return;
        }
        let mut answer = "kept";
        if let Ok(r) = serde_json::from_slice::<Release>(&msg.payload) {
            let (room, to) = (RoomId(r.room), RoomId(r.to));
            self.pairs.handle_pinned(room, to);
            self.refresh_policy(Instant::now());
            if self.elsewhere(room).is_some() {
                tracing::info!(%room, partner = %to, "releasing a room for a battle");
                self.keeper.release(room);
                let changes = self.keeper.step(Instant::now()).await;
                self.apply(changes).await;
                answer = "released";
            } else {
                // Its view of the nodes still gives the pair to this node
                // (nodes starting together): the asker waits for its claim.
                tracing::info!(%room, partner = %to, "asked to release a room placement still gives here");
            }
        }
        if let Some(reply) = msg.reply {
            let _ = self.nats.publish(reply, answer.into()).await;
        }
    }

    /// Carry out [`Pairs`]'s steps for an invitation: the pin and the
    /// fetch run on a task of their own, which says when it is done.
    pub(super) fn fetch(&mut self, steps: Vec<Step>) {
        let fetched: Vec<RoomId> = (steps.iter())
            .filter_map(|s| match s {
                Step::Fetch { room, .. } => Some(*room),
                _ => None,
            })
            .collect();
        for step in steps {
            let placement = self.keeper.placement().clone();
            let (room, to) = match step {
                Step::Fetch { room, to } => (room, to),
                // Both rooms held here: only the pin, for whoever takes
                // them over.
                Step::Pin { room, to } if !fetched.contains(&room) => {
                    self.fetches.spawn(async move {
                        if let Err(e) = placement.pin(room, to).await {
                            tracing::warn!(%room, error = %e, "cannot pin");
                        }
                    });
                    continue;
                }
                Step::Pin { .. } | Step::Unpin { .. } => continue,
            };
            let (nats, ctl, me) = (self.nats.clone(), self.ctl.clone(), self.name.clone());
            let (done, wait) = (self.fetched_tx.clone(), self.request_timeout);
            self.fetches.spawn(async move {
                if let Err(e) = placement.pin(room, to).await {
                    tracing::warn!(%room, error = %e, "cannot pin");
                }
                if let Some(holder) = placement.holder(room).await.filter(|h| *h != me) {
                    let body = serde_json::to_vec(&Release {
                        room: room.0,
                        to: to.0,
                    })
                    .unwrap_or_default();
                    let ask = nats.request(release_subject(&ctl, &holder), body.into());
                    match tokio::time::timeout(wait, ask).await {
                        Ok(Ok(m)) if &m.payload[..] == b"released" => {
                            tracing::info!(%room, %holder, "room released to us")
                        }
                        Ok(Ok(_)) => {
                            tracing::info!(%room, %holder, "the holder kept the room for now")
                        }
                        _ => tracing::warn!(%room, %holder, "no answer to a release request"),
                    }
                }
                let _ = done.send(room).await;
            });
        }
        while self.fetches.try_join_next().is_some() {}
    }
}
