//! Timers, derived from room state alone: a room's next deadline is a pure
//! function of its state, so a restart rebuilds every timer by replaying the
//! log, and nothing about timers needs storing.

use protocol::room::BattlePhase;
use protocol::{Reason, RoomId, RoomState, ServerTime, UserId};

use super::config::Config;
use super::txn::Txn;
use super::{engage, pk, seats};

/// Something in a room that happens at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The pending PK invitation lapses.
    PkInvite,
    /// The battle moves on (bell, settlement, close).
    Battle,
    /// A seat invitation lapses.
    SeatInvite(UserId),
    /// A disconnected guest's hold ends.
    SeatHold(u8),
    /// The challenge's deadline.
    Challenge,
}

fn items<'a>(config: &'a Config, s: &'a RoomState) -> impl Iterator<Item = (ServerTime, Due)> + 'a {
    let invite = s.pk_invite.as_ref().map(|i| (i.expires_at, Due::PkInvite));
    let battle = s.battle.as_ref().map(|b| {
        let at = match b.phase {
            BattlePhase::Running => b.ends_at,
            BattlePhase::Grace => b.settles_at,
            BattlePhase::Punishment { until } => until,
        };
        (at, Due::Battle)
    });
    let seat_invites = (s.seats.invites.iter()).map(|i| (i.expires_at, Due::SeatInvite(i.user)));
    let holds = s
        .seats
        .seats
        .iter()
        .enumerate()
        .filter_map(move |(n, seat)| {
            let since = seat.away_since?;
            Some((since + config.seat_hold, Due::SeatHold(n as u8)))
        });
    let challenge = s.challenge.as_ref().map(|c| (c.ends_at, Due::Challenge));
    (invite.into_iter())
        .chain(battle)
        .chain(seat_invites)
        .chain(holds)
        .chain(challenge)
}

/// The room's next deadline.
pub(super) fn next(config: &Config, state: &RoomState) -> Option<ServerTime> {
    items(config, state).map(|(t, _)| t).min()
}

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
