//! The session's inputs from the app ([`Command`]) and from the relay
//! ([`ServerMsg`]): joins, actions and their answers, room events, clock
//! exchanges.

use std::time::{Duration, Instant};

use protocol::message::{ActionMsg, ClientMsg, ServerMsg};
use protocol::{Action, ActionId, Outcome, RoomId, ServerTime};

use super::io::{Command, Event, Transmit};
use super::state::{Session, MAX_IN_FLIGHT};
use crate::error::Error;
use crate::event::{Acked, ClientEvent};
use crate::mirror::{Mirror, Update};
use crate::retry::Path;
use crate::time::later;

impl Session {
    /// A connection reported a lost packet (the driver looks at quinn's
    /// counters now and then): actions sent for a while get every copy.
    pub fn handle_path_loss(&mut self, now: Instant) {
        self.retry.handle_path_loss(now);
    }

    /// The app asks something.
    pub fn handle_command(&mut self, now: Instant, c: Command) {
        if self.closed {
            return;
        }
        if let Command::Close = c {
            return self.close();
        }
        if let Some(e) = &self.failed {
            let e = e.clone();
            match c {
                Command::Join { room } => self.event(Event::Joined {
                    room,
                    result: Err(e),
                }),
                Command::Act { id, .. } => self.answer(
                    id,
                    Err(Error::Unresolved {
                        id,
                        cause: Box::new(e),
                    }),
                ),
                Command::Leave { .. } | Command::Close => {}
            }
            return;
        }
        match c {
            Command::Join { room } => self.join(room),
            Command::Leave { room } => {
                if self.rooms.remove(&room).is_some() {
                    self.send_reliable(ClientMsg::Leave { room });
                    self.event(Event::Forget { room });
                }
            }
            Command::Act {
                id,
                room,
                action,
                deadline,
            } => self.act(now, id, room, action, deadline),
            Command::Close => {}
        }
    }

    fn join(&mut self, room: RoomId) {
        if let Some(mirror) = self.rooms.get(&room) {
            if mirror.state().is_some() {
                self.event(Event::Joined {
                    room,
                    result: Ok(()),
                });
            }
            // Otherwise the joiner waits for the room's first state.
            return;
        }
        self.rooms.insert(room, Mirror::new());
        self.send_reliable(ClientMsg::Join { room, since: None });
    }

    fn act(
        &mut self,
        now: Instant,
        id: ActionId,
        room: RoomId,
        action: Action,
        deadline: Option<Duration>,
    ) {
        if self.retry.len() >= MAX_IN_FLIGHT {
            return self.answer(id, Err(Error::Busy { id }));
        }
        let sent_at = self.origin.at(now).unwrap_or(ServerTime::ZERO);
        let class = action.class();
        let msg = ActionMsg {
            id,
            room,
            sent_at,
            action,
        };
        self.waiters.insert(id, (now, class));
        self.busy(now);
        let deadline = later(now, deadline.unwrap_or(self.settings.action_deadline));
        // It goes out from `handle_timeout`, right after this command, as
        // the window and the pacing allow.
        self.retry.handle_send(now, msg, deadline);
    }

    /// Every waiting action is answered, the connections close.
    fn close(&mut self) {
        self.closed = true;
        if let Some(live) = self.live.take() {
            self.transmit(Transmit::Reliable {
                gen: live.gen,
                msg: ClientMsg::Bye,
            });
            self.close_link(live.gen, "bye", false);
        }
        if let Some(old) = self.leaving.take() {
            self.close_link(old.gen, "bye", false);
        }
        self.drop_standby();
        self.answer_all(Error::Closed);
    }

    /// A message from connection `gen`, by datagram or on a stream (`path`).
    pub fn handle_msg(&mut self, now: Instant, gen: u64, path: Path, m: ServerMsg) {
        if self.closed || self.standby_msg(now, gen, &m) || !self.is_current(gen) {
            return;
        }
        let reliable = path == Path::Stream;
        match m {
            ServerMsg::Events { room, events } => {
                self.busy(now);
                let resumed = reliable && self.resume_waits_for(room);
                self.room_updates(room, |m| m.handle_events(now, events));
                if resumed {
                    self.resume_answered(now, room, false);
                }
            }
            ServerMsg::Snapshot { room, state } => {
                self.stats.snapshots += 1;
                self.room_updates(room, |m| m.handle_snapshot(now, *state));
                if self.resume_waits_for(room) {
                    self.resume_answered(now, room, true);
                }
            }
            ServerMsg::Head { room, seq } => {
                if let Some(m) = self.rooms.get_mut(&room) {
                    m.handle_head(now, seq);
                }
            }
            ServerMsg::Ack { id, outcome } => self.handle_ack(now, id, outcome),
            // Not an outcome: the action waits as told, then goes again.
            ServerMsg::Throttled { id, retry_after_ms } => {
                let wait = Duration::from_millis(retry_after_ms.into());
                if self.retry.handle_throttled(now, id, wait) {
                    self.stats.throttled += 1;
                }
            }
            ServerMsg::Pong { nonce, origin_time } => self.handle_pong(now, nonce, origin_time),
            ServerMsg::JoinFailed { room, reason } => {
                if self.rooms.remove(&room).is_some() {
                    let result = Err(Error::JoinRefused(reason));
                    self.event(Event::Joined { room, result });
                    self.event(Event::Forget { room });
                }
            }
            ServerMsg::Upstream { connected } => {
                self.event(Event::Client(ClientEvent::Upstream { connected }));
            }
            ServerMsg::GoAway { alternatives } => self.handle_goaway(now, &alternatives),
            // Only a standby is told (above).
            ServerMsg::Welcome(_) | ServerMsg::Error { .. } | ServerMsg::RelayGone { .. } => {}
        }
    }

    fn handle_ack(&mut self, now: Instant, id: ActionId, outcome: Outcome) {
        self.retry.handle_ack(now, id);
        if let Some((started, class)) = self.waiters.remove(&id) {
            let latency = now.saturating_duration_since(started);
            if let Some(r) = &mut self.reporter {
                r.handle_ack(class, latency);
            }
            let outcome = outcome.into();
            self.answer(
                id,
                Ok(Acked {
                    id,
                    outcome,
                    latency,
                }),
            );
        }
    }

    fn handle_pong(&mut self, now: Instant, nonce: u64, origin: ServerTime) {
        let Some(&(_, sent)) = self.pings.iter().find(|(n, _)| *n == nonce) else {
            return;
        };
        self.origin.handle_pong(sent, now, origin);
        if let Some(off) = self.origin.offset() {
            self.event(Event::Offset(off));
        }
    }

    fn room_updates(&mut self, room: RoomId, f: impl FnOnce(&mut Mirror) -> Vec<Update>) {
        let Some(mirror) = self.rooms.get_mut(&room) else {
            return;
        };
        let updates = f(mirror);
        if updates.is_empty() {
            return;
        }
        let Some(state) = mirror.state() else { return };
        let state = Box::new(state.clone());
        self.event(Event::Room {
            room,
            state,
            updates,
        });
    }
}
