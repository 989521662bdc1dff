//! What a room's log holds, and rebuilding the rules from it. Pure: the
//! JetStream side is in `log.rs`.

use protocol::room::ApplyError;
use protocol::RoomId;
use serde::{Deserialize, Serialize};

use crate::rules::{Authority, Record};

/// One message on a room's subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// What one group commit stored for the room, in decision order. Each
    /// record holds this room's events (and, from the origin binary, those
    /// of its PK partner in the same record), and the ack of an action
    /// addressed to this room or its partner (see [`split`],
    /// [`split_linked`]).
    Records(Vec<Record>),
    /// A node won the room's lease at `epoch` and, by appending this, cut
    /// off every earlier writer: every entry after it up to the next fence
    /// is that node's.
    Fence {
        /// The node.
        node: String,
        /// The lease revision it won the room at.
        epoch: u64,
    },
}

/// A decided record as the room logs store it: `record`'s events grouped by
/// room (each group a record of its own, in first-event order), the ack
/// going with `home` (the room the action was addressed to; a record with
/// an ack always has an entry for `home`, even without events there). A
/// record without an ack (timers, presence) goes to each room it touched.
///
/// A record touching two rooms (a PK battle's) is then two appends, one per
/// room, not atomic: the origin binary uses [`split_linked`] instead.
pub fn split(record: Record, home: RoomId) -> Vec<(RoomId, Record)> {
    let mut out: Vec<(RoomId, Record)> = Vec::new();
    if record.ack.is_some() {
        out.push((
            home,
            Record {
                ack: record.ack,
                events: Vec::new(),
            },
        ));
    }
    for (room, event) in record.events {
        match out.iter_mut().find(|(r, _)| *r == room) {
            Some((_, rec)) => rec.events.push((room, event)),
            None => out.push((
                room,
                Record {
                    ack: None,
                    events: vec![(room, event)],
                },
            )),
        }
    }
    out
}

/// [`split`], with a battle's two rooms kept together: the record goes to
/// each room it touched and to each room `linked` to one of those (its PK
/// partner); each part holds the record's events of its room and of the
/// rooms linked to it, and the ack goes with every part whose room is home
/// or linked to home. So while two rooms are linked, every record of
/// either is whole in both logs (a chat in one room too: the partner's copy
/// of the room's tail has no gaps), and if one of the two appends is lost
/// (a crash between them, a request that timed out), the other log still
/// holds it: rebuilding a room takes the tail it lacks from its partner's
/// log ([`merge_tail`]).
pub fn split_linked(
    record: Record,
    home: RoomId,
    linked: impl Fn(RoomId) -> Vec<RoomId>,
) -> Vec<(RoomId, Record)> {
    let mut rooms: Vec<RoomId> = Vec::new();
    for (room, _) in split(record.clone(), home) {
        for r in std::iter::once(room).chain(linked(room)) {
            if !rooms.contains(&r) {
                rooms.push(r);
            }
        }
    }
    let mut out = Vec::with_capacity(rooms.len());
    for room in rooms {
        let mut with = linked(room);
        with.push(room);
        let events = (record.events.iter())
            .filter(|(r, _)| with.contains(r))
            .cloned()
            .collect();
        let ack = record.ack.filter(|_| with.contains(&home));
        out.push((room, Record { ack, events }));
    }
    out
}

/// `record` with only `room`'s events (its ack kept: the action is
/// committed wherever a copy of its record is).
fn only(record: &Record, room: RoomId) -> Record {
    Record {
        ack: record.ack,
        events: (record.events.iter())
            .filter(|(r, _)| *r == room)
            .cloned()
            .collect(),
    }
}

/// Rebuild `room` alone from its log (oldest first) into `auth`: only its
/// events are applied (its log may hold its partner's too, see
/// [`split_linked`]); every ack in it goes to the id memory.
pub fn rebuild_room<'a>(
    auth: &mut Authority,
    room: RoomId,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<usize, ApplyError> {
    let mut records = 0;
    for entry in entries {
        if let Entry::Records(batch) = entry {
            for record in batch {
                auth.replay(&only(record, room))?;
                records += 1;
            }
        }
    }
    Ok(records)
}

/// The epoch of the last writer that stored records in a room's log
/// (`entries`, oldest first), if any did: a copy of the room's events in a
/// partner's log decided at an earlier epoch was decided by a writer
/// fenced out since, on state the log no longer ends with.
pub fn last_writer(entries: &[Entry]) -> Option<u64> {
    let mut fence = None;
    let mut last = None;
    for entry in entries {
        match entry {
            Entry::Fence { epoch, .. } => fence = Some(*epoch),
            Entry::Records(_) => last = fence.or(last),
        }
    }
    last
}

/// After [`rebuild_room`]: apply what `partner`'s log (`entries`) holds
/// for `room` past `room`'s last event (the tail a lost append left out of
/// `room`'s own log), in order, stopping at the first gap. Returns the
/// records it applied, reduced to `room`'s events: the caller appends them
/// to `room`'s own log, so that its log is whole again.
pub fn merge_tail<'a>(
    auth: &mut Authority,
    room: RoomId,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Vec<Record>, ApplyError> {
    let mut seq = auth.room(room).map_or(protocol::Seq(0), |s| s.seq);
    let mut merged = Vec::new();
    for entry in entries {
        let Entry::Records(batch) = entry else {
            continue;
        };
        for record in batch {
            let mine = only(record, room);
            let Some(first) = mine.events.first().map(|(_, e)| e.seq) else {
                continue;
            };
            if first <= seq {
                continue;
            }
            if first != seq.next() {
                return Ok(merged);
            }
            auth.replay(&mine)?;
            seq = mine.events.last().map_or(seq, |(_, e)| e.seq);
            merged.push(mine);
        }
    }
    Ok(merged)
}

/// Feed a room's log entries (oldest first) into `auth`: the room's state,
/// its timers (derived from state) and the id memory of every action
/// addressed to it come back as the owner left them. Fences change nothing.
pub fn rebuild<'a>(
    auth: &mut Authority,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<usize, ApplyError> {
    let mut records = 0;
    for entry in entries {
        if let Entry::Records(batch) = entry {
            for record in batch {
                auth.replay(record)?;
                records += 1;
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ack;
    use protocol::{ActionId, Event, EventKind, Outcome, Seq, ServerTime, SessionId, UserId};

    fn event(seq: u64) -> Event {
        Event {
            seq: Seq(seq),
            at: ServerTime(seq),
            cause: None,
            kind: EventKind::Opened { seats: 4 },
        }
    }

    #[test]
    fn the_last_writer_is_the_last_fence_followed_by_records() {
        let fence = |epoch| Entry::Fence {
            node: "n".into(),
            epoch,
        };
        let records = || {
            Entry::Records(vec![Record {
                ack: None,
                events: vec![(RoomId(1), event(1))],
            }])
        };
        assert_eq!(last_writer(&[]), None);
        assert_eq!(last_writer(&[fence(3)]), None, "no records yet");
        assert_eq!(last_writer(&[fence(3), records(), fence(7)]), Some(3));
        assert_eq!(
            last_writer(&[
                fence(3),
                records(),
                fence(7),
                records(),
                fence(9),
                fence(12)
            ]),
            Some(7)
        );
    }

    #[test]
    fn a_record_is_split_per_room_with_its_ack_at_home() {
        let (a, b) = (RoomId(1), RoomId(2));
        let ack = Ack {
            id: ActionId {
                session: SessionId(9),
                n: 1,
            },
            user: UserId(5),
            outcome: Outcome::Applied { seq: Seq(4) },
            at: ServerTime(3),
        };
        let record = Record {
            ack: Some(ack),
            events: vec![(b, event(7)), (a, event(4)), (b, event(8))],
        };
        let parts = split(record, a);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, a);
        assert_eq!(parts[0].1.ack, Some(ack));
        assert_eq!(parts[0].1.events, vec![(a, event(4))]);
        assert_eq!(parts[1].0, b);
        assert_eq!(parts[1].1.ack, None);
        assert_eq!(parts[1].1.events, vec![(b, event(7)), (b, event(8))]);
        // A rejected action (no events) still lands at home, for its id.
        let rejected = Record {
            ack: Some(ack),
            events: Vec::new(),
        };
        assert_eq!(
            split(rejected, b),
            vec![(
                b,
                Record {
                    ack: Some(ack),
                    events: vec![]
                }
            )]
        );
    }

    /// Decide `action` in `room` as its host (user room * 1000) or a fan.
    fn act(
        auth: &mut Authority,
        now: u64,
        room: RoomId,
        host: bool,
        n: u64,
        action: protocol::Action,
    ) -> Record {
        use protocol::message::{ActionMsg, Actor};
        use protocol::room::Grant;
        let (user, grant) = match host {
            true => (room.0 * 1000, Grant::Host),
            false => (7, Grant::Viewer),
        };
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(user),
                n,
            },
            room,
            sent_at: ServerTime(now),
            action,
        };
        let actor = Actor {
            user: UserId(user),
            grant,
        };
        match auth.handle_action(ServerTime(now), actor, &msg) {
            crate::rules::Decision::Decided(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_battle_record_lost_from_one_room_is_taken_from_its_partner() {
        use protocol::Action;
        let (a, b) = (RoomId(1), RoomId(2));
        let config = crate::rules::Config::default();
        let mut auth = Authority::new(config.clone());
        let linked = |r: RoomId| vec![if r == a { b } else { a }];
        let mut logs: std::collections::BTreeMap<RoomId, Vec<Record>> = Default::default();
        let store = |logs: &mut std::collections::BTreeMap<RoomId, Vec<Record>>,
                     rec: Record,
                     home: RoomId,
                     lose: Option<RoomId>| {
            for (room, part) in split_linked(rec, home, linked) {
                if Some(room) != lose {
                    logs.entry(room).or_default().push(part);
                }
            }
        };
        let chat = || Action::Chat { text: "hi".into() };
        let t = 1_000_000_000;
        let rec = act(&mut auth, t, a, true, 1, chat());
        store(&mut logs, rec, a, None);
        let rec = act(&mut auth, t, b, true, 1, chat());
        store(&mut logs, rec, b, None);
        let invite = Action::PkInvite {
            to: b,
            duration_secs: 60,
        };
        let rec = act(&mut auth, t + 1, a, true, 2, invite);
        store(&mut logs, rec, a, None);
        let battle = auth
            .room(b)
            .and_then(|s| s.pk_invite.as_ref())
            .expect("invited")
            .battle;
        let rec = act(&mut auth, t + 2, b, true, 2, Action::PkAccept { battle });
        store(&mut logs, rec, b, None);
        let gift = Action::Gift {
            gift: protocol::GiftId(2),
            count: 1,
        };
        // A gift in a: its record reaches a's log but b's append is lost.
        let rec = act(&mut auth, t + 3, a, false, 1, gift.clone());
        assert!(rec.events.iter().any(|(r, _)| *r == b), "a score in b too");
        store(&mut logs, rec, a, Some(b));
        // A chat in b, then a gift in b, whose own appends are lost: they
        // live in a's log alone (the chat touches b only, but b is linked:
        // without it a's copy of b's tail would have a gap at the gift).
        let rec = act(&mut auth, t + 4, b, true, 3, chat());
        assert!(
            rec.events.iter().all(|(r, _)| *r == b),
            "the chat is b's alone"
        );
        store(&mut logs, rec, b, Some(b));
        let rec = act(&mut auth, t + 5, b, false, 2, gift);
        store(&mut logs, rec, b, Some(b));
        let entries = |room: RoomId| vec![Entry::Records(logs[&room].clone())];
        // Each room rebuilt alone from its own log, then from its partner's.
        let mut again = Authority::new(config);
        rebuild_room(&mut again, a, &entries(a)).expect("a replays");
        assert_eq!(again.room(a), auth.room(a), "a's log is whole");
        assert!(again.room(b).is_none(), "a's log builds only a");
        rebuild_room(&mut again, b, &entries(b)).expect("b replays");
        assert_ne!(again.room(b), auth.room(b), "b lost three records");
        let merged = merge_tail(&mut again, b, &entries(a)).expect("merges");
        assert_eq!(merged.len(), 3);
        assert_eq!(again.room(b), auth.room(b), "b whole again");
        assert!(merge_tail(&mut again, b, &entries(a))
            .expect("again")
            .is_empty());
        // The gift addressed to b is remembered: a resend is not counted again.
        let id = ActionId {
            session: SessionId(7),
            n: 2,
        };
        let seen = again.sessions().check(id, UserId(7), ServerTime(t + 5));
        assert!(
            matches!(seen, crate::rules::Seen::Again(o) if o.is_applied()),
            "{seen:?}"
        );
    }
}
