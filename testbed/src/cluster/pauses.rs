//! What a cluster run's logs say after it: the two-writer verdict and, per
//! failure, how long the rooms it touched paused (see
//! [`super::writers::resume`]), p50/p99 beside the 2 s goal. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use protocol::RoomId;

use super::writers::{resume, served, LogMessage, Resume, WriterReport};

/// The goal: every room a node's death touched resumes within 2 s
/// (p99).
pub const RESUME_GOAL: Duration = Duration::from_secs(2);

/// One failure the timeline played on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFailure {
    /// As the report shows it ("origin node-1 killed").
    pub label: String,
    /// When, Unix nanoseconds (this machine's clock, as JetStream's).
    pub at_ns: i128,
    /// The node whose rooms it took (`None`: a NATS server's death, which
    /// touches every room).
    pub node: Option<String>,
    /// A NATS server's death: the room-log shards whose streams it led,
    /// and how many shards there are (their rooms wait for an election;
    /// the others only for a battle partner on one of them).
    pub led: Option<(Vec<usize>, usize)>,
}

/// How the rooms one failure touched paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailurePauses {
    /// The failure.
    pub failure: ClusterFailure,
    /// Rooms it touched.
    pub touched: usize,
    /// Failure → each touched room's first record after it, sorted.
    pub resumed: Vec<Duration>,
    /// Touched rooms that wrote nothing after it.
    pub never: Vec<RoomId>,
    /// Failure → each touched room's fence by its new owner (served
    /// again), sorted; a node's failure only.
    pub served: Vec<Duration>,
    /// Touched rooms no new owner fenced (a node's failure only).
    pub unserved: usize,
    /// The room whose first record came last, and when.
    pub slowest: Option<(RoomId, Duration)>,
    /// Of `resumed`, the rooms on the streams a dead NATS server led,
    /// sorted (empty unless [`ClusterFailure::led`] says).
    pub on_led: Vec<Duration>,
    /// Of `resumed`, the other rooms, sorted (likewise).
    pub off_led: Vec<Duration>,
}

impl FailurePauses {
    /// The `q` quantile (nearest rank) over every touched room, a room that
    /// never resumed counting as infinitely late; `None` if none touched.
    pub fn quantile(&self, q: f64) -> Option<Option<Duration>> {
        if self.touched == 0 {
            return None;
        }
        let rank = ((q * self.touched as f64).ceil() as usize).clamp(1, self.touched);
        Some(self.resumed.get(rank - 1).copied())
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        let s = |d: Option<Option<Duration>>| match d {
            None => "-".to_owned(),
            Some(None) => "never".to_owned(),
            Some(Some(d)) => format!("{:.2} s", d.as_secs_f64()),
        };
        let mut out = format!("{}: {} rooms touched", self.failure.label, self.touched);
        if self.failure.node.is_some() {
            // Served again: the new owner's fence (the gate's figure).
            let n = self.served.len() + self.unserved;
            let q = |q: f64| {
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
                self.served.get(rank - 1).copied()
            };
            let _ = write!(
                out,
                ", served again (the new owner's fence) p50 {} p99 {} max {} (goal: p99 < {} s)",
                s(Some(q(0.5))),
                s(Some(q(0.99))),
                s(Some(q(1.0))),
                RESUME_GOAL.as_secs()
            );
            if self.unserved > 0 {
                let _ = write!(out, "; {} never served again", self.unserved);
            }
            let _ = write!(
                out,
                "; first record after it p50 {} p99 {}",
                s(self.quantile(0.5)),
                s(self.quantile(0.99)),
            );
            if let Some((room, d)) = self.slowest {
                let _ = write!(out, " (last: {room} at {:.2} s)", d.as_secs_f64());
            }
        } else {
            let _ = write!(
                out,
                ", next record p50 {} p99 {} max {} (a pause; goal: nothing lost)",
                s(self.quantile(0.5)),
                s(self.quantile(0.99)),
                s(self.quantile(1.0)),
            );
            if self.failure.led.is_some() {
                let q = |v: &[Duration], q: f64| {
                    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1));
                    s(Some(v.get(rank - 1).copied()))
                };
                let (on, off) = (&self.on_led, &self.off_led);
                let _ = write!(
                    out,
                    "; on the streams it led {} rooms, p50 {} p99 {}; the others {}, p50 {} p99 {}",
                    on.len(),
                    q(on, 0.5),
                    q(on, 0.99),
                    off.len(),
                    q(off, 0.5),
                    q(off, 0.99),
                );
            }
        }
        if !self.never.is_empty() {
            let _ = write!(out, "; {} never wrote again", self.never.len());
        }
        out
    }
}

/// The pauses of the rooms `failure` touched.
pub fn pauses(rooms: &BTreeMap<RoomId, Vec<LogMessage>>, failure: ClusterFailure) -> FailurePauses {
    let mut out = FailurePauses {
        failure,
        touched: 0,
        resumed: Vec::new(),
        never: Vec::new(),
        served: Vec::new(),
        unserved: 0,
        slowest: None,
        on_led: Vec::new(),
        off_led: Vec::new(),
    };
    let led = out.failure.led.clone();
    for (room, log) in rooms {
        let (at_ns, node) = (out.failure.at_ns, out.failure.node.as_deref());
        let resumed = resume(log, at_ns, node);
        if resumed != Resume::Untouched && node.is_some() {
            match served(log, at_ns, node) {
                Some(d) => out.served.push(d),
                None => out.unserved += 1,
            }
        }
        match resumed {
            Resume::Untouched => continue,
            Resume::After(d) => {
                out.resumed.push(d);
                if let Some((shards, of)) = &led {
                    match shards.contains(&origin::cluster::shard_of(*room, *of)) {
                        true => out.on_led.push(d),
                        false => out.off_led.push(d),
                    }
                }
                if out.slowest.is_none_or(|(_, s)| d > s) {
                    out.slowest = Some((*room, d));
                }
            }
            Resume::Never => out.never.push(*room),
        }
        out.touched += 1;
    }
    out.resumed.sort();
    out.served.sort();
    out.on_led.sort();
    out.off_led.sort();
    out
}

/// Everything a cluster run's logs showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterEvidence {
    /// One writer per room?
    pub writers: WriterReport,
    /// Each failure's pauses, in play order.
    pub failures: Vec<FailurePauses>,
    /// Why the logs could not be read, if they could not.
    pub read_error: Option<String>,
}

impl ClusterEvidence {
    /// p99 over every room an origin node's failure touched of the time
    /// until it was served again: its new owner's fence, after which the
    /// room decides again (infinite if no node fenced it again); `None` if
    /// no node failure touched a room. (The time to the room's first
    /// record, also in the report, adds however long nobody acted in it:
    /// a quiet room is not a paused one. What clients waited shows in the
    /// ack latencies.)
    pub fn room_resume_p99_s(&self) -> Option<f64> {
        let mut all: Vec<Option<Duration>> = Vec::new();
        for f in self.failures.iter().filter(|f| f.failure.node.is_some()) {
            all.extend(f.served.iter().copied().map(Some));
            all.extend((0..f.unserved).map(|_| None));
        }
        if all.is_empty() {
            return None;
        }
        // `None` (never) sorts first: put it last.
        all.sort_by_key(|d| d.map_or((1, Duration::ZERO), |d| (0, d)));
        let rank = ((0.99 * all.len() as f64).ceil() as usize).clamp(1, all.len());
        Some(all[rank - 1].map_or(f64::INFINITY, |d| d.as_secs_f64()))
    }

    /// The report's lines.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(e) = &self.read_error {
            v.push(format!("room logs not read: {e}"));
        }
        let w = &self.writers;
        v.push(format!(
            "room logs: {} rooms, {} messages, {} fences, {} rooms moved, {} stray appends set aside; {}",
            w.rooms,
            w.messages,
            w.fences,
            w.moved_rooms,
            w.strays,
            if w.ok() {
                "one writer per stretch everywhere".to_owned()
            } else {
                format!("{} violations", w.violations.len())
            }
        ));
        v.extend(self.failures.iter().map(FailurePauses::line));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin::cluster::Entry;

    fn msg(seq: u64, at_ms: i128, node: &str, epoch: u64, fence: bool) -> LogMessage {
        LogMessage {
            room: RoomId(seq / 100),
            seq,
            node: node.into(),
            epoch,
            at_ns: at_ms * 1_000_000,
            entry: if fence {
                Entry::Fence {
                    node: node.into(),
                    epoch,
                }
            } else {
                Entry::Records(Vec::new())
            },
        }
    }

    #[test]
    fn pauses_cover_the_rooms_of_the_dead_node_only() {
        let rooms = super::super::writers::by_room(vec![
            // Room 1: a's, moves to b 1.5 s after the kill at 1000.
            msg(100, 0, "a", 1, true),
            msg(101, 2400, "b", 7, true),
            msg(102, 2500, "b", 7, false),
            // Room 2: b's all along.
            msg(200, 0, "b", 2, true),
            msg(201, 1100, "b", 2, false),
            // Room 3: a's, never written again.
            msg(300, 0, "a", 3, true),
        ]);
        let kill = ClusterFailure {
            label: "origin node a killed".into(),
            at_ns: 1_000_000_000,
            node: Some("a".into()),
            led: None,
        };
        let p = pauses(&rooms, kill);
        assert_eq!(p.touched, 2);
        assert_eq!(p.resumed, vec![Duration::from_millis(1500)]);
        assert_eq!(p.never, vec![RoomId(3)]);
        assert_eq!(p.quantile(0.5), Some(Some(Duration::from_millis(1500))));
        assert_eq!(p.quantile(0.99), Some(None));
        assert!(p.line().contains("p99 never"), "{}", p.line());
        let e = ClusterEvidence {
            failures: vec![p],
            ..ClusterEvidence::default()
        };
        assert_eq!(e.room_resume_p99_s(), Some(f64::INFINITY));
        assert_eq!(ClusterEvidence::default().room_resume_p99_s(), None);
    }

    #[test]
    fn a_room_resumes_when_its_new_owner_fences_it_not_when_someone_next_acts() {
        let rooms = super::super::writers::by_room(vec![
            // Room 1: fenced by b 1.2 s after the kill, quiet until 3 s.
            msg(100, 0, "a", 1, true),
            msg(101, 2200, "b", 7, true),
            msg(102, 4000, "b", 7, false),
            // Room 2: fenced by b 0.9 s after, written at once.
            msg(200, 0, "a", 2, true),
            msg(201, 1900, "b", 8, true),
            msg(202, 1950, "b", 8, false),
        ]);
        let kill = ClusterFailure {
            label: "origin node a killed".into(),
            at_ns: 1_000_000_000,
            node: Some("a".into()),
            led: None,
        };
        let p = pauses(&rooms, kill);
        assert_eq!(
            p.served,
            vec![Duration::from_millis(900), Duration::from_millis(1200)]
        );
        assert_eq!(p.quantile(1.0), Some(Some(Duration::from_millis(3000))));
        let line = p.line();
        assert!(
            line.contains("served again (the new owner's fence) p50 0.90 s p99 1.20 s"),
            "{line}"
        );
        let e = ClusterEvidence {
            failures: vec![p],
            ..ClusterEvidence::default()
        };
        assert_eq!(e.room_resume_p99_s(), Some(1.2));
    }

    #[test]
    fn a_nats_servers_death_splits_the_rooms_on_the_streams_it_led_from_the_others() {
        // Rooms 1 to 6, each written by a at 0 and again 0.1 s after the
        // death, but 5 s after for the rooms on the shard it led.
        let led = origin::cluster::shard_of(RoomId(1), 8);
        let on = |r: u64| origin::cluster::shard_of(RoomId(r), 8) == led;
        let mut msgs = Vec::new();
        for r in 1..=6u64 {
            msgs.push(msg(r * 100, 0, "a", 1, true));
            let after = if on(r) { 6000 } else { 1100 };
            msgs.push(msg(r * 100 + 1, after, "a", 1, false));
        }
        let rooms = super::super::writers::by_room(msgs);
        let kill = ClusterFailure {
            label: "NATS server n2 killed".into(),
            at_ns: 1_000_000_000,
            node: None,
            led: Some((vec![led], 8)),
        };
        let p = pauses(&rooms, kill);
        let n_on = (1..=6).filter(|r| on(*r)).count();
        assert_eq!(p.touched, 6);
        assert_eq!(p.on_led, vec![Duration::from_secs(5); n_on]);
        assert_eq!(p.off_led, vec![Duration::from_millis(100); 6 - n_on]);
        let line = p.line();
        assert!(
            line.contains(&format!("on the streams it led {n_on} rooms, p50 5.00 s")),
            "{line}"
        );
    }
}
