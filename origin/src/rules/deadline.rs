//! Firing a room's timers: the earliest one due goes to its rule. (What is
//! due, and when, is derived from the room's state alone, in `world.rs`: a
//! restart rebuilds every timer by replaying the log.)

use protocol::{Reason, RoomId, ServerTime};

use super::engage;
use super::pk;
use super::seats;
use super::txn::Txn;
use super::world::{items, Due};

/// Fire the room's earliest deadline (it is due at `at`).
pub(super) fn fire(t: &mut Txn<'_>, room: RoomId, at: ServerTime) -> Result<(), Reason> {
    let state = t.state(room)?;
    let due = (items(t.config(), state).filter(|(when, _)| *when <= at)).min();
    let Some((_, due)) = due else {
        return Err(Reason::Internal);
    };
    match due {
        Due::PkInvite => pk::expire_invite(t, room),
        Due::Battle => pk::advance(t, room),
        Due::SeatInvite(user) => seats::expire_invite(t, room, user),
        Due::SeatHold(seat) => seats::release(t, room, seat),
        Due::Challenge => engage::challenge_deadline(t, room),
    }
}
