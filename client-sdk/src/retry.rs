//! When to send an action again, and how (pure: takes `now`, does no IO).
//!
//! An action goes first as a datagram; a critical one (gift, authority) also
//! as a second datagram a few milliseconds later, so one lost packet costs
//! nothing. If no ack comes within the retransmission timeout, it goes on the
//! reliable control stream. After a reconnect, everything unacknowledged goes
//! again on the new stream. The origin's id memory makes every copy harmless.
//!
//! The timeout adapts to the measured ack round trip (RFC 6298 style: smoothed
//! RTT plus four deviations), counting only actions acked on their first
//! datagram so that retransmissions never skew it (Karn's rule).

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
        }
    }

    /// Add a sample.
    pub fn handle_sample(&mut self, rtt: Duration) {
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

    /// The smoothed round trip, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_secs_f64)
    }

    /// The retransmission timeout.
    pub fn rto(&self) -> Duration {
        match self.srtt {
            None => self.initial,
            Some(s) => Duration::from_secs_f64(s + (4.0 * self.rttvar).max(0.001))
                .clamp(self.min, self.max),
        }
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
            copy_at: self.copy_delay.filter(|_| critical).map(|d| now + d),
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

    /// A new connection: everything unacknowledged goes again, on the stream.
    pub fn handle_reconnect(&mut self) -> Vec<ActionMsg> {
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
        for e in self.entries.values_mut() {
            if e.copy_at.is_some_and(|t| t <= now) {
                e.copy_at = None;
                out.push((e.msg.clone(), Path::Datagram));
            }
            if e.fallback_at.is_some_and(|t| t <= now) {
                e.fallback_at = None;
                e.copy_at = None;
                e.retransmitted = true;
                out.push((e.msg.clone(), Path::Stream));
            }
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
    fn a_chat_goes_once_before_the_fallback() {
        let mut r = retry();
        r.handle_send(0, msg(1, Action::Chat { text: "hi".into() }));
        assert_eq!(r.poll_timeout(), Some(100_000));
    }

    #[test]
    fn the_timeout_follows_measured_round_trips_but_not_retransmissions() {
        let mut r = retry();
        r.handle_send(0, gift(1));
        assert_eq!(r.handle_ack(20_000, gift(1).id), Some(0));
        // srtt 20 ms, rttvar 10 ms: rto 60 ms.
        assert_eq!(r.rtt().rto(), Duration::from_millis(60));
        r.handle_send(100_000, gift(2));
        r.poll_transmit(1_000_000);
        r.handle_ack(2_000_000, gift(2).id);
        assert_eq!(r.rtt().rto(), Duration::from_millis(60));
    }
}
