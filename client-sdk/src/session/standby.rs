//! The warm standby (part of [`Session`]): a second connection, to another
//! relay, opened shortly after the live one and kept open at the cost of a
//! keep-alive every few seconds. It does two things:
//!
//! - it hears first when the live relay dies: the origin notices within its
//!   short backbone idle timeout that the relay's link went silent and tells
//!   the other relays, and the standby's relay tells the standby
//!   ([`ServerMsg::RelayGone`]) because the session said whose standby it is
//!   ([`ClientMsg::Standby`]). So the live connection needs no fast
//!   keep-alives of its own: an idle client costs a relay almost nothing,
//!   and still moves within a second of its relay's death;
//! - it is where the session resumes, with no handshake: on that notice,
//!   when the live connection closes, or on a goaway that allows it.
//!
//! After a move the session opens a new standby (to a relay other than the
//! new live one). A standby that fails to open is tried again after a
//! backoff; without one the session moves as before (connect, resume), when
//! its live connection's idle timeout says so.

use std::time::Instant;

use protocol::message::{ClientMsg, ErrorCode, ServerMsg};

use super::io::{Event, Link, Transmit};
use super::state::Session;
use super::warm::{Standby, STANDBY_AFTER};
use crate::error::Error;
use crate::event::ClientEvent;

impl Session {
    /// Open a standby if one is due (only with a live connection and no
    /// move in progress: the relay to avoid is the live one's).
    pub(super) fn standby_due(&mut self, now: Instant) {
        let sb = &self.standby;
        let due = sb.open_at.is_some_and(|t| t <= now) && sb.link.is_none();
        if !due || sb.connecting.is_some() || self.resume.is_some() {
            return;
        }
        let Some(live) = &self.live else { return };
        let relays: Vec<_> = (self.ranking.iter())
            .filter(|a| **a != live.relay.addr)
            .copied()
            .collect();
        self.standby.open_at = None;
        if relays.is_empty() {
            return;
        }
        self.gen += 1;
        tracing::debug!(gen = self.gen, "opening a standby");
        self.standby.connecting = Some(self.gen);
        self.transmit(Transmit::ConnectStandby {
            gen: self.gen,
            relays,
            token: self.tokens.token.clone(),
        });
    }

    /// The standby attempt ordered last ([`Transmit::ConnectStandby`])
    /// ended: a connection with the session open on it, or why not.
    pub fn handle_standby_connected(&mut self, now: Instant, r: Result<Link, Error>) {
        let wanted = r.as_ref().map_or(0, |l| l.gen);
        let ours = self.standby.connecting.is_some_and(|g| g == wanted) || r.is_err();
        match r {
            Ok(link) => {
                let live = self
                    .live
                    .as_ref()
                    .map(|l| (l.relay.addr, l.relay.name.clone()));
                let usable = match &live {
                    Some((addr, _)) => ours && *addr != link.relay.addr,
                    None => false,
                };
                if self.closed || !usable {
                    tracing::debug!(relay = %link.relay.name, ours, "standby not needed; closing it");
                    self.close_link(link.gen, "not needed", false);
                    if self.standby.connecting == Some(link.gen) {
                        self.standby.connecting = None;
                        self.standby.plan(now + STANDBY_AFTER);
                    }
                    return;
                }
                self.standby.connecting = None;
                self.standby.failures = 0;
                tracing::debug!(relay = %link.relay.name, "standby open");
                if let Some((_, primary)) = live {
                    self.transmit(Transmit::Reliable {
                        gen: link.gen,
                        msg: ClientMsg::Standby { primary },
                    });
                }
                self.event(Event::Standby(Some(link.relay.clone())));
                self.standby.link = Some(link);
            }
            Err(e) => {
                self.standby.connecting = None;
                self.standby.failures += 1;
                let wait = Standby::backoff(self.standby.failures);
                tracing::debug!(error = %e, ?wait, "no standby relay reachable; trying again later");
                self.standby.plan(now + wait);
            }
        }
    }

    /// A message on the standby connection `gen` (`false`: `gen` is not
    /// the standby). Only [`ServerMsg::RelayGone`] for the live relay means
    /// anything there: the session moves onto the standby at once.
    pub(super) fn standby_msg(&mut self, now: Instant, gen: u64, m: &ServerMsg) -> bool {
        if self.standby.link.as_ref().is_none_or(|l| l.gen != gen) {
            return false;
        }
        let ServerMsg::RelayGone { relay } = m else {
            return true;
        };
        let lost = self.live.as_ref().is_some_and(|l| l.relay.name == *relay);
        if lost {
            tracing::info!(%relay, "the origin lost our relay; resuming on the standby");
            if let Some(live) = self.live.take() {
                self.event(Event::Client(ClientEvent::Moving {
                    from: live.relay.clone(),
                    goaway: false,
                }));
                self.close_link(live.gen, "relay lost", false);
            }
            self.resume_on_standby(now);
        }
        true
    }

    /// Connection `gen` closed: if it was the standby, plan another
    /// (`false`: it was not).
    pub(super) fn standby_closed(&mut self, now: Instant, gen: u64) -> bool {
        if self.standby.link.as_ref().is_none_or(|l| l.gen != gen) {
            return false;
        }
        self.standby.link = None;
        self.close_link(gen, "lost", false);
        self.event(Event::Standby(None));
        self.standby
            .plan(now + Standby::backoff(self.standby.failures.max(1)));
        true
    }

    /// Resume on the standby connection, if there is one (the live one is
    /// gone or being left already): `false` without one.
    pub(super) fn resume_on_standby(&mut self, now: Instant) -> bool {
        let Some(link) = self.standby.link.take() else {
            return false;
        };
        self.event(Event::Standby(None));
        self.start_resume(now);
        self.resume_on(now, link);
        true
    }

    /// The live connection changed (a move ended): the standby says whose
    /// standby it is now; one on the new live relay itself is no standby
    /// and goes; without one, one is planned.
    pub(super) fn standby_follow(&mut self, now: Instant) {
        let Some(live) = &self.live else { return };
        let (addr, primary) = (live.relay.addr, live.relay.name.clone());
        match self.standby.link.as_ref().map(|l| (l.gen, l.relay.addr)) {
            Some((gen, at)) if at == addr => {
                self.standby.link = None;
                self.close_link(gen, "not needed", false);
                self.event(Event::Standby(None));
                self.standby.plan(now + STANDBY_AFTER);
            }
            Some((gen, _)) => self.transmit(Transmit::Reliable {
                gen,
                msg: ClientMsg::Standby { primary },
            }),
            None => self.standby.plan(now + STANDBY_AFTER),
        }
    }

    /// Close the standby for good (the session ends).
    pub(super) fn drop_standby(&mut self) {
        self.standby.enabled = false;
        self.standby.open_at = None;
        if let Some(link) = self.standby.link.take() {
            self.transmit(Transmit::Close {
                gen: link.gen,
                code: ErrorCode::Normal,
                reason: "bye",
                finish: false,
            });
        }
    }

    /// The relay the standby connection is open to, if one is.
    pub fn standby_relay(&self) -> Option<&crate::event::RelayInfo> {
        self.standby.link.as_ref().map(|l| &l.relay)
    }
}
