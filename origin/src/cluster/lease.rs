//! One room's lease, from one node's point of view: a sans-IO state machine.
//!
//! It reads no clock and does no IO. The driver feeds it what the lease
//! bucket said (`handle_*`, each with `now`, a local monotonic instant) and
//! executes what [`Lease::poll_command`] asks for, reporting back the
//! result; [`Lease::poll_timeout`] says when to look again, and
//! [`Lease::owned`] whether the node may act for the room at `now`.
//!
//! ```text
//!            want                read: absent           create ok
//!   Idle ───────────► Reading ─────────────────► Writing ─────────► Owned ──┐
//!                        │ read: held by r          ▲  │ refused        │  │ renew (every ttl/4,
//!                        ▼                          │  ▼                │  │ CAS on our revision)
//!                     Watching(r, since) ───────────┘ Reading           │◄─┘
//!                      r unchanged for ttl + margin:                    │ no renewal accepted by
//!                      take over (CAS on r)                             ▼ sent + ttl - margin,
//!                                                                  Watching  or a renewal refused
//! ```
//!
//! The blind hold. A renewal that fails without an answer while the
//! node's connection to NATS is up ([`Lease::handle_unanswered`]) means the
//! bucket itself is silent: its stream is electing a leader (4–9 s on
//! nats-server 2.9 when its leader dies), for every node alike. Then the
//! lease stays owned past `valid_until`, for up to `blind_hold`, its
//! renewal retried every `margin / 2`:
//!
//! ```text
//!   Owned ── renewal unanswered, connected ──► Owned, blind (owned until valid_until + blind_hold)
//!     ▲                                          │ renewal accepted ──► Owned (a fresh validity)
//!     └──────────────────────────────────────────┤ renewal refused ───► Reading (dropped at once)
//!                                                │ failed, disconnected, past valid_until,
//!                                                ▼ or valid_until + blind_hold reached
//!                                             Watching
//! ```
//!
//! Why it is safe: nothing here decides who may write a room. Every
//! append to a room's log is fenced (a new owner appends a `Fence` first;
//! the old owner's next append is refused and it drops the room) and acks
//! leave only after a successful append, so a holder that keeps acting
//! past its lease while it cannot learn otherwise costs liveness, never
//! safety. Its limit: a node cut off from the bucket but not from the room
//! logs (nor from NATS) keeps its rooms up to `blind_hold` after its lease
//! ran out, or until one of its appends is fenced by the node that took the
//! room. Nobody can take them during a bucket election (every node is as
//! blind, and [`Members`](super::Members) counts nobody dead meanwhile).
//!
//! Timing (see the module docs of [`crate::cluster`]): the holder's lease
//! is valid until `sent + ttl - margin`, `sent` being when it sent the last
//! write the bucket accepted; another node takes over only once it has seen
//! the same revision for `ttl + margin`. Durations only, on each node's own
//! monotonic clock: nothing compares timestamps across machines.
//!
//! The epoch is the revision at which the lease was won (create or take
//! over); renewals keep it. Fencing itself is the log's (a new owner's
//! `Fence` entry): this machine only decides when to try.

use std::time::{Duration, Instant};

/// A lease as the bucket stores it (the key's value).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// The holding node.
    pub node: String,
    /// The revision at which the holder won the lease; `None` in the write
    /// that wins it (its own revision is the epoch).
    pub epoch: Option<u64>,
    /// A room's claim: the epoch of the holder's node lease it hangs on
    /// (the room is the holder's while that node lease lives, see
    /// `claim.rs`). `None` in a node lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<u64>,
}

/// What a read of the key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No lease: the key never existed, was released, or expired.
    Absent,
    /// A lease at `revision`.
    Held {
        /// Its value.
        claim: Claim,
        /// The key's revision.
        revision: u64,
    },
}

/// What the driver should do next for this room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read the key, then [`Lease::handle_read`].
    Read,
    /// Create the key (only if absent) with this claim, then
    /// [`Lease::handle_written`] or [`Lease::handle_refused`].
    Create(Claim),
    /// Write this claim only if the key is still at `revision` (a renewal,
    /// or a take-over of a lease that expired), then
    /// [`Lease::handle_written`] or [`Lease::handle_refused`].
    Update {
        /// The revision the key must still be at.
        revision: u64,
        /// What to write.
        claim: Claim,
    },
    /// Delete the key only if it is still at `revision` (a clean hand-over),
    /// then [`Lease::handle_written`] (any revision) or
    /// [`Lease::handle_refused`].
    Release {
        /// Our lease's revision.
        revision: u64,
    },
}

/// The lease's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal.
    pub ttl: Duration,
    /// The allowance for clock rates and round trips.
    pub margin: Duration,
}

impl Timing {
    /// Renew (and list the node leases) this often: a quarter of the
    /// ttl, so a holder has three tries before its lease runs out.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 4
    }

    /// How long another node waits, from its first sighting of a lease's
    /// last renewal, before it counts the lease dead: `ttl + margin`.
    pub fn takeover_after(&self) -> Duration {
        self.ttl + self.margin
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Not wanted (or released): nothing to do.
    Idle,
    /// A read is due at the instant, or in flight (`None`).
    Reading(Option<Instant>),
    /// Held at `revision` by someone (or by our own lease that lapsed),
    /// seen unchanged since `since`; read again at `next_read`.
    Watching {
        revision: u64,
        since: Instant,
        next_read: Instant,
    },
    /// A create (`over: None`) or a take-over of the lease at revision
    /// `over`: due (`sent: None`) or in flight since `sent`.
    Winning {
        over: Option<u64>,
        sent: Option<Instant>,
    },
    /// Ours, at `revision`, won at `epoch`, valid until `valid_until` (or,
    /// `blind`, until `valid_until + blind_hold`); a renewal is due at
    /// `renew_at`, or in flight since `renewing`.
    Owned {
        revision: u64,
        epoch: u64,
        valid_until: Instant,
        renew_at: Instant,
        renewing: Option<Instant>,
        blind: bool,
    },
    /// A release is due (`false`) or in flight (`true`).
    Releasing { revision: u64, sent: bool },
}

/// One room's lease on one node.
#[derive(Clone, Debug)]
pub struct Lease {
    node: String,
    timing: Timing,
    /// How long past `valid_until` an owned lease is kept while its
    /// renewals go unanswered on a live connection (zero: not at all).
    blind_hold: Duration,
    /// Set when a renewal sent during a blind hold is accepted; cleared by
    /// [`Lease::take_back_from_blind`].
    back_from_blind: bool,
    state: State,
    /// The last revision read and since when it has been seen unchanged
    /// (kept across the reads of a watch).
    seen: Option<(u64, Instant)>,
}

impl Lease {
    /// A lease this node does not want yet.
    pub fn new(node: impl Into<String>, timing: Timing) -> Lease {
        Lease {
            node: node.into(),
            timing,
            blind_hold: Duration::ZERO,
            back_from_blind: false,
            state: State::Idle,
            seen: None,
        }
    }

    /// Keep an owned lease up to `hold` past its validity while its
    /// renewals go unanswered on a live connection
    /// ([`Lease::handle_unanswered`]); zero (the default) never.
    pub fn with_blind_hold(mut self, hold: Duration) -> Lease {
        self.blind_hold = hold;
        self
    }

    /// Whether a renewal sent during a blind hold was accepted since the
    /// last call: the lease was kept through a stretch when nobody could
    /// tell this node whether others counted it dead, so what hangs on it
    /// (room claims) is worth reading again. Clears the flag.
    pub fn take_back_from_blind(&mut self) -> bool {
        std::mem::take(&mut self.back_from_blind)
    }

    /// This node wants the room (placement says so): look at the key.
    pub fn handle_want(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.state = State::Reading(Some(now));
        }
    }

    /// This node has already seen the key at `revision`, unchanged since
    /// `since` (a listing of the bucket): a later read of that same
    /// revision counts from then, so a dead holder's lease is taken
    /// `ttl + margin` after it was first seen, not after it was wanted.
    pub fn handle_seen(&mut self, revision: u64, since: Instant) {
        match self.seen {
            Some((r, s)) if r == revision && s <= since => {}
            _ => self.seen = Some((revision, since)),
        }
    }

    /// Hand the room over cleanly: release the lease if held (the driver
    /// must have stopped acting for the room first), else forget it.
    pub fn handle_release(&mut self) {
        self.state = match self.state {
            State::Owned { revision, .. } => State::Releasing {
                revision,
                sent: false,
            },
            _ => State::Idle,
        };
    }

    /// The epoch this node holds the room at, if it may act for it at
    /// `now`. A renewal in flight does not extend it: only an accepted one,
    /// or a blind hold ([`Lease::handle_unanswered`]).
    pub fn owned(&self, now: Instant) -> Option<u64> {
        match self.state {
            State::Owned { epoch, .. } if now < self.expires_at()? => Some(epoch),
            _ => None,
        }
    }

    /// Whether the lease is owned only by a blind hold at `now` (past its
    /// validity, its renewals unanswered).
    pub fn is_blind(&self, now: Instant) -> bool {
        matches!(self.state, State::Owned { blind: true, valid_until, .. } if valid_until <= now)
            && self.owned(now).is_some()
    }

    /// When the lease, if owned, stops being owned unless a renewal is
    /// accepted first: its validity, or while blind the hold's end.
    pub fn lapses_at(&self) -> Option<Instant> {
        self.expires_at()
    }

    /// When an owned lease stops being owned unless a renewal is accepted:
    /// its validity, stretched by the blind hold while blind.
    fn expires_at(&self) -> Option<Instant> {
        match self.state {
            State::Owned {
                valid_until, blind, ..
            } => Some(match blind {
                true => valid_until + self.blind_hold,
                false => valid_until,
            }),
            _ => None,
        }
    }

    /// When to call [`Lease::poll_command`] next, besides right after
    /// every `handle_*` call (`None`: only then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Reading(at) => at,
            State::Watching {
                since, next_read, ..
            } => Some(next_read.min(self.takeover_at(since))),
            State::Owned {
                renew_at, renewing, ..
            } => {
                let expires = self.expires_at()?;
                Some(match renewing {
                    Some(_) => expires,
                    None => renew_at.min(expires),
                })
            }
            State::Idle | State::Winning { .. } | State::Releasing { .. } => None,
        }
    }

    /// The next thing to do at `now`, if any. A command returned is taken
    /// as sent at `now`: report its result with the matching `handle_*`.
    pub fn poll_command(&mut self, now: Instant) -> Option<Command> {
        self.expire(now);
        let claim = |epoch| Claim {
            node: self.node.clone(),
            epoch,
            member: None,
        };
        match self.state {
            State::Reading(Some(at)) if at <= now => {
                self.state = State::Reading(None);
                Some(Command::Read)
            }
            State::Watching {
                revision, since, ..
            } if self.takeover_at(since) <= now => {
                self.state = State::Winning {
                    over: Some(revision),
                    sent: Some(now),
                };
                Some(Command::Update {
                    revision,
                    claim: claim(None),
                })
            }
            State::Winning { over, sent: None } => {
                self.state = State::Winning {
                    over,
                    sent: Some(now),
                };
                Some(match over {
                    None => Command::Create(claim(None)),
                    Some(revision) => Command::Update {
                        revision,
                        claim: claim(None),
                    },
                })
            }
            State::Watching { next_read, .. } if next_read <= now => {
                self.state = State::Reading(None);
                Some(Command::Read)
            }
            State::Owned {
                revision,
                epoch,
                renew_at,
                ref mut renewing,
                ..
            } if renewing.is_none() && renew_at <= now => {
                *renewing = Some(now);
                Some(Command::Update {
                    revision,
                    claim: claim(Some(epoch)),
                })
            }
            State::Releasing {
                revision,
                ref mut sent,
            } if !*sent => {
                *sent = true;
                Some(Command::Release { revision })
            }
            _ => None,
        }
    }

    /// A [`Command::Read`] answered at `now`.
    pub fn handle_read(&mut self, now: Instant, seen: Seen) {
        if self.state != State::Reading(None) {
            return;
        }
        self.state = match seen {
            // Create at once: only one node's create can succeed.
            Seen::Absent => State::Winning {
                over: None,
                sent: None,
            },
            Seen::Held { revision, .. } => self.watch(now, revision),
        };
    }

    /// The bucket accepted our write (create, take-over, renewal) at
    /// `revision`, or our release. `now` is when the answer came.
    pub fn handle_written(&mut self, now: Instant, revision: u64) {
        if let State::Owned {
            renewing: Some(sent),
            valid_until,
            blind: true,
            ..
        } = self.state
        {
            // Sent when only the hold kept the lease: back from blind.
            self.back_from_blind |= valid_until <= sent;
        }
        let sent = match self.state {
            State::Winning { sent: Some(t), .. } => t,
            State::Owned {
                renewing: Some(t), ..
            } => t,
            State::Releasing { sent: true, .. } => {
                self.state = State::Idle;
                return;
            }
            _ => return,
        };
        let epoch = match self.state {
            State::Owned { epoch, .. } => epoch,
            _ => revision,
        };
        let valid_until = sent + self.timing.ttl.saturating_sub(self.timing.margin);
        self.state = State::Owned {
            revision,
            epoch,
            valid_until,
            renew_at: sent + self.timing.renew_every(),
            renewing: None,
            blind: false,
        };
        // An answer that came after the validity ran out leaves nothing.
        self.expire(now);
    }

    /// The bucket refused our write: the key is not at the revision we
    /// expected (someone else wrote or took over), or exists for a create.
    /// A holder stops acting at once; everyone reads again.
    pub fn handle_refused(&mut self, now: Instant) {
        self.state = match self.state {
            State::Idle => State::Idle,
            State::Releasing { .. } => State::Idle,
            _ => State::Reading(Some(now)),
        };
    }

    /// A command failed without an answer while this node's connection to
    /// NATS was down (or its state unknown): whether it happened is
    /// unknown. Reads and wins are retried from a read; a renewal is
    /// retried after a short pause while the lease is valid (a blind hold
    /// ends here: cut off from NATS, this node is as good as dead to the
    /// others); a release is given up (the lease then runs out).
    pub fn handle_failed(&mut self, now: Instant) {
        self.failed(now, false);
    }

    /// A command failed without an answer while this node's connection to
    /// NATS was up: the bucket itself is silent (its stream is electing a
    /// leader), and so it is for every node, none of which can count this
    /// one dead meanwhile (see `Members::handle_failed`). An owned lease is
    /// then kept past its validity, up to the blind hold, its renewal
    /// retried every `margin / 2`; anything else is as
    /// [`Lease::handle_failed`]. Safe whatever the others do: every append
    /// of a room's log is fenced, so a holder that kept a room another node
    /// took cannot append to it (liveness only).
    pub fn handle_unanswered(&mut self, now: Instant) {
        self.failed(now, !self.blind_hold.is_zero());
    }

    fn failed(&mut self, now: Instant, hold: bool) {
        let retry = now + self.timing.margin / 2;
        self.state = match self.state {
            State::Owned {
                revision,
                epoch,
                valid_until,
                ..
            } => State::Owned {
                revision,
                epoch,
                valid_until,
                renew_at: retry,
                renewing: None,
                blind: hold,
            },
            // Not retried: a lease left behind expires like a dead node's.
            State::Releasing { .. } | State::Idle => State::Idle,
            _ => State::Reading(Some(retry)),
        };
        // Past its validity without a hold (or past the hold): gone now.
        self.expire(now);
    }

    fn watch(&mut self, now: Instant, revision: u64) -> State {
        let since = match self.seen {
            Some((r, since)) if r == revision => since,
            _ => now,
        };
        self.seen = Some((revision, since));
        State::Watching {
            revision,
            since,
            next_read: now + self.timing.renew_every(),
        }
    }

    /// Our lease ran out: we watch it like anyone else's.
    fn expire(&mut self, now: Instant) {
        if let (State::Owned { revision, .. }, Some(expires)) = (&self.state, self.expires_at()) {
            let revision = *revision;
            if expires <= now {
                self.seen = Some((revision, now));
                self.state = State::Watching {
                    revision,
                    since: now,
                    next_read: now,
                };
            }
        }
    }

    fn takeover_at(&self, since: Instant) -> Instant {
        since + self.timing.takeover_after()
    }
}

#[cfg(test)]
mod tests;
