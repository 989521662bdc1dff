//! When to send an action again, and how (pure: takes `now`, does no IO).
//!
//! An action goes first as a datagram, and again as a second datagram a few
//! milliseconds later, so one lost packet costs nothing (an action is one
//! small packet from one user: the copy is cheap). If no ack comes within the
//! retransmission timeout, it goes on the reliable control stream. After a
//! reconnect, everything unacknowledged goes again on the new stream. The
//! origin's id memory makes every copy harmless.
//!
//! The timeout adapts to the measured ack round trip (RFC 6298 style:
//! smoothed RTT plus four deviations, with a floor so that a copy arriving a
//! few milliseconds late does not trip it), counting only actions acked on
//! their first datagram (Karn's rule). A timeout doubles the next timeouts
//! until a valid sample arrives (RFC 6298 §5.5), and a new connection starts
//! the estimate afresh: a path 10 ms longer must not look lost forever.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::message::ActionMsg;
use protocol::ActionId;

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

#[derive(Debug, Clone)]
struct Entry {
    msg: ActionMsg,
    critical: bool,
    first_sent: u64,
    /// When the copy datagram is due (µs), if one is still owed.
    copy_at: Option<u64>,
    /// When it falls back to the stream (µs), unless already there.
    fallback_at: Option<u64>,
    /// Sent more than once (no RTT sample from its ack).
    retransmitted: bool,
}

/// Actions sent and not yet acknowledged.
#[derive(Debug, Clone)]
pub struct Retry {
    entries: BTreeMap<ActionId, Entry>,
    copy_delay: Option<u64>,
    rtt: Rtt,
}

impl Retry {
    /// A retry policy; critical actions get a copy after `copy_delay_us`.
    pub fn new(copy_delay_us: Option<u64>, rtt: Rtt) -> Self {
        Retry {
            entries: BTreeMap::new(),
            copy_delay: copy_delay_us,
            rtt,
        }
    }

    /// The RTT estimate.
    pub fn rtt(&self) -> &Rtt {
        &self.rtt
    }

    /// Actions waiting for an ack.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A new action: send it now as a datagram.
    pub fn handle_send(&mut self, now: u64, msg: ActionMsg) -> (ActionMsg, Path) {
        let critical = msg.action.class().is_critical();
        let rto = self.rtt.rto().as_micros() as u64;
        let entry = Entry {
            critical,
            first_sent: now,
            copy_at: self.copy_delay.map(|d| now + d),
            fallback_at: Some(now + rto),
            retransmitted: false,
            msg: msg.clone(),
        };
        self.entries.insert(msg.id, entry);
        (msg, Path::Datagram)
    }

    /// The action went on the reliable stream straight away (no datagrams on
    /// this path): nothing more to send until a reconnect.
    pub fn mark_reliable(&mut self, id: ActionId) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.copy_at = None;
            e.fallback_at = None;
        }
    }

    /// An ack came: forget the action. Returns its first send time.
    pub fn handle_ack(&mut self, now: u64, id: ActionId) -> Option<u64> {
        let e = self.entries.remove(&id)?;
        if !e.retransmitted {
            self.rtt
                .handle_sample(Duration::from_micros(now.saturating_sub(e.first_sent)));
        }
        Some(e.first_sent)
    }

    /// A new connection: everything unacknowledged goes again, on the stream,
    /// and the round-trip estimate starts afresh for the new path.
    pub fn handle_reconnect(&mut self) -> Vec<ActionMsg> {
        self.rtt.reset();
        for e in self.entries.values_mut() {
            e.copy_at = None;
            e.fallback_at = None;
            e.retransmitted = true;
        }
        self.entries.values().map(|e| e.msg.clone()).collect()
    }

    /// What must go out now.
    pub fn poll_transmit(&mut self, now: u64) -> Vec<(ActionMsg, Path)> {
        let mut out = Vec::new();
        let mut timeouts = 0;
        for e in self.entries.values_mut() {
            if e.copy_at.is_some_and(|t| t <= now) {
                e.copy_at = None;
                out.push((e.msg.clone(), Path::Datagram));
            }
            if e.fallback_at.is_some_and(|t| t <= now) {
                e.fallback_at = None;
                e.copy_at = None;
                e.retransmitted = true;
                timeouts += 1;
                out.push((e.msg.clone(), Path::Stream));
            }
        }
        // One backoff step per round of timeouts, not one per action.
        if timeouts > 0 {
            self.rtt.handle_timeout();
        }
        out
    }

    /// When [`Retry::poll_transmit`] next has something.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.entries.values())
            .flat_map(|e| [e.copy_at, e.fallback_at])
            .flatten()
            .min()
    }

    /// Whether an action is critical (for callers that report).
    pub fn is_critical(&self, id: ActionId) -> bool {
        self.entries.get(&id).is_some_and(|e| e.critical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Action, GiftId, RoomId, ServerTime, SessionId};

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

    fn retry() -> Retry {
        let rtt = Rtt::new(
            Duration::from_millis(10),
            Duration::from_secs(1),
            Duration::from_millis(100),
        );
        Retry::new(Some(4_000), rtt)
    }

    #[test]
    fn a_gift_goes_twice_then_falls_back_to_the_stream() {
        let mut r = retry();
        assert_eq!(r.handle_send(0, gift(1)).1, Path::Datagram);
        assert_eq!(r.poll_timeout(), Some(4_000));
        assert!(r.poll_transmit(3_999).is_empty());
        assert_eq!(
            r.poll_transmit(4_000)
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>(),
            vec![Path::Datagram]
        );
        assert_eq!(r.poll_timeout(), Some(100_000));
        assert_eq!(
            r.poll_transmit(100_000)
                .iter()
                .map(|(_, p)| *p)
                .collect::<Vec<_>>(),
            vec![Path::Stream]
        );
        // On the stream it is reliable: nothing more until a reconnect.
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_reconnect().len(), 1);
    }

    #[test]
    fn a_chat_goes_twice_too() {
        let mut r = retry();
        r.handle_send(0, msg(1, Action::Chat { text: "hi".into() }));
        assert_eq!(r.poll_timeout(), Some(4_000));
    }

    #[test]
    fn timeouts_back_off_until_a_sample_and_a_new_path_starts_afresh() {
        let mut r = retry();
        r.handle_send(0, gift(1));
        r.handle_ack(10_000, gift(1).id);
        let base = r.rtt().rto();
        r.handle_send(20_000, gift(2));
        r.poll_transmit(20_000 + base.as_micros() as u64);
        assert_eq!(r.rtt().rto(), base * 2);
        r.handle_send(200_000, gift(3));
        r.handle_ack(210_000, gift(3).id);
        assert!(r.rtt().rto() <= base, "a valid sample ends the backoff");
        r.handle_reconnect();
        assert_eq!(
            r.rtt().rto(),
            Duration::from_millis(100),
            "a new path starts from the initial timeout"
        );
    }

    #[test]
    fn the_timeout_follows_measured_round_trips_but_not_retransmissions() {
        let mut r = retry();
        r.handle_send(0, gift(1));
        assert_eq!(r.handle_ack(20_000, gift(1).id), Some(0));
        // srtt 20 ms, rttvar 10 ms: rto 20 + max(40, 5, 5) = 60 ms.
        assert_eq!(r.rtt().rto(), Duration::from_millis(60));
        r.handle_send(100_000, gift(2));
        r.poll_transmit(1_000_000);
        // The timeout backs off; the ack of a retransmitted action is no
        // sample (Karn), so it neither skews the estimate nor ends the backoff.
        assert_eq!(r.rtt().rto(), Duration::from_millis(120));
        r.handle_ack(2_000_000, gift(2).id);
        assert_eq!(r.rtt().rto(), Duration::from_millis(120));
    }
}
