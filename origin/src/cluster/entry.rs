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
    /// record holds only this room's events, and the ack of an action
    /// addressed to this room (see [`split`]).
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
/// room, not atomic: see the module docs for what is left to do.
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
}
