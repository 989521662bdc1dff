//! PK battles: invite → pending (with a timeout) → accept / reject / cancel /
//! timeout → running until the bell at `ends_at` → a grace for gifts stamped
//! before the bell → settled (winner or draw) → punishment phase → closed.
//! Either host may forfeit until settlement. A room has at most one pending
//! invitation (sent or received) and at most one battle; both rooms of a
//! battle carry the same invitation and battle, event for event.

use protocol::room::{Battle, BattlePhase, BattleResult, PkInvite, PkInviteEnd};
use protocol::{BattleId, EventKind, Reason, RoomId};
use std::time::Duration;

use super::txn::{Txn, Who};

/// Emit the same event in both rooms of a pair; the actor's room last, so its
/// outcome names the final event.
fn both(t: &mut Txn<'_>, actor_room: RoomId, other: RoomId, kind: EventKind) -> Result<(), Reason> {
    t.emit(other, kind.clone())?;
    t.emit(actor_room, kind)?;
    Ok(())
}

pub(super) fn invite(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    to: RoomId,
    duration_secs: u32,
) -> Result<(), Reason> {
    Who::require(who.is_host())?;
    if to == room {
        return Err(Reason::SameRoom);
    }
    let duration = Duration::from_secs(u64::from(duration_secs));
    let cfg = t.config();
    if duration < cfg.pk_min_duration || duration > cfg.pk_max_duration {
        return Err(Reason::BadArgument);
    }
    let here = t.state(room)?;
    if here.battle.is_some() {
        return Err(Reason::Busy);
    }
    if let Some(pending) = &here.pk_invite {
        // Crossing invites: B invites A while A's invite to B is pending.
        // The second invite is an acceptance of the first; one battle.
        if pending.from == to && pending.to == room {
            let battle = pending.battle;
            return start(t, room, battle);
        }
        return Err(Reason::Busy);
    }
    // The invited room must exist: only its own host opens it.
    let there = t.state(to).map_err(|_| Reason::NoRoom)?;
    if there.battle.is_some() || there.pk_invite.is_some() {
        return Err(Reason::Busy);
    }
    let invite = PkInvite {
        battle: t.next_battle(),
        from: room,
        to,
        by: who.user,
        duration_secs,
        expires_at: t.now() + t.config().pk_invite_timeout,
    };
    both(t, room, to, EventKind::PkInvited(invite))
}

/// The pending invitation for `battle` that `room` received.
fn received(t: &Txn<'_>, room: RoomId, battle: BattleId) -> Result<PkInvite, Reason> {
    match &t.state(room)?.pk_invite {
        Some(i) if i.battle == battle && i.to == room => Ok(i.clone()),
        _ => Err(lapsed(t, battle)),
    }
}

/// Why an invitation that is not pending cannot be answered.
fn lapsed(t: &Txn<'_>, battle: BattleId) -> Reason {
    match t.closed_invite(battle) {
        Some(PkInviteEnd::Expired) => Reason::Expired,
        _ => Reason::NoInvite,
    }
}

pub(super) fn accept(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    battle: BattleId,
) -> Result<(), Reason> {
    Who::require(who.is_host())?;
    received(t, room, battle)?;
    start(t, room, battle)
}

/// Start the battle of the invitation pending in `room` (the invited room, or
/// the inviting room when invites crossed).
fn start(t: &mut Txn<'_>, room: RoomId, battle: BattleId) -> Result<(), Reason> {
    let invite = (t.state(room)?.pk_invite.clone()).ok_or(Reason::Internal)?;
    let now = t.now();
    let ends_at = now + Duration::from_secs(u64::from(invite.duration_secs));
    let b = Battle {
        id: battle,
        rooms: [invite.from, invite.to],
        scores: [0, 0],
        started_at: now,
        ends_at,
        settles_at: ends_at + t.config().pk_grace,
        phase: BattlePhase::Running,
        result: None,
    };
    let other = if invite.from == room {
        invite.to
    } else {
        invite.from
    };
    both(t, room, other, EventKind::PkStarted(b))
}

pub(super) fn reject(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    battle: BattleId,
) -> Result<(), Reason> {
    Who::require(who.is_host())?;
    let invite = received(t, room, battle)?;
    let reason = PkInviteEnd::Rejected;
    both(
        t,
        room,
        invite.from,
        EventKind::PkInviteClosed { battle, reason },
    )
}

pub(super) fn cancel(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    battle: BattleId,
) -> Result<(), Reason> {
    Who::require(who.is_host())?;
    let invite = match &t.state(room)?.pk_invite {
        Some(i) if i.battle == battle && i.from == room => i.clone(),
        _ => return Err(lapsed(t, battle)),
    };
    let reason = PkInviteEnd::Cancelled;
    both(
        t,
        room,
        invite.to,
        EventKind::PkInviteClosed { battle, reason },
    )
}

pub(super) fn forfeit(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    battle: BattleId,
) -> Result<(), Reason> {
    Who::require(who.is_host())?;
    let b = match &t.state(room)?.battle {
        Some(b) if b.id == battle => b.clone(),
        _ => return Err(Reason::NoBattle),
    };
    if b.result.is_some() {
        return Err(Reason::BattleOver);
    }
    settle(t, room, &b, Some(room))
}

/// Decide the battle. A forfeit names the room that gave up; otherwise the
/// higher score wins and equal scores are a draw.
fn settle(
    t: &mut Txn<'_>,
    room: RoomId,
    b: &Battle,
    forfeited_by: Option<RoomId>,
) -> Result<(), Reason> {
    let winner = match forfeited_by {
        Some(quitter) => b.peer_of(quitter),
        None => match b.scores[0].cmp(&b.scores[1]) {
            std::cmp::Ordering::Greater => Some(b.rooms[0]),
            std::cmp::Ordering::Less => Some(b.rooms[1]),
            std::cmp::Ordering::Equal => None,
        },
    };
    let result = BattleResult {
        battle: b.id,
        rooms: b.rooms,
        scores: b.scores,
        winner,
        forfeited_by,
    };
    let punishment_until = t.now() + t.config().pk_punishment;
    let other = b.peer_of(room).ok_or(Reason::Internal)?;
    both(
        t,
        room,
        other,
        EventKind::PkSettled {
            result,
            punishment_until,
        },
    )
}

/// Timer: the pending invitation in `room` lapsed.
pub(super) fn expire_invite(t: &mut Txn<'_>, room: RoomId) -> Result<(), Reason> {
    let invite = (t.state(room)?.pk_invite.clone()).ok_or(Reason::Internal)?;
    let battle = invite.battle;
    let reason = PkInviteEnd::Expired;
    let other = if invite.from == room {
        invite.to
    } else {
        invite.from
    };
    both(t, room, other, EventKind::PkInviteClosed { battle, reason })
}

/// Timer: move the battle in `room` to its next phase.
pub(super) fn advance(t: &mut Txn<'_>, room: RoomId) -> Result<(), Reason> {
    let b = (t.state(room)?.battle.clone()).ok_or(Reason::Internal)?;
    let other = b.peer_of(room).ok_or(Reason::Internal)?;
    match b.phase {
        BattlePhase::Running => both(t, room, other, EventKind::PkBell { battle: b.id }),
        BattlePhase::Grace => settle(t, room, &b, None),
        BattlePhase::Punishment { .. } => {
            both(t, room, other, EventKind::PkClosed { battle: b.id })
        }
    }
}

/// Whether a gift in `room`, stamped `stamp`, counts in the room's battle.
/// Counting needs a trusted stamp before the bell and an arrival before the
/// grace ends (the timers guarantee the battle is not yet settled then).
pub(super) fn credit(
    t: &Txn<'_>,
    room: RoomId,
    stamp: protocol::ServerTime,
) -> Option<(Battle, usize)> {
    let b = t.state(room).ok()?.battle.clone()?;
    let side = b.side_of(room)?;
    let open = matches!(b.phase, BattlePhase::Running | BattlePhase::Grace);
    (open && stamp < b.ends_at && t.now() < b.settles_at).then_some((b, side))
}
