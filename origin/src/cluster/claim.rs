//! One room's claim, from one node's point of view: a sans-IO state
//! machine. A room's key is written once when the room is won (create, or
//! compare-and-set over a dead holder's claim) and never renewed: the claim
//! names the holder's node lease (`member`: that lease's epoch), and the
//! room is the holder's while that node lease lives. So a node renews one
//! key however many rooms it holds, and a dead node's rooms are free as
//! soon as its node lease is counted dead.
//!
//! ```text
//!           want            read: absent          create ok
//!   Idle ─────────► Reading ─────────────► Winning ─────────► Owned (while the node lease lives)
//!                      │ read: held by another   ▲    │ refused            │ release
//!                      ▼                         │    ▼                    ▼
//!                   Waiting ─────────────────────┘  Reading             Releasing ──► Idle
//!                   holder's node lease dead (or an older incarnation of this node):
//!                   take over (compare-and-set on the claim's revision)
//! ```
//!
//! An owned claim is never renewed nor read again, except once after the
//! node lease was kept through a blind hold (its renewals unanswered past
//! its validity: [`RoomClaim::handle_check`]), when another node may have
//! counted this one dead and taken the room.
//!
//! It reads no clock and does no IO: the keeper feeds it the bucket's
//! answers and says, when asked for a command, which node leases are
//! alive ([`Members::holds`](super::Members::holds)). Timing is all in the
//! node lease ([`Lease`](super::lease::Lease)) and [`Members`](super::Members):
//! the holder stops acting for every room when its node lease lapses on
//! its own clock (`sent + ttl - margin`); others count it dead `ttl +
//! margin` after first seeing its last renewal. Safety stays the log's: a
//! new owner fences the room's log before serving.

use std::time::{Duration, Instant};

use super::lease::{Claim, Command, Seen};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// A read is due at the instant, or in flight (`None`).
    Reading(Option<Instant>),
    /// Held at `revision` by `holder` (node, node lease epoch); read again
    /// at `next_read` (it may be released meanwhile).
    Waiting {
        revision: u64,
        holder: String,
        member: Option<u64>,
        next_read: Instant,
    },
    /// A create (`over: None`) or a take-over of the claim at `over`: due
    /// (`sent: false`) or in flight.
    Winning {
        over: Option<u64>,
        sent: bool,
    },
    /// Ours at `revision`, won at `epoch`, under node lease epoch `member`;
    /// `check`: whether a read is due to confirm it.
    Owned {
        revision: u64,
        epoch: u64,
        member: u64,
        check: Check,
    },
    /// A release is due (`false`) or in flight (`true`).
    Releasing {
        revision: u64,
        sent: bool,
    },
}

/// A read confirming an owned claim (after the node lease was kept
/// through a blind hold, see [`RoomClaim::handle_check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// None wanted.
    Settled,
    /// Due at the instant.
    Due(Instant),
    /// In flight.
    Sent,
}

/// One room's claim on one node.
#[derive(Clone, Debug)]
pub struct RoomClaim {
    node: String,
    /// How long to wait between reads of a claim a live node holds.
    recheck: Duration,
    state: State,
    /// Wanted again while a release was under way: read from this instant
    /// once the release is done.
    want_after_release: Option<Instant>,
}

impl RoomClaim {
    /// A claim this node does not want yet; a claim held by a live node is
    /// read again every `recheck`.
    pub fn new(node: impl Into<String>, recheck: Duration) -> RoomClaim {
        RoomClaim {
            node: node.into(),
            recheck,
            state: State::Idle,
            want_after_release: None,
        }
    }

    /// This node wants the room: look at its key.
    pub fn handle_want(&mut self, now: Instant) {
        match self.state {
            State::Idle => self.state = State::Reading(Some(now)),
            // Wanted again (the holder may have died): look now.
            State::Waiting { .. } => self.state = State::Reading(Some(now)),
            // Wanted again before its release ran (a room dropped for a
            // failed append is won again under a new epoch): after it.
            State::Releasing { .. } => self.want_after_release = Some(now),
            _ => {}
        }
    }

    /// What a finished (or abandoned) release leaves: nothing, or a read
    /// if the room was wanted again meanwhile.
    fn after_release(&mut self) -> State {
        self.want_after_release
            .take()
            .map_or(State::Idle, |at| State::Reading(Some(at)))
    }

    /// Hand the room over: release the claim if held, else forget it. A
    /// release under way stays under way (asked twice, it still deletes
    /// the key once: a claim left behind by a live node would hold the
    /// room from every other node for good).
    pub fn handle_release(&mut self) {
        self.want_after_release = None;
        self.state = match self.state {
            State::Owned { revision, .. } => State::Releasing {
                revision,
                sent: false,
            },
            State::Releasing { revision, sent } => State::Releasing { revision, sent },
            _ => State::Idle,
        };
    }

    /// The bucket lists a claim of this node's at `revision` that this
    /// claim does not hold (a release that failed, an earlier incarnation's
    /// claim): delete it (only if still at `revision`), unless a win or a
    /// release is under way.
    pub fn handle_release_listed(&mut self, revision: u64) {
        if let State::Idle | State::Reading(_) | State::Waiting { .. } = self.state {
            self.state = State::Releasing {
                revision,
                sent: false,
            };
        }
    }

    /// This node's lease lapsed: every room it held is lost (won again
    /// only under a new node lease).
    pub fn handle_member_lost(&mut self) {
        if let State::Owned { .. } | State::Winning { .. } = self.state {
            self.state = State::Idle;
        }
    }

    /// This node's lease was kept through a blind hold (its renewals went
    /// unanswered past its validity, see
    /// [`Lease::handle_unanswered`](super::lease::Lease::handle_unanswered)):
    /// another node may have counted it dead and taken the room meanwhile,
    /// so read the claim once. The room stays held while the read is out;
    /// if the claim is no longer this node's under its lease, the room is
    /// lost (and looked at afresh). Else nothing.
    pub fn handle_check(&mut self, now: Instant) {
        if let State::Owned { ref mut check, .. } = self.state {
            *check = Check::Due(now);
        }
    }

    /// The epoch the room is held at, if this node holds it under node
    /// lease epoch `member` (the caller checks that lease is valid now).
    pub fn owned(&self, member: u64) -> Option<u64> {
        match self.state {
            State::Owned {
                epoch, member: m, ..
            } if m == member => Some(epoch),
            _ => None,
        }
    }

    /// When to ask for a command next, besides after every `handle_*` and
    /// whenever a node lease may have died.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Reading(at) => at,
            State::Waiting { next_read, .. } => Some(next_read),
            State::Owned {
                check: Check::Due(at),
                ..
            } => Some(at),
            _ => None,
        }
    }

    /// The next command at `now`, for a node whose lease is at epoch
    /// `member`; `alive(node, member)` says whether a node lease lives. A
    /// command returned is taken as sent: report its result.
    pub fn poll_command(
        &mut self,
        now: Instant,
        member: u64,
        alive: impl Fn(&str, Option<u64>) -> bool,
    ) -> Option<Command> {
        let claim = Claim {
            node: self.node.clone(),
            epoch: None,
            member: Some(member),
        };
        match self.state {
            State::Reading(Some(at)) if at <= now => {
                self.state = State::Reading(None);
                Some(Command::Read)
            }
            State::Waiting {
                revision,
                ref holder,
                member: m,
                next_read,
            } => {
                if !alive(holder, m) {
                    self.state = State::Winning {
                        over: Some(revision),
                        sent: true,
                    };
                    Some(Command::Update { revision, claim })
                } else if next_read <= now {
                    self.state = State::Reading(None);
                    Some(Command::Read)
                } else {
                    None
                }
            }
            State::Winning { over, sent: false } => {
                self.state = State::Winning { over, sent: true };
                Some(match over {
                    None => Command::Create(claim),
                    Some(revision) => Command::Update { revision, claim },
                })
            }
            State::Releasing {
                revision,
                sent: false,
            } => {
                self.state = State::Releasing {
                    revision,
                    sent: true,
                };
                Some(Command::Release { revision })
            }
            State::Owned { ref mut check, .. } if matches!(*check, Check::Due(at) if at <= now) => {
                *check = Check::Sent;
                Some(Command::Read)
            }
            _ => None,
        }
    }

    /// A read answered at `now`, this node's lease being at epoch `member`.
    pub fn handle_read(&mut self, now: Instant, seen: Seen, member: u64) {
        if let State::Owned {
            revision,
            member: m,
            ref mut check,
            ..
        } = self.state
        {
            if *check != Check::Sent {
                return;
            }
            let ours = |claim: &Claim, r: u64| {
                claim.node == self.node && claim.member == Some(m) && r == revision
            };
            if matches!(&seen, Seen::Held { claim, revision: r } if ours(claim, *r)) {
                *check = Check::Settled;
                return;
            }
            // Taken (or released) meanwhile: lost; what the read found
            // decides what next, as for any read.
            self.state = State::Reading(None);
        }
        if self.state != State::Reading(None) {
            return;
        }
        self.state = match seen {
            Seen::Absent => State::Winning {
                over: None,
                sent: false,
            },
            Seen::Held { claim, revision } if claim.node == self.node => {
                if claim.member == Some(member) {
                    State::Owned {
                        revision,
                        epoch: claim.epoch.unwrap_or(revision),
                        member,
                        check: Check::Settled,
                    }
                } else {
                    // An earlier incarnation of this node: its lease lapsed
                    // (this one's is new), so the room is free to take.
                    State::Winning {
                        over: Some(revision),
                        sent: false,
                    }
                }
            }
            Seen::Held { claim, revision } => State::Waiting {
                revision,
                holder: claim.node,
                member: claim.member,
                next_read: now + self.recheck,
            },
        };
    }

    /// The bucket accepted our write at `revision` (a win, under node
    /// lease epoch `member`), or our release.
    pub fn handle_written(&mut self, revision: u64, member: u64) {
        self.state = match self.state {
            State::Winning { sent: true, .. } => State::Owned {
                revision,
                epoch: revision,
                member,
                check: Check::Settled,
            },
            State::Releasing { sent: true, .. } => self.after_release(),
            ref other => other.clone(),
        };
    }

    /// The bucket refused our write (someone else got there first): read
    /// again.
    pub fn handle_refused(&mut self, now: Instant) {
        self.state = match self.state {
            State::Idle => State::Idle,
            State::Releasing { .. } => self.after_release(),
            _ => State::Reading(Some(now)),
        };
    }

    /// A command failed without an answer: read again after `retry`; a
    /// release is given up (the next owner takes the claim once this
    /// node's lease is gone, or by compare-and-set when it is told); a
    /// check of an owned claim is tried again after `retry`, the room held
    /// meanwhile.
    pub fn handle_failed(&mut self, now: Instant, retry: Duration) {
        self.state = match self.state {
            State::Idle => State::Idle,
            State::Releasing { .. } => self.after_release(),
            State::Owned {
                revision,
                epoch,
                member,
                ..
            } => State::Owned {
                revision,
                epoch,
                member,
                check: Check::Due(now + retry),
            },
            _ => State::Reading(Some(now + retry)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECHECK: Duration = Duration::from_millis(1000);

    /// Node "a"'s claim, created and held under node lease `member` at
    /// `revision`.
    fn owned(t0: Instant, member: u64, revision: u64) -> RoomClaim {
        let mut c = RoomClaim::new("a", RECHECK);
        c.handle_want(t0);
        c.poll_command(t0, member, |_, _| true);
        c.handle_read(t0, Seen::Absent, member);
        c.poll_command(t0, member, |_, _| true);
        c.handle_written(revision, member);
        c
    }

    fn held(node: &str, member: u64, revision: u64) -> Seen {
        Seen::Held {
            claim: Claim {
                node: node.into(),
                epoch: None,
                member: Some(member),
            },
            revision,
        }
    }

    #[test]
    fn a_free_room_is_created_and_held_under_the_node_lease() {
        let t0 = Instant::now();
        let mut c = RoomClaim::new("a", RECHECK);
        c.handle_want(t0);
        assert_eq!(c.poll_command(t0, 5, |_, _| true), Some(Command::Read));
        c.handle_read(t0, Seen::Absent, 5);
        let Some(Command::Create(claim)) = c.poll_command(t0, 5, |_, _| true) else {
            panic!("a create");
        };
        assert_eq!(claim.member, Some(5));
        c.handle_written(9, 5);
        assert_eq!(c.owned(5), Some(9));
        assert_eq!(c.owned(6), None, "a later node lease holds nothing");
        assert_eq!(c.poll_command(t0 + RECHECK * 100, 5, |_, _| true), None);
        c.handle_member_lost();
        assert_eq!(c.owned(5), None);
    }

    #[test]
    fn a_room_of_a_live_node_waits_and_of_a_dead_one_is_taken_over() {
        let t0 = Instant::now();
        let mut c = RoomClaim::new("b", RECHECK);
        c.handle_want(t0);
        c.poll_command(t0, 2, |_, _| true);
        c.handle_read(t0, held("a", 1, 7), 2);
        assert_eq!(c.poll_command(t0, 2, |_, _| true), None);
        assert_eq!(c.poll_timeout(), Some(t0 + RECHECK));
        // The holder's node lease dies: take over at once, over its revision.
        let t1 = t0 + Duration::from_millis(10);
        let dead = |n: &str, m: Option<u64>| !(n == "a" && m == Some(1));
        let Some(Command::Update { revision: 7, claim }) = c.poll_command(t1, 2, dead) else {
            panic!("a take-over");
        };
        assert_eq!((claim.node.as_str(), claim.member), ("b", Some(2)));
        c.handle_refused(t1);
        assert_eq!(c.poll_command(t1, 2, dead), Some(Command::Read));
        c.handle_read(t1, held("c", 3, 8), 2);
        assert_eq!(c.poll_command(t1, 2, dead), None, "c got it first");
    }

    #[test]
    fn a_claim_of_an_earlier_incarnation_of_this_node_is_taken_back() {
        let t0 = Instant::now();
        let mut c = RoomClaim::new("a", RECHECK);
        c.handle_want(t0);
        c.poll_command(t0, 4, |_, _| true);
        c.handle_read(t0, held("a", 1, 3), 4);
        assert_eq!(
            c.poll_command(t0, 4, |_, _| true),
            Some(Command::Update {
                revision: 3,
                claim: Claim {
                    node: "a".into(),
                    epoch: None,
                    member: Some(4)
                }
            })
        );
        c.handle_written(10, 4);
        assert_eq!(c.owned(4), Some(10));
        c.handle_release();
        assert_eq!(c.owned(4), None, "stops acting before releasing");
        assert_eq!(
            c.poll_command(t0, 4, |_, _| true),
            Some(Command::Release { revision: 10 })
        );
    }

    #[test]
    fn a_release_asked_twice_still_deletes_the_claim() {
        // The scenario run that found it: a pair's battle ended, the node
        // released the invited room, and dropping it (its lease gone) asked
        // for the release again before it was sent: the second ask forgot
        // the first, and the claim stayed in the bucket, holding the room
        // from its new owner for good.
        let t0 = Instant::now();
        let mut c = owned(t0, 4, 12);
        c.handle_release();
        c.handle_release();
        assert_eq!(
            c.poll_command(t0, 4, |_, _| true),
            Some(Command::Release { revision: 12 })
        );
        c.handle_written(13, 4);
        assert_eq!(c.poll_command(t0, 4, |_, _| true), None);
    }

    #[test]
    fn a_claim_listed_but_not_held_is_deleted_at_its_revision() {
        let t0 = Instant::now();
        let mut c = RoomClaim::new("a", RECHECK);
        c.handle_release_listed(21);
        assert_eq!(
            c.poll_command(t0, 4, |_, _| true),
            Some(Command::Release { revision: 21 })
        );
        // Refused (someone else wrote it since): forgotten.
        c.handle_refused(t0);
        assert_eq!(c.poll_command(t0, 4, |_, _| true), None);
        // A claim this node holds is released by its own revision, not a listing's.
        c.handle_want(t0);
        c.poll_command(t0, 4, |_, _| true);
        c.handle_read(t0, Seen::Absent, 4);
        c.poll_command(t0, 4, |_, _| true);
        c.handle_written(30, 4);
        c.handle_release_listed(29);
        assert_eq!(c.owned(4), Some(30));
    }

    #[test]
    fn after_a_blind_hold_an_owned_claim_is_read_once_and_dropped_if_taken() {
        let t0 = Instant::now();
        let retry = Duration::from_millis(100);
        let mut c = owned(t0, 5, 9);
        // Still ours: confirmed, nothing more.
        c.handle_check(t0);
        assert_eq!(c.poll_timeout(), Some(t0));
        assert_eq!(c.poll_command(t0, 5, |_, _| true), Some(Command::Read));
        assert_eq!(c.owned(5), Some(9), "held while the read is out");
        c.handle_read(t0, held("a", 5, 9), 5);
        assert_eq!(c.owned(5), Some(9));
        assert_eq!(c.poll_command(t0 + RECHECK, 5, |_, _| true), None);
        // Unanswered: held, tried again after `retry`.
        c.handle_check(t0);
        c.poll_command(t0, 5, |_, _| true);
        c.handle_failed(t0, retry);
        assert_eq!(c.owned(5), Some(9));
        assert_eq!(c.poll_command(t0, 5, |_, _| true), None);
        assert_eq!(c.poll_timeout(), Some(t0 + retry));
        let t1 = t0 + retry;
        assert_eq!(c.poll_command(t1, 5, |_, _| true), Some(Command::Read));
        // Taken by b meanwhile (b counted a dead): lost, b's claim watched.
        c.handle_read(t1, held("b", 2, 12), 5);
        assert_eq!(c.owned(5), None);
        assert_eq!(c.poll_timeout(), Some(t1 + RECHECK));
    }

    #[test]
    fn wanted_again_while_releasing_it_is_read_once_the_release_is_done() {
        let t0 = Instant::now();
        let mut c = owned(t0, 4, 12);
        c.handle_release();
        c.handle_want(t0);
        assert_eq!(
            c.poll_command(t0, 4, |_, _| true),
            Some(Command::Release { revision: 12 })
        );
        c.handle_written(12, 4);
        assert_eq!(c.poll_command(t0, 4, |_, _| true), Some(Command::Read));
        // Not wanted again: a release leaves nothing to do.
        c.handle_read(t0, Seen::Absent, 4);
        c.poll_command(t0, 4, |_, _| true);
        c.handle_written(20, 4);
        c.handle_release();
        c.poll_command(t0, 4, |_, _| true);
        c.handle_failed(t0, RECHECK);
        assert_eq!(c.poll_command(t0 + RECHECK, 4, |_, _| true), None);
    }
}
