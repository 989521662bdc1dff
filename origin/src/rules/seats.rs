//! Co-host seats. The host invites and the guest accepts; or a viewer applies
//! and the host approves or denies; or, in free-take mode, a viewer takes a
//! free seat. The host kicks, mutes (any seat) and locks; a guest mutes or
//! unmutes itself (but cannot lift the host's mute) and leaves. A
//! disconnected guest's seat is held for `seat_hold`, then released.
//!
//! Invariants kept here (and re-checked by `apply`): a seat holds at most one
//! user; a user sits on at most one seat; a locked seat is empty.

use protocol::room::{ApplicationEnd, InviteEnd, Mute, SeatLeaveReason, SeatMode};
use protocol::{EventKind, Reason, RoomId, UserId};

use super::txn::{Role, Txn, Who};

fn seat_index(t: &Txn<'_>, room: RoomId, seat: u8) -> Result<usize, Reason> {
    let n = seat as usize;
    if n < t.state(room)?.seats.seats.len() {
        Ok(n)
    } else {
        Err(Reason::NoSuchSeat)
    }
}

pub(super) fn mode(t: &mut Txn<'_>, who: Who, room: RoomId, mode: SeatMode) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    t.emit(room, EventKind::SeatModeSet { mode })?;
    Ok(())
}

pub(super) fn invite(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    user: UserId,
    seat: Option<u8>,
) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    if user == who.user {
        return Err(Reason::BadArgument);
    }
    let state = t.state(room)?;
    if state.seats.seat_of(user).is_some() {
        return Err(Reason::AlreadySeated);
    }
    if state.seats.invite_for(user).is_some() {
        return Err(Reason::Busy);
    }
    if state.seats.invites.len() >= t.config().max_seat_queue {
        return Err(Reason::TooMany);
    }
    if let Some(s) = seat {
        check_free(t, room, seat_index(t, room, s)?)?;
    }
    let expires_at = t.now() + t.config().seat_invite_timeout;
    t.emit(
        room,
        EventKind::SeatInvited {
            user,
            seat,
            expires_at,
        },
    )?;
    Ok(())
}

pub(super) fn cancel_invite(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    user: UserId,
) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    close_invite(t, room, user, InviteEnd::Cancelled)
}

fn close_invite(
    t: &mut Txn<'_>,
    room: RoomId,
    user: UserId,
    reason: InviteEnd,
) -> Result<(), Reason> {
    if t.state(room)?.seats.invite_for(user).is_none() {
        return Err(Reason::NoInvite);
    }
    t.emit(room, EventKind::SeatInviteClosed { user, reason })?;
    Ok(())
}

pub(super) fn accept(t: &mut Txn<'_>, who: Who, room: RoomId) -> Result<(), Reason> {
    let state = t.state(room)?;
    let invite = (state.seats.invite_for(who.user).cloned()).ok_or(Reason::NoInvite)?;
    if state.seats.seat_of(who.user).is_some() {
        return Err(Reason::AlreadySeated);
    }
    // The offered seat if it is still free; an open offer takes the first free.
    let seat = match invite.seat {
        Some(s) => {
            let n = seat_index(t, room, s)?;
            check_free(t, room, n)?;
            n
        }
        None => state.seats.first_free().ok_or(Reason::SeatsFull)?,
    };
    let user = who.user;
    t.emit(
        room,
        EventKind::SeatInviteClosed {
            user,
            reason: InviteEnd::Accepted,
        },
    )?;
    sit(t, room, seat, user)
}

pub(super) fn decline(t: &mut Txn<'_>, who: Who, room: RoomId) -> Result<(), Reason> {
    close_invite(t, room, who.user, InviteEnd::Declined)
}

pub(super) fn apply(t: &mut Txn<'_>, who: Who, room: RoomId) -> Result<(), Reason> {
    match who.role {
        Role::Viewer => {}
        Role::Guest(_) => return Err(Reason::AlreadySeated),
        Role::Host | Role::Operator => return Err(Reason::NotAllowed),
    }
    let seats = &t.state(room)?.seats;
    if seats.mode != SeatMode::ApplyToTake {
        return Err(Reason::WrongMode);
    }
    if seats.applications.contains(&who.user) {
        return Err(Reason::Busy);
    }
    if seats.applications.len() >= t.config().max_seat_queue {
        return Err(Reason::TooMany);
    }
    t.emit(room, EventKind::SeatApplied { user: who.user })?;
    Ok(())
}

pub(super) fn withdraw(t: &mut Txn<'_>, who: Who, room: RoomId) -> Result<(), Reason> {
    close_application(t, room, who.user, ApplicationEnd::Withdrawn)
}

fn close_application(
    t: &mut Txn<'_>,
    room: RoomId,
    user: UserId,
    reason: ApplicationEnd,
) -> Result<(), Reason> {
    if !t.state(room)?.seats.applications.contains(&user) {
        return Err(Reason::NoApplication);
    }
    t.emit(room, EventKind::SeatApplicationClosed { user, reason })?;
    Ok(())
}

pub(super) fn approve(t: &mut Txn<'_>, who: Who, room: RoomId, user: UserId) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    let seats = &t.state(room)?.seats;
    if !seats.applications.contains(&user) {
        return Err(Reason::NoApplication);
    }
    let seat = seats.first_free().ok_or(Reason::SeatsFull)?;
    t.emit(
        room,
        EventKind::SeatApplicationClosed {
            user,
            reason: ApplicationEnd::Approved,
        },
    )?;
    sit(t, room, seat, user)
}

pub(super) fn deny(t: &mut Txn<'_>, who: Who, room: RoomId, user: UserId) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    close_application(t, room, user, ApplicationEnd::Denied)
}

/// Free-take mode: the first taker of a free seat gets it.
pub(super) fn take(t: &mut Txn<'_>, who: Who, room: RoomId, seat: u8) -> Result<(), Reason> {
    match who.role {
        Role::Viewer => {}
        Role::Guest(_) => return Err(Reason::AlreadySeated),
        Role::Host | Role::Operator => return Err(Reason::NotAllowed),
    }
    if t.state(room)?.seats.mode != SeatMode::FreeTake {
        return Err(Reason::WrongMode);
    }
    let n = seat_index(t, room, seat)?;
    check_free(t, room, n)?;
    sit(t, room, n, who.user)
}

fn check_free(t: &Txn<'_>, room: RoomId, n: usize) -> Result<(), Reason> {
    let seat = t
        .state(room)?
        .seats
        .seats
        .get(n)
        .ok_or(Reason::NoSuchSeat)?;
    if seat.user.is_some() {
        Err(Reason::SeatTaken)
    } else if seat.locked {
        Err(Reason::SeatLocked)
    } else {
        Ok(())
    }
}

/// Seat `user`, closing whatever else was pending for them.
fn sit(t: &mut Txn<'_>, room: RoomId, seat: usize, user: UserId) -> Result<(), Reason> {
    let seats = &t.state(room)?.seats;
    let invited = seats.invite_for(user).is_some();
    let applied = seats.applications.contains(&user);
    if invited {
        t.emit(
            room,
            EventKind::SeatInviteClosed {
                user,
                reason: InviteEnd::Seated,
            },
        )?;
    }
    if applied {
        t.emit(
            room,
            EventKind::SeatApplicationClosed {
                user,
                reason: ApplicationEnd::Seated,
            },
        )?;
    }
    let seat = u8::try_from(seat).map_err(|_| Reason::Internal)?;
    t.emit(room, EventKind::SeatTaken { seat, user })?;
    Ok(())
}

pub(super) fn kick(t: &mut Txn<'_>, who: Who, room: RoomId, seat: u8) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    let n = seat_index(t, room, seat)?;
    let user = t.state(room)?.seats.seats[n]
        .user
        .ok_or(Reason::NotSeated)?;
    let reason = SeatLeaveReason::Kicked;
    t.emit(room, EventKind::SeatLeft { seat, user, reason })?;
    Ok(())
}

pub(super) fn mute(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    seat: u8,
    muted: bool,
) -> Result<(), Reason> {
    let n = seat_index(t, room, seat)?;
    let current = &t.state(room)?.seats.seats[n];
    if current.user.is_none() {
        return Err(Reason::NotSeated);
    }
    let mute = match who.role {
        Role::Host | Role::Operator => {
            if muted {
                Mute::ByHost
            } else {
                Mute::Off
            }
        }
        Role::Guest(own) if own == n => {
            if current.mute == Mute::ByHost {
                // The host's mute is the host's to lift.
                return Err(Reason::NotAllowed);
            }
            if muted {
                Mute::BySelf
            } else {
                Mute::Off
            }
        }
        _ => return Err(Reason::NotAllowed),
    };
    t.emit(room, EventKind::SeatMuted { seat, mute })?;
    Ok(())
}

pub(super) fn lock(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    seat: u8,
    locked: bool,
) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    let n = seat_index(t, room, seat)?;
    if locked && t.state(room)?.seats.seats[n].user.is_some() {
        return Err(Reason::SeatTaken);
    }
    t.emit(room, EventKind::SeatLocked { seat, locked })?;
    Ok(())
}

pub(super) fn leave(t: &mut Txn<'_>, who: Who, room: RoomId) -> Result<(), Reason> {
    let Role::Guest(n) = who.role else {
        return Err(Reason::NotSeated);
    };
    let seat = u8::try_from(n).map_err(|_| Reason::Internal)?;
    let reason = SeatLeaveReason::Left;
    t.emit(
        room,
        EventKind::SeatLeft {
            seat,
            user: who.user,
            reason,
        },
    )?;
    Ok(())
}

/// A seated guest went offline (its seat is held) or came back. Anyone else's
/// presence changes nothing in the log.
pub(super) fn presence(
    t: &mut Txn<'_>,
    room: RoomId,
    user: UserId,
    online: bool,
) -> Result<(), Reason> {
    let Some(state) = t.state(room).ok() else {
        return Ok(());
    };
    let Some(n) = state.seats.seat_of(user) else {
        return Ok(());
    };
    let away = state.seats.seats[n].away_since.is_some();
    let seat = u8::try_from(n).map_err(|_| Reason::Internal)?;
    match (online, away) {
        (false, false) => t.emit(room, EventKind::SeatAway { seat, user })?,
        (true, true) => t.emit(room, EventKind::SeatBack { seat, user })?,
        _ => return Ok(()),
    };
    Ok(())
}

/// Timer: an unanswered seat invitation lapsed.
pub(super) fn expire_invite(t: &mut Txn<'_>, room: RoomId, user: UserId) -> Result<(), Reason> {
    close_invite(t, room, user, InviteEnd::Expired)
}

/// Timer: a guest stayed away past the hold.
pub(super) fn release(t: &mut Txn<'_>, room: RoomId, seat: u8) -> Result<(), Reason> {
    let n = seat_index(t, room, seat)?;
    let user = t.state(room)?.seats.seats[n].user.ok_or(Reason::Internal)?;
    let reason = SeatLeaveReason::Released;
    t.emit(room, EventKind::SeatLeft { seat, user, reason })?;
    Ok(())
}
