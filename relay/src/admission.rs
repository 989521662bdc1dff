//! Admission: who may connect, how often a user may act, how much a
//! connection may ask for. Pure: every input takes `now`, nothing here does
//! IO; the connection tasks ask and act on the verdict.
//!
//! What it bounds, and why each bound exists (every client holds a valid
//! token for all we know):
//! - **connections**: in total, per source address, and still unauthenticated
//!   (handshaking or not yet past hello); past a handshake rate, new peers
//!   must prove their address first (QUIC Retry), so a spoofed flood costs
//!   one stateless packet each;
//! - **per user, across all of its connections on this relay**: live
//!   connections (sessions), actions per second and messages per second (a
//!   user cannot multiply its rate by opening connections). An action over
//!   the rate is answered `Throttled` with when to retry; a flood of
//!   messages closes the connection;
//! - **per connection**: joins, resyncs and snapshot requests share one
//!   request budget, so a tiny message cannot make the relay encode and send
//!   large ones at will.
//!
//! - **per connection, in rooms it does not follow**: a viewer acts in the
//!   rooms it joined (the SDK's `Room` handle comes from a join); an action
//!   in any other room spends a small budget of its own ([`Following`]), so
//!   gifts sprayed over unknown room ids are answered `Throttled` here
//!   instead of each costing the origin a lookup and a log record;
//! - **handshakes, relay-wide**: a token bucket bounds the full handshakes
//!   begun per second (each costs key exchange and a signature), so a
//!   hundred peers dialing at once are spread out instead of taking the
//!   relay's cores from the clients it already serves; past it a peer is
//!   refused statelessly and dials again;
//! - **per address, after abuse**: a peer closed for abuse (malformed or
//!   oversized input, a flood, a bad token, no hello, over a limit)
//!   `strikes` times within `penalty_ms` is refused before its handshake
//!   for `penalty_ms`, so an attacker that reconnects at once costs one
//!   stateless packet per attempt instead of a handshake. One honest
//!   mistake (a hello lost on a bad path) is not enough.
//!
//! A user's record outlives its last connection by the time its buckets take
//! to refill, so reconnecting does not reset a rate; records are then
//! collected, so memory follows live users (about 150 bytes each).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use protocol::message::ErrorCode;
use protocol::room::Reason;
use protocol::UserId;
use serde::{Deserialize, Serialize};

mod following;

pub use following::Following;

/// The limits, as configured (the relay's `[limits]` table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Client connections a relay holds at once.
    pub max_connections: usize,
    /// Connections from one source address (NAT gateways share one; the
    /// testbed's thousands of clients on loopback raise it).
    pub max_per_addr: usize,
    /// Connections still handshaking or not yet past hello.
    pub max_unauthenticated: usize,
    /// New connections per second past which a peer must validate its
    /// address first (QUIC Retry: one extra round trip, no state kept).
    pub retry_above_per_sec: u32,
    /// How long a connection has to finish its handshake and say hello, ms.
    pub hello_timeout_ms: u64,
    /// Full handshakes the relay begins per second, from all peers
    /// together; past it (and a burst of `handshake_burst`) a peer is
    /// refused before its handshake and dials again. It bounds what
    /// handshakes can take of the relay's CPU (about 0.3 ms each), so raise
    /// it with the cores: a relay taking over 10,000 clients from a failed
    /// one absorbs them in 10,000 / this many seconds.
    pub handshakes_per_sec: u32,
    /// ... and in a burst.
    pub handshake_burst: u32,
    /// Live connections (sessions) of one user on this relay.
    pub sessions_per_user: usize,
    /// New sessions one user may open per second (a burst of twice
    /// `sessions_per_user`): reconnecting at once is fine, a churn of fresh
    /// sessions (each a full handshake) is not.
    pub sessions_per_sec: u32,
    /// Actions a user may send per second, over all its connections.
    pub actions_per_sec: u32,
    /// Actions a user may send in a burst.
    pub action_burst: u32,
    /// Messages of any kind a user may send per second before its
    /// connection is closed (`Flood`).
    pub messages_per_sec: u32,
    /// Actions one connection may send per second in rooms it does not
    /// follow (it never joined them, or left them); past it they are
    /// answered `Throttled`. Honest clients act in rooms they joined; the
    /// budget covers an action racing its room's join after a reconnect.
    pub unfollowed_actions_per_sec: u32,
    /// ... and in a burst.
    pub unfollowed_action_burst: u32,
    /// Joins, resyncs and snapshot requests one connection may make per
    /// second (shared budget).
    pub requests_per_sec: u32,
    /// ... and in a burst (enough for a resuming client to rejoin
    /// `rooms_per_connection` rooms at once).
    pub request_burst: u32,
    /// Rooms one connection may follow at once.
    pub rooms_per_connection: usize,
    /// Actions of one connection waiting for the origin.
    pub pending_per_connection: usize,
    /// Actions waiting for the origin on the whole relay.
    pub pending_total: usize,
    /// Bytes queued for one client between the hub and its connection
    /// (beyond the scheduler's own budget) before it is cut off as too slow.
    pub queue_bytes: usize,
    /// How long a client has to take a snapshot before it is cut off, ms.
    pub snapshot_timeout_ms: u64,
    /// Abusive closes of one address within `penalty_ms` that put it in the
    /// penalty box (0: never).
    pub strikes: u32,
    /// How long an address stays in the penalty box, and the window its
    /// strikes are counted in, ms.
    pub penalty_ms: u64,
    /// Addresses tracked for strikes at once (about 40 bytes each).
    pub penalty_addrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_per_addr: 512,
            max_unauthenticated: 256,
            retry_above_per_sec: 500,
            hello_timeout_ms: 2_000,
            handshakes_per_sec: 200,
            handshake_burst: 20,
            sessions_per_user: 4,
            sessions_per_sec: 1,
            actions_per_sec: 50,
            action_burst: 100,
            messages_per_sec: 400,
            unfollowed_actions_per_sec: 2,
            unfollowed_action_burst: 4,
            requests_per_sec: 20,
            request_burst: 20,
            rooms_per_connection: 16,
            pending_per_connection: 256,
            pending_total: 65_536,
            queue_bytes: 256 * 1024,
            snapshot_timeout_ms: 5_000,
            strikes: 3,
            penalty_ms: 10_000,
            penalty_addrs: 65_536,
        }
    }
}

/// A token bucket: `rate` per second, bursts up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Bucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Take one token if there is one; otherwise how long until there is.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }

    /// Whether the bucket is full at `now` (nothing to remember).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// What to do with a new connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// Go ahead with the handshake.
    Accept,
    /// Ask the peer to prove its address first (QUIC Retry).
    Retry,
    /// Refuse: the relay (or this address) is at its limit.
    Refuse,
}

/// What to do with an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionVerdict {
    /// Forward it to the origin.
    Forward,
    /// Over the user's rate: answer `Throttled`, retry after this long.
    Throttle(Duration),
}

struct User {
    connections: usize,
    actions: Bucket,
    messages: Bucket,
    sessions: Bucket,
}

/// The relay's admission state.
pub struct Admission {
    limits: Limits,
    /// Connections accepted and not yet closed, by address.
    per_addr: BTreeMap<IpAddr, usize>,
    total: usize,
    unauthenticated: usize,
    /// New connections in the current second, for the Retry threshold.
    window: (Instant, u32),
    /// Full handshakes the relay may still begin.
    handshakes: Bucket,
    users: BTreeMap<UserId, User>,
    /// When users were last swept for full buckets.
    swept: Instant,
    /// Strikes per address: (first strike of the window, count, banned until).
    strikes: BTreeMap<IpAddr, (Instant, u32, Option<Instant>)>,
}

impl Admission {
    /// Empty, with `limits`.
    pub fn new(limits: Limits, now: Instant) -> Admission {
        Admission {
            handshakes: Bucket::new(limits.handshakes_per_sec, limits.handshake_burst, now),
            limits,
            per_addr: BTreeMap::new(),
            total: 0,
            unauthenticated: 0,
            window: (now, 0),
            users: BTreeMap::new(),
            swept: now,
            strikes: BTreeMap::new(),
        }
    }

    /// A connection from `addr` was closed for abuse.
    pub fn handle_abuse(&mut self, now: Instant, addr: IpAddr) {
        if self.limits.strikes == 0 {
            return;
        }
        let window = Duration::from_millis(self.limits.penalty_ms);
        if !self.strikes.contains_key(&addr) && self.strikes.len() >= self.limits.penalty_addrs {
            self.strikes
                .retain(|_, (since, _, until)| until.map_or(now < *since + window, |u| now < u));
            if self.strikes.len() >= self.limits.penalty_addrs {
                return;
            }
        }
        let e = self.strikes.entry(addr).or_insert((now, 0, None));
        if now.saturating_duration_since(e.0) >= window {
            *e = (now, 0, None);
        }
        e.1 += 1;
        if e.1 >= self.limits.strikes {
            e.2 = Some(now + window);
        }
    }

    fn banned(&mut self, now: Instant, addr: IpAddr) -> bool {
        let Some((_, _, Some(until))) = self.strikes.get(&addr) else {
            return false;
        };
        if now < *until {
            return true;
        }
        self.strikes.remove(&addr);
        false
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections held (authenticated or not).
    pub fn connections(&self) -> usize {
        self.total
    }

    /// Users with a record.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// A peer at `addr` starts a handshake; `validated` when it has already
    /// proven its address (it answered a Retry). On `Accept`, the caller
    /// must later call [`Admission::handle_closed`] (and
    /// [`Admission::handle_authenticated`] once it is past hello).
    pub fn handle_incoming(&mut self, now: Instant, addr: IpAddr, validated: bool) -> Incoming {
        if now.saturating_duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 = self.window.1.saturating_add(1);
        if self.banned(now, addr) {
            return Incoming::Refuse;
        }
        if self.total >= self.limits.max_connections
            || self.unauthenticated >= self.limits.max_unauthenticated
            || self.per_addr.get(&addr).copied().unwrap_or(0) >= self.limits.max_per_addr
        {
            return Incoming::Refuse;
        }
        if !validated && self.window.1 > self.limits.retry_above_per_sec {
            return Incoming::Retry;
        }
        // Last: only a handshake that would otherwise begin spends a token.
        if self.handshakes.take(now).is_err() {
            return Incoming::Refuse;
        }
        self.total += 1;
        self.unauthenticated += 1;
        *self.per_addr.entry(addr).or_insert(0) += 1;
        Incoming::Accept
    }

    /// A connection accepted by `handle_incoming` said hello as `user`.
    /// Refused (with the close code) past the user's session cap; the
    /// connection then still counts until [`Admission::handle_closed`].
    pub fn handle_authenticated(&mut self, now: Instant, user: UserId) -> Result<(), ErrorCode> {
        self.sweep(now);
        let limits = &self.limits;
        let session_burst = u32::try_from(limits.sessions_per_user * 2).unwrap_or(u32::MAX);
        let u = self.users.entry(user).or_insert_with(|| User {
            connections: 0,
            actions: Bucket::new(limits.actions_per_sec, limits.action_burst, now),
            messages: Bucket::new(limits.messages_per_sec, limits.messages_per_sec * 2, now),
            sessions: Bucket::new(limits.sessions_per_sec, session_burst, now),
        });
        if u.connections >= self.limits.sessions_per_user || u.sessions.take(now).is_err() {
            return Err(ErrorCode::Limit);
        }
        u.connections += 1;
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        Ok(())
    }

    /// A connection accepted by `handle_incoming` ended; `user` if it had
    /// been authenticated.
    pub fn handle_closed(&mut self, now: Instant, addr: IpAddr, user: Option<UserId>) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_addr.remove(&addr);
            }
        }
        match user.and_then(|u| self.users.get_mut(&u)) {
            Some(u) => u.connections = u.connections.saturating_sub(1),
            None => self.unauthenticated = self.unauthenticated.saturating_sub(1),
        }
        self.sweep(now);
    }

    /// An action (not a copy of one already forwarded) from `user`.
    pub fn handle_action(&mut self, now: Instant, user: UserId) -> ActionVerdict {
        let Some(u) = self.users.get_mut(&user) else {
            return ActionVerdict::Throttle(Duration::from_secs(1));
        };
        match u.actions.take(now) {
            Ok(()) => ActionVerdict::Forward,
            Err(wait) => ActionVerdict::Throttle(wait.max(Duration::from_millis(1))),
        }
    }

    /// Any message from `user`; `false` means a flood: close the connection.
    pub fn handle_message(&mut self, now: Instant, user: UserId) -> bool {
        self.users
            .get_mut(&user)
            .is_some_and(|u| u.messages.take(now).is_ok())
    }

    /// Forget users with no connection whose buckets have refilled, at most
    /// once a second.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < Duration::from_secs(1) {
            return;
        }
        self.swept = now;
        self.users.retain(|_, u| {
            u.connections > 0
                || !(u.actions.is_full(now) && u.messages.is_full(now) && u.sessions.is_full(now))
        });
    }
}

/// One connection's request budget (joins, resyncs, snapshot requests).
#[derive(Debug, Clone)]
pub struct Requests(Bucket);

impl Requests {
    /// A full budget, as configured.
    pub fn new(limits: &Limits, now: Instant) -> Requests {
        Requests(Bucket::new(
            limits.requests_per_sec,
            limits.request_burst,
            now,
        ))
    }

    /// Spend one request; `false` when over budget.
    pub fn take(&mut self, now: Instant) -> bool {
        self.0.take(now).is_ok()
    }

    /// A join (`granted`: the token grants the room): it spends a request,
    /// and is refused over the budget (`TooMany`) or without a grant
    /// (`NoGrant`). A refusal touches no shared state, so the connection
    /// answers it itself: a flood of refused joins never queues in the
    /// hub's one task in front of other clients' work.
    pub fn handle_join(&mut self, now: Instant, granted: bool) -> Result<(), Reason> {
        if !self.take(now) {
            Err(Reason::TooMany)
        } else if !granted {
            Err(Reason::NoGrant)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
