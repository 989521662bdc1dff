//! What falls due: action deadlines and sends, gap repairs and rejoins,
//! clock exchanges and reports (the connection and token timers are in
//! `moves.rs`).

use std::time::Instant;

use protocol::message::ClientMsg;
use protocol::{RoomId, Seq};

use super::state::{Session, PINGS_KEPT, PING_FAST, PING_FAST_SAMPLES, PING_QUIET, PING_SLOW};
use crate::error::Error;
use crate::retry::{Expiry, Path};

impl Session {
    /// What fell due by `now`: connection retries, token fetches, action
    /// deadlines and sends, gap repairs, rejoins, pings and reports. The
    /// driver calls it after every input too.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.moves_due(now);
        self.standby_due(now);
        self.expire_actions(now);
        let mut datagrams = self.send_actions(now);
        self.repair_rooms(now);
        let pinged = now >= self.next_ping && self.live.is_some();
        if pinged {
            datagrams.push(self.ping(now));
        }
        // A quiet session's report rides with its ping (one packet).
        if self.live.is_some() && (pinged || !self.quiet_at(now)) {
            let report = (self.reporter.as_mut())
                .and_then(|r| r.poll_report(now, self.origin.offset(), self.origin.rtt()));
            if let Some(report) = report {
                datagrams.push(ClientMsg::Report(report));
            }
        }
        // The stream-only baseline sends everything reliably.
        let path = match self.settings.datagrams {
            true => Path::Datagram,
            false => Path::Stream,
        };
        for m in datagrams {
            self.send(path, m);
        }
    }

    fn expire_actions(&mut self, now: Instant) {
        for (id, why) in self.retry.poll_expired(now) {
            if self.waiters.remove(&id).is_some() {
                tracing::debug!(%id, ?why, "action past its deadline");
                self.answer(
                    id,
                    Err(match why {
                        Expiry::Throttled => Error::Throttled { id },
                        Expiry::NoAnswer => Error::TimedOut { id },
                    }),
                );
            }
        }
    }

    /// Actions due: those for the stream go now, the datagrams are returned
    /// (to share packets with the ping and the report).
    fn send_actions(&mut self, now: Instant) -> Vec<ClientMsg> {
        // Nothing is sent without a connection (a reconnect resends).
        if self.live.is_none() {
            return Vec::new();
        }
        let mut datagrams = Vec::new();
        for t in self.retry.poll_transmit(now) {
            match t.path {
                Path::Datagram => datagrams.push(ClientMsg::Action(t.msg)),
                Path::Stream => {
                    self.stats.fallbacks += u64::from(t.fallback);
                    self.send_reliable(ClientMsg::Action(t.msg));
                }
            }
        }
        datagrams
    }

    /// Rejoin rooms whose mirror broke, ask for the events of lasting gaps.
    fn repair_rooms(&mut self, now: Instant) {
        let (tol, retry) = (self.reorder_tolerance(), self.resync_retry());
        let resyncs: Vec<(RoomId, Seq)> = (self.rooms.iter_mut())
            .filter_map(|(id, m)| m.poll_resync(now, tol, retry).map(|s| (*id, s)))
            .collect();
        // A mirror that met an event it cannot apply follows the room afresh.
        let broken: Vec<RoomId> = (self.rooms.iter())
            .filter(|(_, m)| m.is_broken())
            .map(|(id, _)| *id)
            .filter(|id| self.rejoin_at.get(id).is_none_or(|t| now >= *t))
            .collect();
        for room in broken {
            self.rejoin_at.insert(room, now + retry);
            self.send_reliable(ClientMsg::Join { room, since: None });
        }
        for (room, from) in resyncs {
            self.stats.resyncs += 1;
            self.send_reliable(ClientMsg::Resync { room, from });
        }
    }

    /// The session is busy at `now` (an action, a room event): a quiet
    /// session's next ping comes no later than a busy one's would.
    pub(super) fn busy(&mut self, now: Instant) {
        self.busy_at = now;
        self.next_ping = self.next_ping.min(now + PING_SLOW);
    }

    fn ping(&mut self, now: Instant) -> ClientMsg {
        self.nonce += 1;
        self.pings.push_back((self.nonce, now));
        if self.pings.len() > PINGS_KEPT {
            self.pings.pop_front();
        }
        // Converge fast, then keep fresh; seldom while the session is quiet.
        let every = match (
            self.origin.exchanges() < PING_FAST_SAMPLES,
            self.quiet_at(now),
        ) {
            (true, _) => PING_FAST,
            (false, false) => PING_SLOW,
            (false, true) => PING_QUIET,
        };
        self.next_ping = now + every;
        ClientMsg::Ping { nonce: self.nonce }
    }
}
