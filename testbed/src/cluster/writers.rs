//! "No room ever had two writers", judged from the room logs themselves,
//! and how long each room paused after a failure. Pure: the messages are
//! read from JetStream by [`super::logs`].
//!
//! A room's log (one subject) is a sequence of stretches, each opened by a
//! `Fence { node, epoch }` its new owner appended. The checker holds every
//! message of a room, in stream order, to these rules:
//!
//! - the first message is a fence (nothing is written unfenced);
//! - a fence's headers (`Ringside-Node`, `Ringside-Epoch`) are the node and
//!   epoch it names, and its epoch is greater than the previous fence's
//!   (or equal, from the same node: a writer fencing its room again after a
//!   failed append) — a deposed owner fencing again with its old epoch
//!   would take the log back from its successor;
//! - every record between two fences carries the opening fence's node and
//!   epoch in its headers (one writer per stretch);
//! - no action is applied twice (an applied ack's id appears once in the
//!   room's log).
//!
//! Strays are set aside first, by the rule every rebuild reads a log with
//! ([`origin::cluster::valid`]): an append JetStream accepted although
//! another writer's message had taken the sequence it expected (two
//! concurrent appends with one expectation can both pass,
//! nats-server#4320). Its writer's check after the append failed, so it
//! acknowledged nothing in it, and no rebuild uses it; the report counts
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use origin::cluster::Entry;
use protocol::{ActionId, Outcome, RoomId};

/// One message of a room's log, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// The room (from the subject).
    pub room: RoomId,
    /// Its stream sequence.
    pub seq: u64,
    /// Header `Ringside-Node`.
    pub node: String,
    /// Header `Ringside-Epoch` (0 if absent).
    pub epoch: u64,
    /// When JetStream stored it, Unix nanoseconds (the server's clock: on
    /// one machine, the testbed's).
    pub at_ns: i128,
    /// What it holds.
    pub entry: Entry,
}

/// A rule a room's log broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The room.
    pub room: RoomId,
    /// The message's stream sequence.
    pub seq: u64,
    /// What is wrong.
    pub what: String,
}

/// What the logs showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Rooms with a log.
    pub rooms: usize,
    /// Messages read.
    pub messages: usize,
    /// Fences (each a change of writer, or a writer re-reading its room).
    pub fences: usize,
    /// Rooms written by more than one node over the run (moved rooms).
    pub moved_rooms: usize,
    /// Every broken rule (empty: no room ever had two writers).
    pub violations: Vec<Violation>,
    /// Stray appends set aside (see the module docs).
    pub strays: usize,
}

impl WriterReport {
    /// Whether every room had one writer per stretch.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Group messages by room, each room's in stream order.
pub fn by_room(messages: Vec<LogMessage>) -> BTreeMap<RoomId, Vec<LogMessage>> {
    let mut rooms: BTreeMap<RoomId, Vec<LogMessage>> = BTreeMap::new();
    for m in messages {
        rooms.entry(m.room).or_default().push(m);
    }
    for v in rooms.values_mut() {
        v.sort_by_key(|m| m.seq);
    }
    rooms
}

/// Check every room's log (see the module docs for the rules).
pub fn check(rooms: &BTreeMap<RoomId, Vec<LogMessage>>) -> WriterReport {
    let mut report = WriterReport {
        rooms: rooms.len(),
        ..WriterReport::default()
    };
    for (room, log) in rooms {
        report.messages += log.len();
        let counted = counted(log);
        report.strays += log.len() - counted.len();
        let writers = check_room(*room, &counted, &mut report.violations);
        report.fences += writers.1;
        report.moved_rooms += usize::from(writers.0.len() > 1);
    }
    report
}

/// The messages of one room's log that count (strays set aside).
fn counted(log: &[LogMessage]) -> Vec<LogMessage> {
    let as_logged = (log.iter()).map(|m| origin::cluster::Logged {
        seq: m.seq,
        node: m.node.clone(),
        epoch: m.epoch,
        linked: Vec::new(),
        entry: m.entry.clone(),
    });
    let keep: BTreeSet<u64> = (origin::cluster::valid(as_logged.collect()).into_iter())
        .map(|l| l.seq)
        .collect();
    (log.iter())
        .filter(|m| keep.contains(&m.seq))
        .cloned()
        .collect()
}

/// One room: pushes its violations; returns the nodes that wrote it and
/// its number of fences.
fn check_room(
    room: RoomId,
    log: &[LogMessage],
    out: &mut Vec<Violation>,
) -> (BTreeSet<String>, usize) {
    let mut writer: Option<(&str, u64)> = None;
    let mut nodes = BTreeSet::new();
    let mut fences = 0;
    let mut applied: BTreeSet<ActionId> = BTreeSet::new();
    let mut bad = |seq: u64, what: String| out.push(Violation { room, seq, what });
    for m in log {
        match &m.entry {
            Entry::Fence { node, epoch } => {
                fences += 1;
                if *node != m.node || *epoch != m.epoch {
                    bad(
                        m.seq,
                        format!(
                            "fence of {node} epoch {epoch} sent with headers {} epoch {}",
                            m.node, m.epoch
                        ),
                    );
                }
                if let Some((prev, e)) = writer {
                    if *epoch < e || (*epoch == e && node != prev) {
                        bad(
                            m.seq,
                            format!(
                                "epoch went from {e} ({prev}) to {epoch} ({node}): epochs must grow"
                            ),
                        );
                    }
                }
                writer = Some((node.as_str(), *epoch));
                nodes.insert(node.clone());
            }
            Entry::Records(records) => {
                match writer {
                    None => bad(m.seq, format!("records by {} before any fence", m.node)),
                    Some((node, epoch)) if node != m.node || epoch != m.epoch => bad(
                        m.seq,
                        format!(
                            "records by {} epoch {} inside the stretch of {node} epoch {epoch}: two writers",
                            m.node, m.epoch
                        ),
                    ),
                    Some(_) => {}
                }
                for ack in records.iter().filter_map(|r| r.ack.as_ref()) {
                    if matches!(ack.outcome, Outcome::Applied { .. }) && !applied.insert(ack.id) {
                        bad(m.seq, format!("action {:?} applied twice", ack.id));
                    }
                }
            }
        }
    }
    (nodes, fences)
}

/// How a room fared after a failure at `at_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The failure did not touch the room (another node wrote it).
    Untouched,
    /// Its first record after the failure came this long after it.
    After(Duration),
    /// Touched, and no record came after the failure.
    Never,
}

/// Whether the failure at `at_ns` touched the room whose log is `log`, and
/// when it wrote again.
///
/// `lost`: the node whose rooms the failure took (a node killed, drained
/// or partitioned): the room is touched if that node was its writer at
/// `at_ns`, and resumes at the first record a later fence's writer
/// appended after `at_ns`. `None` (a NATS server killed): every room with
/// a writer at `at_ns` is touched, and resumes at its first record stored
/// after `at_ns`. Times are JetStream's store times: a room with no traffic
/// for a while after the failure resumes late by that quiet stretch.
pub fn resume(log: &[LogMessage], at_ns: i128, lost: Option<&str>) -> Resume {
    let Some((writer, epoch)) = writer_at(log, at_ns) else {
        return Resume::Untouched;
    };
    if lost.is_some_and(|n| n != writer) {
        return Resume::Untouched;
    }
    let next = log.iter().find(|m| {
        m.at_ns > at_ns
            && matches!(m.entry, Entry::Records(_))
            && (lost.is_none() || m.epoch > epoch)
    });
    match next {
        Some(m) => Resume::After(Duration::from_nanos(
            u64::try_from(m.at_ns - at_ns).unwrap_or(u64::MAX),
        )),
        None => Resume::Never,
    }
}

/// The room's writer at `at_ns` (its last fence by then): node, epoch.
fn writer_at(log: &[LogMessage], at_ns: i128) -> Option<(&str, u64)> {
    (log.iter().rev())
        .filter(|m| m.at_ns <= at_ns)
        .find_map(|m| match &m.entry {
            Entry::Fence { node, epoch } => Some((node.as_str(), *epoch)),
            Entry::Records(_) => None,
        })
}

/// When the node that took over a room the failure at `at_ns` touched
/// (see [`resume`]) fenced it: the room is served again from then (its
/// first record can come later only because nobody asked sooner). `None`
/// if untouched, not fenced again after it, or `lost` is `None`.
pub fn served(log: &[LogMessage], at_ns: i128, lost: Option<&str>) -> Option<Duration> {
    let lost = lost?;
    let (writer, epoch) = writer_at(log, at_ns)?;
    if writer != lost {
        return None;
    }
    let fence = log
        .iter()
        .find(|m| m.at_ns > at_ns && m.epoch > epoch && matches!(m.entry, Entry::Fence { .. }))?;
    Some(Duration::from_nanos(
        u64::try_from(fence.at_ns - at_ns).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use origin::rules::{Ack, Record};
    use protocol::{Seq, ServerTime, SessionId, UserId};

    const MS: i128 = 1_000_000;

    fn fence(seq: u64, at: i128, node: &str, epoch: u64) -> LogMessage {
        LogMessage {
            room: RoomId(7),
            seq,
            node: node.into(),
            epoch,
            at_ns: at * MS,
            entry: Entry::Fence {
                node: node.into(),
                epoch,
            },
        }
    }

    fn records(seq: u64, at: i128, node: &str, epoch: u64, action: u64) -> LogMessage {
        let ack = Ack {
            id: ActionId {
                session: SessionId(1),
                n: action,
            },
            user: UserId(1),
            outcome: Outcome::Applied { seq: Seq(action) },
            at: ServerTime(0),
        };
        LogMessage {
            room: RoomId(7),
            seq,
            node: node.into(),
            epoch,
            at_ns: at * MS,
            entry: Entry::Records(vec![Record {
                ack: Some(ack),
                events: Vec::new(),
            }]),
        }
    }

    fn run(log: Vec<LogMessage>) -> WriterReport {
        check(&by_room(log))
    }

    #[test]
    fn a_log_with_one_writer_per_stretch_passes() {
        let r = run(vec![
            fence(1, 0, "a", 5),
            records(2, 10, "a", 5, 1),
            records(3, 20, "a", 5, 2),
            fence(4, 1200, "b", 9),
            records(5, 1250, "b", 9, 3),
        ]);
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!((r.rooms, r.messages, r.fences, r.moved_rooms), (1, 5, 2, 1));
    }

    #[test]
    fn a_deposed_writers_append_past_a_fence_is_set_aside_a_foreign_record_is_two_writers() {
        // Out of order on purpose: the checker sorts by sequence.
        let r = run(vec![
            records(5, 1210, "a", 5, 3),
            fence(1, 0, "a", 5),
            records(2, 10, "a", 5, 1),
            fence(4, 1200, "b", 9),
        ]);
        // a's append past b's fence, at a's old epoch: set aside (its
        // check failed; it acknowledged nothing), not counted.
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.strays, 1);
        // A record at b's epoch but from another node: two writers.
        let mut foreign = records(5, 1210, "a", 9, 3);
        foreign.node = "a".into();
        let r = run(vec![fence(1, 0, "a", 5), fence(4, 1200, "b", 9), foreign]);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!((r.violations[0].seq, r.strays), (5, 0));
        assert!(r.violations[0].what.contains("two writers"));
    }

    #[test]
    fn shrinking_epochs_unfenced_records_and_double_applies_are_caught() {
        let r = run(vec![
            records(1, 0, "a", 5, 1),
            fence(2, 1, "a", 5),
            fence(3, 2, "b", 5),
            records(4, 3, "b", 5, 1),
            fence(5, 4, "c", 3),
            // The same writer fencing again at its epoch is fine.
            fence(6, 5, "c", 3),
        ]);
        let seqs: Vec<u64> = r.violations.iter().map(|v| v.seq).collect();
        // Unfenced (1), epoch not grown (3), applied twice (4); the fences
        // at a shrunk epoch (5, 6) are strays, set aside.
        assert_eq!(seqs, vec![1, 3, 4], "{:?}", r.violations);
        assert_eq!(r.strays, 2);
        // A fence whose headers lie.
        let mut lying = fence(1, 0, "a", 5);
        lying.node = "b".into();
        assert_eq!(run(vec![lying]).violations.len(), 1);
    }

    #[test]
    fn a_room_resumes_at_the_new_writers_first_record() {
        let log = by_room(vec![
            fence(1, 0, "a", 5),
            records(2, 900, "a", 5, 1),
            // Stored just after the kill at 1000 but by the dead node:
            // in flight, not a resume.
            records(3, 1001, "a", 5, 2),
            fence(4, 2100, "b", 9),
            records(5, 2300, "b", 9, 3),
        ])
        .remove(&RoomId(7))
        .expect("room");
        assert_eq!(
            resume(&log, 1000 * MS, Some("a")),
            Resume::After(Duration::from_millis(1300))
        );
        assert_eq!(resume(&log, 1000 * MS, Some("b")), Resume::Untouched);
        // A NATS server's death touches every room: the next record at all.
        assert_eq!(
            resume(&log, 1000 * MS, None),
            Resume::After(Duration::from_millis(1))
        );
        assert_eq!(resume(&log, 3000 * MS, None), Resume::Never);
        assert_eq!(resume(&log, -MS, None), Resume::Untouched);
        // Served again at the new writer's fence, 1.1 s after the kill.
        assert_eq!(
            served(&log, 1000 * MS, Some("a")),
            Some(Duration::from_millis(1100))
        );
        assert_eq!(served(&log, 1000 * MS, Some("b")), None);
        assert_eq!(served(&log, 1000 * MS, None), None);
        assert_eq!(served(&log, 2200 * MS, Some("b")), None, "not fenced since");
    }
}
