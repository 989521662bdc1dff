//! When to send an action again, and how (pure: takes `now`, does no IO).
//!
//! An action goes first as a datagram, and again as a second datagram a few
//! milliseconds later, so one lost packet costs nothing (an action is one
//! small packet from one user: the copy is cheap). If no answer comes within
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
    /// Send a copy datagram this long after the first; `None`: once.
    pub copy_delay: Option<Duration>,
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
            copy_delay: Some(Duration::from_millis(4)),
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
        /// When the copy datagram is due, if one is still owed.
        copy_at: Option<Instant>,
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
        }
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
            if copy_at.is_some_and(|t| t <= now) {
                *copy_at = None;
                out.push(Transmit {
                    msg: e.msg.clone(),
                    path: Path::Datagram,
                    fallback: false,
                });
            }
            if *resend_at <= now {
                let fallback = !*on_stream;
                timeouts += usize::from(fallback);
                *copy_at = None;
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

    /// Send waiting actions, oldest first, as the hold, the window and the
    /// pacing allow.
    fn release(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.end_pacing(now);
        let queued = self.entries.len() - self.on_wire();
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
                    copy_at: self.policy.copy_delay.map(|d| later(now, d)),
                    resend_at: later(now, rto),
                    resends: 0,
                    on_stream: false,
                },
                Path::Stream => Stage::Wire {
                    copy_at: None,
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
                    let t = copy_at.map_or(resend_at, |c| c.min(resend_at));
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
mod tests {
    use super::*;
    use crate::time::virtual_clock::{at_us as local, us};
    use protocol::{Action, GiftId, RoomId, ServerTime, SessionId};

    /// A deadline no test reaches: an hour on the virtual clock.
    const NEVER: u64 = 3_600_000_000;

    /// The next timeout, in µs.
    fn next(r: &Retry) -> Option<u64> {
        r.poll_timeout().map(us)
    }

    fn msg(n: u64, action: Action) -> ActionMsg {
        ActionMsg {
            id: ActionId {
                session: SessionId(1),
                n,
            },
            room: RoomId(1),
            sent_at: ServerTime(0),
            action,
        }
    }

    fn gift(n: u64) -> ActionMsg {
        msg(
            n,
            Action::Gift {
                gift: GiftId(1),
                count: 1,
            },
        )
    }

    fn id(n: u64) -> ActionId {
        gift(n).id
    }

    fn rtt() -> Rtt {
        Rtt::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_millis(100),
        )
    }

    fn retry() -> Retry {
        Retry::new(
            Policy {
                copy_delay: Some(Duration::from_millis(4)),
                datagrams: true,
                window: 32,
                seed: 7,
            },
            rtt(),
        )
    }

    fn paths(t: &[Transmit]) -> Vec<Path> {
        t.iter().map(|t| t.path).collect()
    }

    #[test]
    fn a_gift_goes_twice_then_falls_back_and_keeps_resending_on_the_stream() {
        let mut r = retry();
        r.handle_send(local(0), gift(1), local(NEVER));
        assert_eq!(paths(&r.poll_transmit(local(0))), vec![Path::Datagram]);
        assert_eq!(next(&r), Some(4_000));
        assert!(r.poll_transmit(local(3_999)).is_empty());
        assert_eq!(paths(&r.poll_transmit(local(4_000))), vec![Path::Datagram]);
        assert_eq!(next(&r), Some(100_000));
        let fb = r.poll_transmit(local(100_000));
        assert_eq!(paths(&fb), vec![Path::Stream]);
        assert!(fb[0].fallback);
        // No answer on the stream either (a relay may have dropped it): it
        // goes again, at a backed-off interval, for as long as nothing comes.
        let mut at = 100_000;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let next = next(&r).expect("a resend is due");
            let sent = r.poll_transmit(local(next));
            assert_eq!(paths(&sent), vec![Path::Stream]);
            assert!(!sent[0].fallback, "only the first is a fallback");
            assert_eq!(sent[0].msg.id, id(1), "same id every time");
            gaps.push(next - at);
            at = next;
        }
        assert_eq!(
            gaps,
            vec![500_000, 1_000_000, 2_000_000, 4_000_000, 4_000_000]
        );
        // An answer ends it.
        r.handle_ack(local(at), id(1));
        assert_eq!(next(&r), None);
    }

    #[test]
    fn a_chat_goes_twice_too() {
        let mut r = retry();
        r.handle_send(
            local(0),
            msg(1, Action::Chat { text: "hi".into() }),
            local(NEVER),
        );
        r.poll_transmit(local(0));
        assert_eq!(next(&r), Some(4_000));
    }

    #[test]
    fn timeouts_back_off_until_a_sample_and_a_new_path_starts_afresh() {
        let mut r = retry();
        r.handle_send(local(0), gift(1), local(NEVER));
        r.poll_transmit(local(0));
        r.handle_ack(local(10_000), id(1));
        let base = r.rtt().rto();
        r.handle_send(local(0), gift(2), local(NEVER));
        r.poll_transmit(local(20_000));
        r.poll_transmit(local(20_000 + base.as_micros() as u64));
        assert_eq!(r.rtt().rto(), base * 2);
        r.handle_send(local(0), gift(3), local(NEVER));
        r.poll_transmit(local(200_000));
        r.handle_ack(local(210_000), id(3));
        assert!(r.rtt().rto() <= base, "a valid sample ends the backoff");
        r.handle_reconnect(local(300_000));
        assert_eq!(
            r.rtt().rto(),
            Duration::from_millis(100),
            "a new path starts from the initial timeout"
        );
    }

    #[test]
    fn the_timeout_follows_measured_round_trips_but_not_retransmissions() {
        let mut r = retry();
        r.handle_send(local(0), gift(1), local(NEVER));
        r.poll_transmit(local(0));
        assert_eq!(r.handle_ack(local(20_000), id(1)), Some(local(0)));
        // srtt 20 ms, rttvar 10 ms: rto 20 + max(40, 5, 5) = 60 ms.
        assert_eq!(r.rtt().rto(), Duration::from_millis(60));
        r.handle_send(local(0), gift(2), local(NEVER));
        r.poll_transmit(local(100_000));
        r.poll_transmit(local(1_000_000));
        // The timeout backs off; the ack of a retransmitted action is no
        // sample (Karn), so it neither skews the estimate nor ends the backoff.
        assert_eq!(r.rtt().rto(), Duration::from_millis(120));
        r.handle_ack(local(2_000_000), id(2));
        assert_eq!(r.rtt().rto(), Duration::from_millis(120));
    }

    #[test]
    fn a_throttled_action_waits_its_turn_then_goes_again_with_the_same_id() {
        let mut r = Retry::new(
            Policy {
                copy_delay: None,
                ..Policy::default()
            },
            rtt(),
        );
        r.handle_send(local(0), gift(1), local(NEVER));
        r.poll_transmit(local(0));
        assert!(r.handle_throttled(local(1_000), id(1), Duration::from_millis(20)));
        // No fallback: it waits, and so does everything else.
        r.handle_send(local(0), gift(2), local(NEVER));
        assert!(r.poll_transmit(local(4_000)).is_empty());
        let due = next(&r).expect("it goes again");
        assert!(
            (21_000..=26_000).contains(&due),
            "retry-after plus at most a quarter of jitter, got {due}"
        );
        assert!(r.poll_transmit(local(due - 1)).is_empty());
        let sent = r.poll_transmit(local(due));
        assert_eq!(sent.len(), 1, "paced: one at a time");
        assert_eq!(sent[0].msg.id, id(1), "the oldest first, same id");
        // The next one a token interval later, give or take a tenth.
        let next = next(&r).expect("the next one");
        assert!((due + 20_000..=due + 22_000).contains(&next), "{next}");
        assert_eq!(r.poll_transmit(local(next))[0].msg.id, id(2));
        // Once nothing waits and the relay stays quiet, bursts are free again.
        r.handle_ack(local(next + 1_000), id(1));
        r.handle_ack(local(next + 1_000), id(2));
        let later = next + PACE_QUIET.as_micros() as u64;
        r.handle_send(local(later), gift(3), local(NEVER));
        r.handle_send(local(later), gift(4), local(NEVER));
        assert_eq!(r.poll_transmit(local(later)).len(), 2);
        assert!(!r.is_pacing());
    }

    #[test]
    fn the_window_bounds_what_is_on_the_wire() {
        let mut r = Retry::new(
            Policy {
                window: 4,
                ..Policy::default()
            },
            rtt(),
        );
        for n in 1..=10 {
            r.handle_send(local(0), gift(n), local(NEVER));
        }
        let first = r.poll_transmit(local(0));
        assert_eq!(first.len(), 4);
        assert_eq!(r.on_wire(), 4);
        // Copies are not new actions: they do not take room in the window.
        assert_eq!(r.poll_transmit(local(4_000)).len(), 4);
        r.handle_ack(local(5_000), id(2));
        let next = r.poll_transmit(local(5_000));
        assert_eq!(next.iter().map(|t| t.msg.id).collect::<Vec<_>>(), [id(5)]);
        // A Throttled answer frees its place too.
        r.handle_throttled(local(6_000), id(1), Duration::from_millis(5));
        assert!(r.poll_transmit(local(6_000)).is_empty(), "held");
    }

    #[test]
    fn every_action_leaves_at_its_deadline_saying_why() {
        let mut r = retry();
        r.handle_send(local(0), gift(1), local(1_000_000));
        r.handle_send(local(0), gift(2), local(1_000_000));
        r.handle_send(local(0), gift(3), local(2_000_000));
        r.poll_transmit(local(0));
        r.handle_throttled(local(1_000), id(2), Duration::from_secs(5));
        assert_eq!(next(&r), Some(4_000), "the copies are first");
        r.poll_transmit(local(4_000));
        // Nothing answers gift 1; gift 2 is held past its deadline.
        let mut seen = Vec::new();
        for _ in 0..20 {
            let Some(t) = next(&r) else { break };
            r.poll_transmit(local(t));
            seen.extend(r.poll_expired(local(t)).into_iter().map(|(i, w)| (t, i, w)));
        }
        assert_eq!(
            seen,
            vec![
                (1_000_000, id(1), Expiry::NoAnswer),
                (1_000_000, id(2), Expiry::Throttled),
                (2_000_000, id(3), Expiry::NoAnswer),
            ]
        );
        assert!(r.is_empty());
        assert_eq!(next(&r), None);
    }

    #[test]
    fn paced_an_action_too_close_to_its_deadline_is_not_started() {
        let mut r = retry();
        r.handle_send(local(0), gift(1), local(NEVER));
        r.handle_send(local(0), gift(2), local(100_000));
        r.poll_transmit(local(0));
        r.handle_throttled(local(1_000), id(1), Duration::from_millis(20));
        r.handle_throttled(local(1_000), id(2), Duration::from_millis(20));
        // Gift 1 goes again; gift 2's turn comes with less than the 100 ms
        // timeout left before its deadline: it is not sent again.
        let mut sent = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let Some(t) = next(&r) else { break };
            assert!(t <= 100_000, "no wake-up after the last deadline: {t}");
            sent.extend(r.poll_transmit(local(t)).into_iter().map(|x| x.msg.id));
            seen.extend(r.poll_expired(local(t)));
            if !seen.is_empty() {
                break;
            }
        }
        assert_eq!(sent.first(), Some(&id(1)));
        assert!(!sent.contains(&id(2)), "{sent:?}");
        assert_eq!(seen, vec![(id(2), Expiry::Throttled)]);
    }

    #[test]
    fn a_reconnect_sends_what_was_on_the_wire_again_on_the_stream() {
        let mut r = Retry::new(
            Policy {
                window: 2,
                ..Policy::default()
            },
            rtt(),
        );
        for n in 1..=3 {
            r.handle_send(local(0), gift(n), local(NEVER));
        }
        r.poll_transmit(local(0));
        r.handle_reconnect(local(50_000));
        let again = r.poll_transmit(local(50_000));
        assert_eq!(
            again.iter().map(|t| (t.msg.id, t.path)).collect::<Vec<_>>(),
            vec![(id(1), Path::Stream), (id(2), Path::Stream)],
            "once each, oldest first, within the window"
        );
        r.handle_ack(local(51_000), id(1));
        // One that never went out goes as a datagram, as usual.
        assert_eq!(paths(&r.poll_transmit(local(51_000))), vec![Path::Datagram]);
    }

    /// A relay's rate limit in miniature: a token bucket per client, copies
    /// of a forwarded action are free, an ack `ack_us` after forwarding, a
    /// Throttled (with the bucket's wait) `ack_us / 2` after a refusal.
    struct Relay {
        rate: f64,
        tokens: f64,
        burst: f64,
        at: u64,
        forwarded: std::collections::BTreeSet<ActionId>,
        answers: BTreeMap<(u64, u64), (ActionId, Option<Duration>)>,
        seq: u64,
        messages: u64,
        throttles: u64,
    }

    impl Relay {
        fn new(rate: f64, burst: f64) -> Relay {
            Relay {
                rate,
                tokens: burst,
                burst,
                at: 0,
                forwarded: Default::default(),
                answers: BTreeMap::new(),
                seq: 0,
                messages: 0,
                throttles: 0,
            }
        }

        fn handle(&mut self, now: u64, t: &Transmit) {
            const ACK_US: u64 = 2_000;
            self.messages += 1;
            self.seq += 1;
            let id = t.msg.id;
            if self.forwarded.contains(&id) {
                self.answers.insert((now + ACK_US, self.seq), (id, None));
                return;
            }
            self.tokens = (self.tokens + (now - self.at) as f64 / 1e6 * self.rate).min(self.burst);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                self.forwarded.insert(id);
                self.answers.insert((now + ACK_US, self.seq), (id, None));
            } else {
                self.throttles += 1;
                let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
                self.answers.insert(
                    (now + ACK_US / 2, self.seq),
                    (id, Some(wait.max(Duration::from_millis(1)))),
                );
            }
        }
    }

    #[test]
    fn a_combo_over_the_rate_is_paced_to_it_and_every_action_resolves() {
        // 500 gifts at once against 50 a second with bursts of 100.
        let mut r = Retry::new(Policy::default(), rtt());
        let mut relay = Relay::new(50.0, 100.0);
        let deadline = 30_000_000;
        for n in 1..=500 {
            r.handle_send(local(0), gift(n), local(deadline));
        }
        let (mut now, mut acked, mut expired) = (0u64, 0u64, 0u64);
        let mut steps = 0;
        while !r.is_empty() {
            steps += 1;
            assert!(steps < 100_000, "bounded");
            for t in r.poll_transmit(local(now)) {
                relay.handle(now, &t);
            }
            expired += r.poll_expired(local(now)).len() as u64;
            let answer = relay.answers.keys().next().map(|k| k.0);
            let next = [next(&r), answer].into_iter().flatten().min();
            let Some(next) = next else { break };
            now = now.max(next);
            while let Some(e) = relay.answers.first_entry() {
                if e.key().0 > now {
                    break;
                }
                match e.remove() {
                    (id, None) => acked += u64::from(r.handle_ack(local(now), id).is_some()),
                    (id, Some(wait)) => {
                        r.handle_throttled(local(now), id, wait);
                    }
                }
            }
        }
        assert_eq!((acked, expired), (500, 0), "every gift applied, once");
        // 400 beyond the burst at 50 a second: 8 s, and not much more.
        assert!(now < 9_000_000, "finished at {now} µs");
        // Paced, not hammering: a window's worth of refusals when the burst
        // runs out, a few more while the pace is learnt; far below the
        // relay's message limit (400 a second, bursts of 800).
        assert!(relay.throttles < 64, "{} throttled", relay.throttles);
        assert!(relay.messages < 600, "{} messages", relay.messages);
    }
}
