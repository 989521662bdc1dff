//! What the attackers' code shares: the bound on paced loops, the usual
//! dialing, and the messages several abuses send.

use protocol::message::{ActionMsg, ClientMsg};
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime};

use crate::attack::hostile::{Dialing, Session};

/// Upper bound on the ticks of any paced loop (the stop signal ends them
/// long before).
pub(super) const MAX_TICKS: usize = 1_000_000;

pub(super) fn hello_dialing() -> Dialing {
    Dialing {
        hello: true,
        datagrams: true,
    }
}

pub(super) fn join(room: RoomId) -> ClientMsg {
    ClientMsg::Join { room, since: None }
}

pub(super) fn unknown_room(s: &mut Session) -> RoomId {
    RoomId(1_000_000 + s.rng.next_u64() % 1_000_000_000)
}

pub(super) fn gift(s: &Session, n: u64, room: RoomId) -> ClientMsg {
    ClientMsg::Action(ActionMsg {
        id: ActionId {
            session: s.session,
            n,
        },
        room,
        sent_at: ServerTime::ZERO,
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    })
}
