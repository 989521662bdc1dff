//! Moving between relays, and tokens (part of [`Session`]).
//!
//! Failover: when the connection dies (idle timeout, about a second) or the
//! relay says goaway, the session connects to the next relay — for a
//! goaway, before leaving the old one (make before break) — and resumes:
//! the same session, each room's last seq, and every unacknowledged action
//! again. The app sees one `Reconnected` event saying whether continuity
//! was gap-free or rebuilt. When every relay fails, it tries again after a
//! backoff with jitter.
//!
//! Tokens: with a provider, the session orders a fresh token when
//! [`crate::token::renew_after`] says, hands it to the relay (`Renew`) and
//! connects with it from then on; a connection closed for `TokenExpired`
//! fetches one and resumes the session, like any other move. A token
//! refused as bad ends the session ([`ClientEvent::Failed`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use protocol::message::{ClientMsg, ErrorCode};
use protocol::{RoomId, Seq};

use super::io::{Event, Link, Transmit};
use super::state::{Resume, Session};
use crate::error::Error;
use crate::event::{ClientEvent, Continuity};
use crate::time::{later, OriginEstimate};
use crate::token as tokens;

/// Expiry refusals in a row, each after a fresh token, before giving up.
const MAX_EXPIRED_REFUSALS: u32 = 3;

impl Session {
    /// Plan the next token fetch from the current token's expiry (read
    /// without the secret: only to schedule).
    pub(super) fn schedule_renewal(&mut self, now: Instant) {
        if !self.settings.provider {
            return;
        }
        let Ok(claims) = net::token::unverified_claims(&self.tokens.token) else {
            tracing::warn!("the token's expiry cannot be read; it will not be renewed ahead");
            self.tokens.renew_at = None;
            return;
        };
        let remaining =
            Duration::from_secs(claims.expires).saturating_sub(self.tokens.unix_at(now));
        self.tokens.renew_at = Some(later(now, tokens::renew_after(remaining)));
    }

    /// Ask the provider for a fresh token (unless a fetch is under way).
    fn start_fetch(&mut self) {
        if self.tokens.fetching || !self.settings.provider {
            return;
        }
        self.tokens.renew_at = None;
        self.tokens.fetching = true;
        self.transmit(Transmit::FetchToken);
    }

    /// The token provider answered ([`Transmit::FetchToken`]): a fresh
    /// token, or why not (tried again after a backoff).
    pub fn handle_token(&mut self, now: Instant, r: Result<Vec<u8>, String>) {
        if self.closed || !self.tokens.fetching {
            return;
        }
        self.tokens.fetching = false;
        match r {
            Ok(token) => {
                self.tokens.failures = 0;
                self.tokens.token = token.clone();
                self.schedule_renewal(now);
                if self.tokens.reconnect_after_fetch {
                    self.tokens.reconnect_after_fetch = false;
                    if self.live.is_none() && !self.connecting {
                        self.begin_move(now, None);
                    }
                } else if self.live.is_some() {
                    self.stats.renewals += 1;
                    self.send_reliable(ClientMsg::Renew { token });
                }
            }
            Err(e) => {
                self.tokens.failures += 1;
                let failures = self.tokens.failures;
                tracing::warn!(error = %e, failures, "token provider failed; retrying");
                self.tokens.renew_at = Some(now + tokens::fetch_retry(failures));
            }
        }
    }

    /// The relay said the token expired (at connect, or by closing the
    /// connection): with a provider, fetch a fresh one and connect again
    /// (the same session); without one, or too often in a row, give up.
    fn handle_expired(&mut self, e: Error) {
        self.tokens.expired_refusals += 1;
        if !self.settings.provider || self.tokens.expired_refusals > MAX_EXPIRED_REFUSALS {
            return self.fail(e);
        }
        tracing::info!("token expired; fetching a fresh one to resume");
        self.tokens.reconnect_after_fetch = true;
        self.start_fetch();
    }

    /// Timers of moves and tokens: a new round of connection attempts, a
    /// token fetch.
    pub(super) fn moves_due(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) && self.live.is_none() && !self.connecting {
            self.retry_at = None;
            self.try_next(None);
        }
        if self.tokens.renew_at.is_some_and(|t| t <= now) {
            self.start_fetch();
        }
    }

    /// Connection `gen` closed (`reason`, with the relay's close `code` if
    /// it gave one).
    pub fn handle_closed(
        &mut self,
        now: Instant,
        gen: u64,
        reason: String,
        code: Option<ErrorCode>,
    ) {
        if self.closed {
            return;
        }
        if self.leaving.as_ref().is_some_and(|l| l.gen == gen) {
            self.leaving = None;
            self.close_link(gen, "lost", false);
            return;
        }
        if self.standby_closed(now, gen) || self.live.as_ref().is_none_or(|l| l.gen != gen) {
            return;
        }
        tracing::info!(%reason, "connection to the relay lost");
        let Some(live) = self.live.take() else { return };
        self.event(Event::Client(ClientEvent::Moving {
            from: live.relay.clone(),
            goaway: false,
        }));
        self.close_link(gen, "lost", false);
        match code {
            Some(code @ ErrorCode::BadToken) => self.fail(Error::Refused { code, reason }),
            Some(code @ ErrorCode::TokenExpired) => {
                // Resume like any move, once a fresh token came.
                self.start_resume(now);
                self.handle_expired(Error::Refused { code, reason });
            }
            // The standby is resumed on at once (no handshake); without
            // one, connect to the next relay.
            _ => {
                if !self.resume_on_standby(now) {
                    self.begin_move(now, Some(live.relay.addr));
                }
            }
        }
    }

    /// The relay asks us to move, to one of `alternatives` preferably.
    pub(super) fn handle_goaway(&mut self, now: Instant, alternatives: &[String]) {
        tracing::info!(?alternatives, "relay asked us to move");
        let Some(from) = self.live.as_ref().map(|l| l.relay.clone()) else {
            return;
        };
        self.event(Event::Client(ClientEvent::Moving {
            from: from.clone(),
            goaway: true,
        }));
        self.prefer = alternatives.iter().filter_map(|a| a.parse().ok()).collect();
        // Make before break: keep the old connection until the new one is
        // up. The standby is up already: taken if the relay allows it.
        if !self.connecting && self.leaving.is_none() {
            self.leaving = self.live.take();
            let standby_ok = (self.standby.link.as_ref())
                .is_some_and(|s| self.prefer.is_empty() || self.prefer.contains(&s.relay.addr));
            if !(standby_ok && self.resume_on_standby(now)) {
                self.begin_move(now, Some(from.addr));
            }
        }
    }

    pub(super) fn start_resume(&mut self, now: Instant) {
        if self.resume.is_none() {
            self.resume = Some(Resume {
                started: now,
                waiting: BTreeSet::new(),
                rebuilt: false,
            });
        }
    }

    /// Start moving to another relay (not `avoid`, unless it is the only one).
    fn begin_move(&mut self, now: Instant, avoid: Option<SocketAddr>) {
        self.start_resume(now);
        self.attempts = 0;
        self.try_next(avoid);
    }

    /// One round of connection attempts: preferred relays, then the
    /// ranking, the relay to avoid last.
    fn try_next(&mut self, avoid: Option<SocketAddr>) {
        let mut order: Vec<SocketAddr> = self.prefer.clone();
        for a in &self.ranking {
            if !order.contains(a) {
                order.push(*a);
            }
        }
        // The failed relay goes last: it may come back, but try others first.
        if let Some(bad) = avoid {
            order.retain(|a| *a != bad);
            order.push(bad);
        }
        self.gen += 1;
        self.connecting = true;
        self.transmit(Transmit::Connect {
            gen: self.gen,
            relays: order,
            token: self.tokens.token.clone(),
        });
    }

    /// The connection attempt ordered last ([`Transmit::Connect`]) ended:
    /// a connection with the session open on it, or why not.
    pub fn handle_connected(&mut self, now: Instant, r: Result<Link, Error>) {
        if self.closed {
            return;
        }
        self.connecting = false;
        match r {
            Ok(link) => self.resume_on(now, link),
            Err(
                e @ Error::Refused {
                    code: ErrorCode::TokenExpired,
                    ..
                },
            ) => self.handle_expired(e),
            Err(e) if e.refused_everywhere() => self.fail(e),
            Err(e) => {
                self.attempts += 1;
                // Every relay failed: wait (backoff with jitter) and try again.
                let base = 100u64 << self.attempts.min(5);
                let jitter =
                    (self.id.0 ^ u64::from(self.attempts).wrapping_mul(0x9e37_79b9)) % base;
                tracing::warn!(error = %e, attempt = self.attempts, "no relay reachable; retrying");
                self.retry_at = Some(now + Duration::from_millis(base + jitter));
            }
        }
    }

    /// On a new connection: rejoin every room from its seq, send what was
    /// unanswered again, say goodbye to the relay being left.
    pub(super) fn resume_on(&mut self, now: Instant, link: Link) {
        self.stats.moves += 1;
        self.attempts = 0;
        self.prefer.clear();
        tracing::info!(relay = %link.relay.name, addr = %link.relay.addr, "moved to another relay");
        self.event(Event::Relay(link.relay.clone()));
        self.live = Some(link);
        // A new relay means a new path: new clock samples (local time
        // still counted from the session's start), the first one at once.
        self.origin = OriginEstimate::new(self.origin.base());
        self.next_ping = now;
        let rooms: Vec<(RoomId, Option<Seq>)> = (self.rooms.iter())
            .map(|(id, m)| (*id, m.state().map(|st| st.seq)))
            .collect();
        if let Some(r) = &mut self.resume {
            r.waiting = rooms.iter().map(|(id, _)| *id).collect();
        }
        for (room, since) in rooms {
            self.send_reliable(ClientMsg::Join { room, since });
        }
        // What was on the wire goes again (on the stream) from
        // `handle_timeout`, within the window.
        self.retry.handle_reconnect(now);
        self.tokens.expired_refusals = 0;
        if let Some(old) = self.leaving.take() {
            self.transmit(Transmit::Reliable {
                gen: old.gen,
                msg: ClientMsg::Bye,
            });
            // Let the bye reach the relay before closing.
            self.close_link(old.gen, "moved", true);
        }
        self.standby_follow(now);
        if self.resume.as_ref().is_some_and(|r| r.waiting.is_empty()) {
            self.resume_answered(now, RoomId(u64::MAX), false);
        }
    }

    pub(super) fn resume_waits_for(&self, room: RoomId) -> bool {
        (self.resume.as_ref()).is_some_and(|r| r.waiting.contains(&room))
    }

    /// `room` answered its resume join (with a `snapshot`: rebuilt); the
    /// last one ends the move.
    pub(super) fn resume_answered(&mut self, now: Instant, room: RoomId, snapshot: bool) {
        let Some(r) = &mut self.resume else { return };
        r.waiting.remove(&room);
        r.rebuilt |= snapshot;
        if !r.waiting.is_empty() {
            return;
        }
        let continuity = match r.rebuilt {
            true => Continuity::Rebuilt,
            false => Continuity::GapFree,
        };
        let took = now.saturating_duration_since(r.started);
        self.resume = None;
        if let Some(live) = &self.live {
            let relay = live.relay.clone();
            self.event(Event::Client(ClientEvent::Reconnected {
                relay,
                continuity,
                took,
            }));
        }
    }

    /// The session cannot go on (the token was refused): every waiting
    /// action and join fails with the reason, the app hears it once, and
    /// nothing reconnects. New calls fail at once.
    pub(super) fn fail(&mut self, e: Error) {
        tracing::warn!(error = %e, "the session was refused; giving up");
        self.answer_all(e.clone());
        self.retry.clear();
        if self.tokens.fetching {
            self.transmit(Transmit::StopFetching);
        }
        self.tokens.fetching = false;
        self.tokens.renew_at = None;
        self.tokens.reconnect_after_fetch = false;
        let rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
        for room in rooms {
            let result = Err(e.clone());
            self.event(Event::Joined { room, result });
        }
        self.retry_at = None;
        if self.connecting {
            self.transmit(Transmit::StopConnecting);
        }
        self.connecting = false;
        self.resume = None;
        self.drop_standby();
        self.failed = Some(e.clone());
        self.event(Event::Client(ClientEvent::Failed { error: e }));
    }
}
