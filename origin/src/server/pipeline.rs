//! Cluster mode: appends in flight per room, and the outputs waiting for
//! them. Pure (no IO, no clock): the driver adds each batch's records,
//! sends what [`Pipeline::take_due`] hands it, reports each append's
//! result, and passes on what [`Pipeline::poll_ready`] releases.
//!
//! Why: a group commit that waits for every room's append before the next
//! batch makes one slow room the whole node's pause. When a NATS server
//! dies, the streams it led elect new leaders (seconds); the appends of
//! their rooms wait out `request_timeout` meanwhile, and every other room
//! of the node waited with them. Here each room has at most one append in
//! flight (its next one must name the sequence this one gets) and queues
//! what is decided meanwhile; an output leaves once the appends of every
//! room it touches are acknowledged, whatever other rooms do.
//!
//! ```text
//!  add(room, record) ──► queued ──take_due──► in flight ──handle_done(ok)──► acked
//!                          │                     │ handle_done(failed) or handle_dropped:
//!                          └─────────────────────┴─► every output waiting on the room fails
//! ```
//!
//! Outputs are released in the order they were decided, except that one
//! waiting for a slow room does not hold back those of other rooms: an
//! output leaves once its appends are acknowledged and no earlier output
//! sharing a room with it is still waiting, so each room's outputs keep
//! their order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use protocol::RoomId;

use crate::rules::Record;

/// How an output stands for one of its rooms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Its records (and all before them) are acknowledged, or it had none.
    Ok,
    /// An append it waited for failed, or the room was dropped meanwhile.
    Failed,
    /// Still waiting for the append with this ticket.
    Waiting(u64),
}

/// One room's appends.
#[derive(Default)]
struct Pipe {
    /// The append in flight: its ticket.
    in_flight: Option<u64>,
    /// Records decided since it was sent, and the ticket they will go
    /// under.
    queued: Vec<Record>,
    queued_ticket: Option<u64>,
    /// The other rooms whose events the queued records carry, each with
    /// the epoch this node wrote it at when they were decided.
    linked: Vec<(RoomId, u64)>,
}

/// One append to send.
pub(super) struct Due {
    /// Its room.
    pub room: RoomId,
    /// The ticket to report its result under.
    pub ticket: u64,
    /// The records, in order.
    pub records: Vec<Record>,
    /// The other rooms whose events they carry, with their epochs.
    pub linked: Vec<(RoomId, u64)>,
}

/// An output and how it stands in each of its rooms.
struct Waiting<T> {
    out: T,
    rooms: Vec<(RoomId, Status)>,
}

/// The appends of every room and the outputs waiting for them.
pub(super) struct Pipeline<T> {
    pipes: BTreeMap<RoomId, Pipe>,
    waiting: VecDeque<Waiting<T>>,
    next_ticket: u64,
}

impl<T> Default for Pipeline<T> {
    fn default() -> Self {
        Pipeline {
            pipes: BTreeMap::new(),
            waiting: VecDeque::new(),
            next_ticket: 1,
        }
    }
}

impl<T> Pipeline<T> {
    /// `record` is to be appended to `room`'s log (after whatever is in
    /// flight or queued for it); `linked`: the other rooms whose events it
    /// carries, with the epoch each was written at when it was decided.
    pub fn add(&mut self, room: RoomId, record: Record, linked: &[(RoomId, u64)]) {
        let next = &mut self.next_ticket;
        let pipe = self.pipes.entry(room).or_default();
        if pipe.queued_ticket.is_none() {
            pipe.queued_ticket = Some(*next);
            *next += 1;
        }
        pipe.queued.push(record);
        for (r, epoch) in linked {
            match pipe.linked.iter_mut().find(|(o, _)| o == r) {
                // Decided at two epochs of that room: the earlier one.
                Some((_, e)) => *e = (*e).min(*epoch),
                None => pipe.linked.push((*r, *epoch)),
            }
        }
    }

    /// `out` may leave once everything added so far for each of `rooms`
    /// is acknowledged.
    pub fn wait(&mut self, out: T, rooms: &[RoomId]) {
        let rooms = (rooms.iter())
            .map(|room| {
                let newest = (self.pipes.get(room)).and_then(|p| p.queued_ticket.or(p.in_flight));
                (*room, newest.map_or(Status::Ok, Status::Waiting))
            })
            .collect();
        self.waiting.push_back(Waiting { out, rooms });
    }

    /// Outputs waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The appends to send now: each room with records queued and nothing
    /// in flight, with the ticket to report its result under, and the
    /// linked rooms' epochs.
    pub fn take_due(&mut self) -> Vec<Due> {
        let mut out = Vec::new();
        for (room, pipe) in &mut self.pipes {
            if pipe.in_flight.is_some() {
                continue;
            }
            if let Some(ticket) = pipe.queued_ticket.take() {
                pipe.in_flight = Some(ticket);
                out.push(Due {
                    room: *room,
                    ticket,
                    records: std::mem::take(&mut pipe.queued),
                    linked: std::mem::take(&mut pipe.linked),
                });
            }
        }
        out
    }

    /// The append of `room` under `ticket` was acknowledged (`ok`) or
    /// failed. A result for an append no longer in flight (its room was
    /// dropped meanwhile) is ignored. A failure fails everything queued
    /// for the room too: it is dropped and rebuilt from its log.
    pub fn handle_done(&mut self, room: RoomId, ticket: u64, ok: bool) {
        let Some(pipe) = self.pipes.get_mut(&room) else {
            return;
        };
        if pipe.in_flight != Some(ticket) {
            return;
        }
        if !ok {
            self.handle_dropped(room);
            return;
        }
        pipe.in_flight = None;
        if pipe.queued_ticket.is_none() {
            self.pipes.remove(&room);
        }
        for w in &mut self.waiting {
            for (r, status) in &mut w.rooms {
                if *r == room && matches!(*status, Status::Waiting(t) if t <= ticket) {
                    *status = Status::Ok;
                }
            }
        }
    }

    /// `room` is no longer written here: whatever waits for its appends
    /// fails, and a result still to come for it is ignored.
    pub fn handle_dropped(&mut self, room: RoomId) {
        if self.pipes.remove(&room).is_none() {
            return;
        }
        for w in &mut self.waiting {
            for (r, status) in &mut w.rooms {
                if *r == room && matches!(status, Status::Waiting(_)) {
                    *status = Status::Failed;
                }
            }
        }
    }

    /// The outputs no longer waiting, in the order they were added, each
    /// with how it stands in each of its rooms (`Ok` or `Failed`). An
    /// output still waits while an earlier one sharing a room with it does
    /// (a battle's gift touches both rooms: its events must not be passed
    /// by a later chat's in one of them).
    pub fn poll_ready(&mut self) -> Vec<(T, Vec<(RoomId, Status)>)> {
        let mut ready = Vec::new();
        let mut still = VecDeque::with_capacity(self.waiting.len());
        let mut blocked: BTreeSet<RoomId> = BTreeSet::new();
        for w in self.waiting.drain(..) {
            let waits = (w.rooms.iter())
                .any(|(r, s)| matches!(s, Status::Waiting(_)) || blocked.contains(r));
            if waits {
                blocked.extend(w.rooms.iter().map(|(r, _)| *r));
                still.push_back(w);
            } else {
                ready.push((w.out, w.rooms));
            }
        }
        self.waiting = still;
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RoomId = RoomId(1);
    const B: RoomId = RoomId(2);

    fn rec() -> Record {
        Record {
            ack: None,
            events: Vec::new(),
        }
    }

    fn outs(p: &mut Pipeline<&'static str>) -> Vec<&'static str> {
        p.poll_ready().into_iter().map(|(o, _)| o).collect()
    }

    #[test]
    fn a_slow_room_holds_back_only_its_own_outputs() {
        let mut p = Pipeline::default();
        p.add(A, rec(), &[]);
        p.wait("a1", &[A]);
        p.add(B, rec(), &[]);
        p.wait("b1", &[B]);
        let sent = p.take_due();
        assert_eq!(sent.len(), 2);
        let (ta, tb) = (sent[0].ticket, sent[1].ticket);
        assert!(outs(&mut p).is_empty());
        // A's append is slow; B's is acknowledged: b1 leaves.
        p.handle_done(B, tb, true);
        assert_eq!(outs(&mut p), ["b1"]);
        // More for A, decided while its append is in flight: queued, not sent.
        p.add(A, rec(), &[]);
        p.wait("a2", &[A]);
        assert!(p.take_due().is_empty());
        p.handle_done(A, ta, true);
        assert_eq!(outs(&mut p), ["a1"]);
        let sent = p.take_due();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].room, A);
        p.handle_done(A, sent[0].ticket, true);
        assert_eq!(outs(&mut p), ["a2"]);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_failed_append_fails_what_is_queued_behind_it_and_a_late_result_is_ignored() {
        let mut p = Pipeline::default();
        p.add(A, rec(), &[]);
        p.add(B, rec(), &[]);
        p.wait("ab", &[A, B]);
        let sent = p.take_due();
        let (ta, tb) = (sent[0].ticket, sent[1].ticket);
        p.add(A, rec(), &[]);
        p.wait("a2", &[A]);
        p.handle_done(B, tb, true);
        assert!(outs(&mut p).is_empty(), "ab waits for A too");
        p.handle_done(A, ta, false);
        let ready = p.poll_ready();
        assert_eq!(ready.len(), 2);
        assert_eq!(ready[0].1, vec![(A, Status::Failed), (B, Status::Ok)]);
        assert_eq!(ready[1].1, vec![(A, Status::Failed)]);
        // Nothing of A is sent after its failure; a late answer changes nothing.
        assert!(p.take_due().is_empty());
        p.handle_done(A, ta, true);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn an_output_with_nothing_to_wait_for_leaves_at_once_and_a_dropped_room_fails_its_waiters() {
        let mut p = Pipeline::default();
        p.wait("answer", &[A]);
        assert_eq!(outs(&mut p), ["answer"]);
        p.add(A, rec(), &[]);
        p.wait("a1", &[A]);
        let ta = p.take_due()[0].ticket;
        p.handle_dropped(A);
        let ready = p.poll_ready();
        assert_eq!(ready[0].1, vec![(A, Status::Failed)]);
        p.handle_done(A, ta, true);
        assert!(p.take_due().is_empty());
        // Won again later: a fresh pipe.
        p.add(A, rec(), &[]);
        p.wait("a2", &[A]);
        let sent = p.take_due();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].ticket > ta);
        p.handle_done(A, sent[0].ticket, true);
        assert_eq!(outs(&mut p), ["a2"]);
    }

    #[test]
    fn an_output_never_passes_an_earlier_one_of_the_same_room() {
        // A battle gift touches A and B; a chat after it touches B only.
        let mut p = Pipeline::default();
        p.add(A, rec(), &[]);
        p.add(B, rec(), &[]);
        p.wait("gift", &[A, B]);
        let sent = p.take_due();
        let (ta, tb) = (sent[0].ticket, sent[1].ticket);
        p.add(B, rec(), &[]);
        p.wait("chat", &[B]);
        p.add(RoomId(3), rec(), &[]);
        p.wait("other", &[RoomId(3)]);
        p.handle_done(B, tb, true);
        let tb2 = p
            .take_due()
            .iter()
            .find(|s| s.room == B)
            .map(|s| s.ticket)
            .expect("B's next");
        p.handle_done(B, tb2, true);
        // B is all acknowledged, but the gift still waits for A: the chat waits too.
        assert!(outs(&mut p).is_empty());
        p.handle_done(A, ta, true);
        assert_eq!(outs(&mut p), ["gift", "chat"]);
    }

    #[test]
    fn an_append_carries_the_epochs_its_records_were_decided_at() {
        let mut p: Pipeline<&'static str> = Pipeline::default();
        p.add(A, rec(), &[(B, 7)]);
        p.add(A, rec(), &[(B, 9), (RoomId(3), 2)]);
        let due = p.take_due();
        assert_eq!(due[0].records.len(), 2);
        assert_eq!(
            due[0].linked,
            vec![(B, 7), (RoomId(3), 2)],
            "the earlier epoch"
        );
        p.add(A, rec(), &[]);
        p.handle_done(A, due[0].ticket, true);
        assert!(p.take_due()[0].linked.is_empty(), "nothing carried over");
    }
}
