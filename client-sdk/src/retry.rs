//! When to send an action again, and how (pure: takes `now`, does no IO).
//!
//! An action goes first as a datagram, and again as copy datagrams a few
//! milliseconds later ([`Policy::copy_delay`], [`Policy::second_copy_delay`],
//! [`Policy::third_copy_delay`], all from the first send), so a lost packet
//! costs little (an action is one small packet from one user: the copies
//! are cheap). Losses come in bursts (a Wi-Fi fade, a queue overflowing on
//! a shared hop): a copy a few milliseconds after the original falls in the
//! same burst, so the copies are spread out — the first soon (an isolated
//! loss costs 8 ms), the second past a typical burst, the third past a long
//! one and still well before the stream fallback — and a copy not yet sent
//! when the answer comes is not sent at all. The second and third go only
//! while the path is losing packets (its connection reported a loss in the
//! last [`LOSSY_FOR`]): on a clean path the first copy is insurance enough. The original and its three
//! copies stay within the copies the relay forwards without charging the
//! user's rate (its `FREE_COPIES`, 4, counts the first stream fallback too).
//! If no answer comes within
//! the retransmission timeout, it goes on the reliable control stream, and
//! again on the stream at a backed-off interval (at least
//! [`STREAM_RESEND_MIN`], doubling up to [`STREAM_RESEND_MAX`]) for as long as
//! no answer comes: a relay may have dropped it (its pending queue is
//! bounded, its link to the origin may have restarted). After a reconnect,
//! everything unanswered goes again on the new stream. The origin's id memory
//! makes every copy harmless.
//!
//! The timeout adapts to the measured ack round trip (RFC 6298 style:
//! smoothed RTT plus four deviations, with a floor so that a copy arriving a
//! few milliseconds late does not trip it), counting only actions acked on
//! their first datagram (Karn's rule). A timeout doubles the next timeouts
//! until a valid sample arrives (RFC 6298 §5.5), and a new connection starts
//! the estimate afresh: a path 10 ms longer must not look lost forever.
//!
//! Three bounds keep a burst (a "combo" of hundreds of gifts) from turning
//! into a flood, and every action from waiting for ever:
//! - **Window**: at most [`Policy::window`] actions are on the wire (sent,
//!   with no answer yet) at once; the rest wait here, oldest first.
//! - **Throttled**: the relay did not forward an action because its user is
//!   over the rate. Not an outcome: the action waits here and goes again,
//!   same id, no sooner than the `retry_after` the relay gave (plus jitter).
//!   The whole client then paces itself: nothing new goes out before that
//!   hold ends, then one action per interval — the relay's token interval,
//!   learnt AIMD-style: it starts at the `retry_after` given, grows by a
//!   quarter (at most once per interval) on each further Throttled and
//!   shrinks by 1/128 on each outcome — until nothing waits and
//!   [`PACE_QUIET`] has passed without a Throttled.
//! - **Deadline**: every action has one. When it passes with no outcome the
//!   action leaves ([`Retry::poll_expired`]) saying whether the rate limit
//!   was what held it ([`Expiry::Throttled`]) or no answer came
//!   ([`Expiry::NoAnswer`]); nothing is sent for it again. While pacing,
//!   an action held by the rate with less than a retransmission timeout
//!   left is not started at all: it waits for its deadline and leaves as
//!   `Throttled` (not applied) rather than as `NoAnswer` (unknown).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol::message::ActionMsg;
use protocol::ActionId;

use crate::time::later;

/// How an action should go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// As a datagram.
    Datagram,
    /// On the reliable control stream.
    Stream,
}

/// Smoothed round-trip estimate and the timeout derived from it.
#[derive(Debug, Clone, Copy)]
pub struct Rtt {
    srtt: Option<f64>,
    rttvar: f64,
    min: Duration,
    max: Duration,
    initial: Duration,
    /// Doubles on every timeout, back to 1 on a valid sample.
    backoff: u32,
}

impl Rtt {
    /// Timeouts clamped to `[min, max]`, `initial` before any sample.
    pub fn new(min: Duration, max: Duration, initial: Duration) -> Self {
        Rtt {
            srtt: None,
            rttvar: 0.0,
            min,
            max,
            initial,
            backoff: 1,
        }
    }

    /// Add a sample (it also ends any backoff).
    pub fn handle_sample(&mut self, rtt: Duration) {
        self.backoff = 1;
        let r = rtt.as_secs_f64();
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2.0;
            }
            Some(s) => {
                self.rttvar = 0.75 * self.rttvar + 0.25 * (s - r).abs();
                self.srtt = Some(0.875 * s + 0.125 * r);
            }
        }
    }

    /// A timeout fired: wait twice as long next time, until a sample comes.
    pub fn handle_timeout(&mut self) {
        self.backoff = (self.backoff * 2).min(64);
    }

    /// Start afresh (a new path).
    pub fn reset(&mut self) {
        self.srtt = None;
        self.rttvar = 0.0;
        self.backoff = 1;
    }

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_secs_f64)
    }

    /// The retransmission timeout: smoothed RTT plus the larger of four
    /// deviations, a quarter RTT and 5 ms; times the backoff.
    pub fn rto(&self) -> Duration {
        let base = match self.srtt {
            None => self.initial.as_secs_f64(),
            Some(s) => s + (4.0 * self.rttvar).max(s / 4.0).max(0.005),
        };
        Duration::from_secs_f64(base * f64::from(self.backoff)).clamp(self.min, self.max)
    }
}

/// The first copy's delay by default: an isolated loss costs this much.
pub const COPY_DELAY: Duration = Duration::from_millis(8);
/// The second copy's delay (from the first send) by default: past a burst
/// of several packets on a busy shared hop (a few milliseconds at a
/// thousand packets a second), yet well inside a round trip.
pub const SECOND_COPY_DELAY: Duration = Duration::from_millis(16);
/// The third copy's delay (from the first send) by default: past a long
/// burst, and still sooner than the stream fallback (a retransmission
/// timeout, then a stream round trip). Measured in the bursty-loss scenario
/// (README, "Under bad networks").
pub const THIRD_COPY_DELAY: Duration = Duration::from_millis(32);
/// Copy datagrams an action may have.
pub const MAX_COPIES: usize = 3;
/// After a lost packet, the path counts as lossy this long: actions sent
/// meanwhile get all their copies (the relay's rule for its own copies).
pub const LOSSY_FOR: Duration = Duration::from_secs(5);

/// The first stream resend of an unanswered action waits at least this long,
/// or twice the retransmission timeout if that is longer.
pub const STREAM_RESEND_MIN: Duration = Duration::from_millis(500);
/// Stream resends back off (doubling) up to this interval.
pub const STREAM_RESEND_MAX: Duration = Duration::from_secs(4);
/// Pacing ends once nothing waits and no Throttled came for this long.
pub const PACE_QUIET: Duration = Duration::from_secs(1);

/// The retry policy's settings.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Send a copy datagram this long after the first; `None`: once (no
    /// copies at all).
    pub copy_delay: Option<Duration>,
    /// Send a second copy datagram this long after the first send (with
    /// [`Policy::copy_delay`] set); `None`: one copy.
    pub second_copy_delay: Option<Duration>,
    /// Send a third copy datagram this long after the first send (with the
    /// second set); `None`: two copies at most.
    pub third_copy_delay: Option<Duration>,
    /// Whether to use datagrams at all; off, every send goes on the stream.
    pub datagrams: bool,
    /// Most actions on the wire (sent, no answer yet) at once; at least 1.
    pub window: usize,
    /// Seeds the jitter (the session id: clients differ, runs repeat).
    pub seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            copy_delay: Some(COPY_DELAY),
            second_copy_delay: Some(SECOND_COPY_DELAY),
            third_copy_delay: Some(THIRD_COPY_DELAY),
            datagrams: true,
            window: 32,
            seed: 1,
        }
    }
}

/// One send of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The action (same id every time).
    pub msg: ActionMsg,
    /// How it goes.
    pub path: Path,
    /// Its datagrams went unanswered: this is the first stream fallback.
    pub fallback: bool,
}

/// Why an action left without an outcome at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The rate limit held it back when the deadline passed: the relay's
    /// last word on it was Throttled (it was not forwarded on that try), or
    /// it was waiting its turn while the client paced itself to the rate.
    Throttled,
    /// It was on the wire with no answer, or waiting behind earlier
    /// unanswered actions (the window): whether it was applied is unknown.
    NoAnswer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting here: not before `not_before` (a Throttled's hold; its
    /// arrival otherwise), and only when the window and the pacing allow.
    Queued { not_before: Instant },
    /// Sent, no answer yet.
    Wire {
        /// When the copy datagrams are due, those still owed.
        copy_at: [Option<Instant>; MAX_COPIES],
        /// When it goes (again) on the stream.
        resend_at: Instant,
        /// Stream resends so far.
        resends: u32,
        /// Whether it is on the stream already (the next resend is no fallback).
        on_stream: bool,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    msg: ActionMsg,
    critical: bool,
    /// First actual send.
    first_sent: Option<Instant>,
    /// When it leaves with no outcome.
    deadline: Instant,
    stage: Stage,
    /// Sent more than once (no RTT sample from its ack).
    retransmitted: bool,
    /// Its next send goes on the stream (it was on the wire at a reconnect).
    stream_next: bool,
    /// Held by the rate too close to its deadline to be answered in time:
    /// never sent again, it waits for its deadline.
    parked: bool,
}

/// The client pacing itself after a Throttled (`None`s before the first).
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    /// Nothing is released before this.
    hold_until: Option<Instant>,
    /// While pacing: one release per this, the longest retry-after seen.
    interval: Option<Duration>,
    /// The next release while pacing.
    next_at: Option<Instant>,
    /// The last Throttled.
    last_throttle: Option<Instant>,
    /// The last time the interval grew: at most once per interval.
    last_increase: Option<Instant>,
}

/// Actions waiting for their outcome: when and how each goes (again).
#[derive(Debug, Clone)]
pub struct Retry {
    entries: BTreeMap<ActionId, Entry>,
    policy: Policy,
    rtt: Rtt,
    pace: Pace,
    rng: u64,
    /// The path lost packets lately: actions get every copy until then.
    lossy_until: Option<Instant>,
}

/// A xorshift step: jitter in `0..=max` (whole µs) without a dependency.
fn jitter(rng: &mut u64, max: Duration) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let max = max.as_micros() as u64;
    if max == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(*rng % (max + 1))
    }
}

/// The gap before stream resend number `k` (from 1): at least twice the
/// timeout and [`STREAM_RESEND_MIN`], doubling, at most [`STREAM_RESEND_MAX`].
fn stream_gap(rto: Duration, k: u32) -> Duration {
    let base = (2 * rto).max(STREAM_RESEND_MIN);
    base.saturating_mul(1 << k.saturating_sub(1).min(16))
        .min(STREAM_RESEND_MAX)
}

impl Retry {
    /// A retry policy.
    pub fn new(policy: Policy, rtt: Rtt) -> Self {
        Retry {
            entries: BTreeMap::new(),
            policy: Policy {
                window: policy.window.max(1),
                ..policy
            },
            rtt,
            pace: Pace::default(),
            rng: policy.seed | 1,
            lossy_until: None,
        }
    }

    /// The connection reported a lost packet: for [`LOSSY_FOR`] from `now`,
    /// actions get every copy of the policy, not only the first.
    pub fn handle_path_loss(&mut self, now: Instant) {
        self.lossy_until = Some(later(now, LOSSY_FOR));
    }

    /// The RTT estimate.
    pub fn rtt(&self) -> &Rtt {
        &self.rtt
    }

    /// Actions waiting for an outcome (on the wire or here).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Actions sent with no answer yet.
    pub fn on_wire(&self) -> usize {
        (self.entries.values())
            .filter(|e| matches!(e.stage, Stage::Wire { .. }))
            .count()
    }

    /// Forget every action (the session ended; their futures were answered).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Whether the client is pacing itself after a Throttled.
    pub fn is_pacing(&self) -> bool {
        self.pace.interval.is_some()
    }

    /// A new action, to leave with no outcome at `deadline`. It goes
    /// out from [`Retry::poll_transmit`] as soon as the window and the
    /// pacing allow (at once, usually).
    pub fn handle_send(&mut self, now: Instant, msg: ActionMsg, deadline: Instant) {
        self.end_pacing(now);
        let entry = Entry {
            critical: msg.action.class().is_critical(),
            first_sent: None,
            deadline,
            stage: Stage::Queued { not_before: now },
            retransmitted: false,
            stream_next: false,
            parked: false,
            msg,
        };
        self.entries.insert(entry.msg.id, entry);
    }

    /// An outcome came: forget the action. Returns its first send time.
    pub fn handle_ack(&mut self, now: Instant, id: ActionId) -> Option<Instant> {
        let e = self.entries.remove(&id)?;
        if let Some(i) = &mut self.pace.interval {
            *i = (*i - *i / 128).max(Duration::from_millis(1));
        }
        if let (false, Some(first)) = (e.retransmitted, e.first_sent) {
            self.rtt.handle_sample(now.saturating_duration_since(first));
        }
        e.first_sent
    }

    /// The relay did not forward `id` (its user is over the rate): hold it,
    /// and every other action, for `retry_after` plus jitter, then pace.
    /// Returns whether this was news: the action was on the wire (a second
    /// answer to the same send, or one for an action already resolved,
    /// returns `false`).
    pub fn handle_throttled(&mut self, now: Instant, id: ActionId, retry_after: Duration) -> bool {
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        let r = retry_after.max(Duration::from_millis(1));
        let until = later(now, r) + jitter(&mut self.rng, r / 4);
        let p = &mut self.pace;
        p.hold_until = p.hold_until.max(Some(until));
        p.next_at = p.next_at.max(p.hold_until);
        p.last_throttle = Some(now);
        match e.stage {
            // A second answer to a send already held (the relay answers
            // twice): it says nothing new about the rate.
            Stage::Queued { not_before } => {
                e.stage = Stage::Queued {
                    not_before: not_before.max(until),
                };
                return false;
            }
            Stage::Wire { .. } => e.stage = Stage::Queued { not_before: until },
        }
        e.retransmitted = true;
        p.interval = Some(match p.interval {
            None => {
                p.last_increase = Some(now);
                r
            }
            Some(i) if p.last_increase.is_none_or(|t| now >= later(t, i)) => {
                p.last_increase = Some(now);
                (i + i / 4).max(r)
            }
            Some(i) => i.max(r),
        });
        true
    }

    /// A new connection: everything on the wire goes again, on the stream
    /// (within the window), and the round-trip estimate starts afresh for
    /// the new path. Actions held by a Throttled keep their hold.
    pub fn handle_reconnect(&mut self, now: Instant) {
        self.rtt.reset();
        for e in self.entries.values_mut() {
            if matches!(e.stage, Stage::Wire { .. }) {
                e.stage = Stage::Queued { not_before: now };
                e.stream_next = true;
                e.retransmitted = true;
            }
        }
    }

    /// What must go out now: copies, fallbacks and resends of what is on the
    /// wire, then waiting actions as the window and the pacing allow.
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<Transmit> {
        let mut out = Vec::new();
        let rto = self.rtt.rto();
        let mut timeouts = 0;
        for e in self.entries.values_mut() {
            let Stage::Wire {
                copy_at,
                resend_at,
                resends,
                on_stream,
            } = &mut e.stage
            else {
                continue;
            };
            for c in copy_at.iter_mut() {
                if c.is_some_and(|t| t <= now) {
                    *c = None;
                    out.push(Transmit {
                        msg: e.msg.clone(),
                        path: Path::Datagram,
                        fallback: false,
                    });
                }
            }
            if *resend_at <= now {
                let fallback = !*on_stream;
                timeouts += usize::from(fallback);
                *copy_at = [None; MAX_COPIES];
                *on_stream = true;
                *resends += 1;
                *resend_at = later(now, stream_gap(rto, *resends));
                e.retransmitted = true;
                out.push(Transmit {
                    msg: e.msg.clone(),
                    path: Path::Stream,
                    fallback,
                });
            }
        }
        // One backoff step per round of timeouts, not one per action.
        if timeouts > 0 {
            self.rtt.handle_timeout();
        }
        self.release(now, &mut out);
        out
    }

    /// When the copies of an action first sent at `now` are due.
    fn copies_from(&self, now: Instant) -> [Option<Instant>; MAX_COPIES] {
        let mut at = [None; MAX_COPIES];
        // On a path that has lost nothing lately, one copy is insurance
        // enough; the later ones are for bursts of losses.
        let lossy = self.lossy_until.is_some_and(|t| now < t);
        let later_copies = |d: Option<Duration>| d.filter(|_| lossy);
        let delays = [
            self.policy.copy_delay,
            later_copies(self.policy.second_copy_delay),
            later_copies(self.policy.third_copy_delay),
        ];
        // Each copy needs the one before it, and comes later than it.
        let mut last = Duration::ZERO;
        for (slot, delay) in at.iter_mut().zip(delays) {
            match delay {
                Some(d) if d > last => {
                    *slot = Some(later(now, d));
                    last = d;
                }
                _ => break,
            }
        }
        at
    }

    /// Send waiting actions, oldest first, as the hold, the window and the
    /// pacing allow.
    fn release(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.end_pacing(now);
        let queued = self.entries.len() - self.on_wire();
        let copies = self.copies_from(now);
        let p = &mut self.pace;
        if queued == 0 || p.hold_until.is_some_and(|t| now < t) {
            return;
        }
        let rto = self.rtt.rto();
        let mut wire = self.entries.len() - queued;
        for e in self.entries.values_mut() {
            if wire >= self.policy.window {
                break;
            }
            let Stage::Queued { not_before } = e.stage else {
                continue;
            };
            if not_before > now || e.parked {
                continue;
            }
            // Paced, one that could not be answered before its deadline is
            // not started: it is parked until then, and leaves as
            // `Throttled` (not applied) rather than `NoAnswer` (unknown).
            if p.interval.is_some() && e.deadline < later(now, rto) {
                e.parked = true;
                continue;
            }
            if let Some(interval) = p.interval {
                if p.next_at.is_some_and(|t| now < t) {
                    break;
                }
                p.next_at = Some(later(now, interval) + jitter(&mut self.rng, interval / 10));
            }
            let path = if self.policy.datagrams && !e.stream_next {
                Path::Datagram
            } else {
                Path::Stream
            };
            e.stream_next = false;
            match e.first_sent {
                None => e.first_sent = Some(now),
                Some(_) => e.retransmitted = true,
            }
            e.stage = match path {
                Path::Datagram => Stage::Wire {
                    copy_at: copies,
                    resend_at: later(now, rto),
                    resends: 0,
                    on_stream: false,
                },
                Path::Stream => Stage::Wire {
                    copy_at: [None; MAX_COPIES],
                    resend_at: later(now, stream_gap(rto, 1)),
                    resends: 0,
                    on_stream: true,
                },
            };
            wire += 1;
            out.push(Transmit {
                msg: e.msg.clone(),
                path,
                fallback: false,
            });
        }
    }

    /// Pacing ends once nothing waits here and the relay has been quiet for
    /// [`PACE_QUIET`] (while actions wait, a pace that works hears nothing).
    fn end_pacing(&mut self, now: Instant) {
        let waiting = (self.entries.values()).any(|e| matches!(e.stage, Stage::Queued { .. }));
        let quiet = (self.pace.last_throttle).is_none_or(|t| now >= t + PACE_QUIET);
        if !waiting && quiet {
            self.pace.interval = None;
        }
    }

    /// Actions whose deadline has passed, and why: they are forgotten and
    /// nothing is sent for them again.
    pub fn poll_expired(&mut self, now: Instant) -> Vec<(ActionId, Expiry)> {
        let due: Vec<ActionId> = (self.entries.iter())
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let pacing = self.is_pacing();
        let mut out = Vec::with_capacity(due.len());
        for id in due {
            let Some(e) = self.entries.remove(&id) else {
                continue;
            };
            let why = match e.stage {
                Stage::Queued { .. } if pacing => Expiry::Throttled,
                _ => Expiry::NoAnswer,
            };
            out.push((id, why));
        }
        out
    }

    /// When [`Retry::poll_transmit`] or [`Retry::poll_expired`] next has
    /// something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.poll_deadline();
        let mut wire = 0;
        let mut queued: Option<Instant> = None;
        for e in self.entries.values() {
            match e.stage {
                Stage::Wire {
                    copy_at, resend_at, ..
                } => {
                    wire += 1;
                    let t = (copy_at.iter().flatten()).fold(resend_at, |t, c| t.min(*c));
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                // A parked one only waits for its deadline.
                Stage::Queued { .. } if e.parked => {}
                Stage::Queued { not_before } => {
                    queued = Some(queued.map_or(not_before, |q| q.min(not_before)));
                }
            }
        }
        if let Some(q) = queued.filter(|_| wire < self.policy.window) {
            let mut t = q.max(self.pace.hold_until.unwrap_or(q));
            if self.pace.interval.is_some() {
                t = t.max(self.pace.next_at.unwrap_or(t));
            }
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    /// The next deadline only (what matters while there is no connection).
    pub fn poll_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.deadline).min()
    }

    /// Whether an action is critical (for callers that report).
    pub fn is_critical(&self, id: ActionId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.critical)
    }
}

#[cfg(test)]
mod tests;
