//! Gifts, comments, likes and timed engagement events (challenges).

use protocol::room::{Challenge, Goal, MAX_CHAT_BYTES};
use protocol::{EventKind, GiftId, Reason, RoomId, ServerTime};
use std::time::Duration;

use super::config::trusted_stamp;
use super::pk;
use super::txn::{Role, Txn, Who};

/// Anyone but the host may gift: value = catalogue value × count. During a
/// battle the gift also credits the room's side (see [`pk::credit`]), and the
/// other room hears the new scores. A running challenge counts it too.
pub(super) fn gift(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    sent_at: ServerTime,
    gift: GiftId,
    count: u32,
) -> Result<(), Reason> {
    Who::require(who.role != Role::Host)?;
    let cfg = t.config();
    let unit = *cfg.gifts.get(&gift).ok_or(Reason::UnknownGift)?;
    if count == 0 || count > cfg.max_gift_count {
        return Err(Reason::BadArgument);
    }
    let value = unit
        .checked_mul(u64::from(count))
        .ok_or(Reason::BadArgument)?;
    let stamp = trusted_stamp(cfg, t.now(), sent_at);
    let state = t.state(room)?;
    let room_total = state
        .gift_value
        .checked_add(value)
        .ok_or(Reason::BadArgument)?;
    let pk = pk::credit(t, room, stamp).map(|(b, side)| {
        let mut scores = b.scores;
        scores[side] = scores[side].saturating_add(value);
        (b, scores)
    });
    if let Some((b, scores)) = &pk {
        let other = b.peer_of(room).ok_or(Reason::Internal)?;
        t.emit(
            other,
            EventKind::PkScore {
                battle: b.id,
                scores: *scores,
            },
        )?;
    }
    t.emit(
        room,
        EventKind::Gift {
            from: who.user,
            gift,
            count,
            value,
            room_total,
            pk: pk.map(|(b, scores)| (b.id, scores)),
        },
    )?;
    progress(t, room, |goal| match goal {
        Goal::GiftValue(_) => value,
        Goal::GiftCount(_) => u64::from(count),
        Goal::Likes(_) => 0,
    })
}

pub(super) fn chat(t: &mut Txn<'_>, who: Who, room: RoomId, text: &str) -> Result<(), Reason> {
    if text.trim().is_empty() {
        return Err(Reason::BadArgument);
    }
    if text.len() > MAX_CHAT_BYTES {
        return Err(Reason::TooLong);
    }
    let from = who.user;
    let text = text.to_owned();
    t.emit(room, EventKind::Chat { from, text })?;
    Ok(())
}

pub(super) fn like(t: &mut Txn<'_>, who: Who, room: RoomId, count: u32) -> Result<(), Reason> {
    if count == 0 || count > t.config().max_likes {
        return Err(Reason::BadArgument);
    }
    let total = t.state(room)?.likes.saturating_add(u64::from(count));
    let from = who.user;
    t.emit(room, EventKind::Likes { from, count, total })?;
    progress(t, room, |goal| match goal {
        Goal::Likes(_) => u64::from(count),
        _ => 0,
    })
}

/// Host or operator: one challenge at a time, a positive target, a window
/// within the configured bounds.
pub(super) fn challenge_start(
    t: &mut Txn<'_>,
    who: Who,
    room: RoomId,
    goal: Goal,
    window_secs: u32,
) -> Result<(), Reason> {
    Who::require(who.is_staff())?;
    let window = Duration::from_secs(u64::from(window_secs));
    let cfg = t.config();
    if goal.target() == 0 || window < cfg.challenge_min_window || window > cfg.challenge_max_window
    {
        return Err(Reason::BadArgument);
    }
    if t.state(room)?.challenge.is_some() {
        return Err(Reason::ChallengeRunning);
    }
    let c = Challenge {
        id: t.next_challenge(),
        goal,
        by: who.user,
        started_at: t.now(),
        ends_at: t.now() + window,
        progress: 0,
    };
    t.emit(room, EventKind::ChallengeStarted(c))?;
    Ok(())
}

/// Count towards the running challenge; it succeeds the moment its goal is
/// reached. Only what arrives before the deadline counts (the deadline timer
/// fires before any later input).
fn progress(t: &mut Txn<'_>, room: RoomId, amount: impl Fn(Goal) -> u64) -> Result<(), Reason> {
    let Some(c) = t.state(room)?.challenge.clone() else {
        return Ok(());
    };
    let add = amount(c.goal);
    if add == 0 || t.now() >= c.ends_at {
        return Ok(());
    }
    let progress = c.progress.saturating_add(add);
    t.emit(room, EventKind::ChallengeProgress { id: c.id, progress })?;
    if progress >= c.goal.target() {
        let id = c.id;
        t.emit(
            room,
            EventKind::ChallengeEnded {
                id,
                success: true,
                progress,
            },
        )?;
    }
    Ok(())
}

/// Timer: the challenge's deadline passed without reaching its goal.
pub(super) fn challenge_deadline(t: &mut Txn<'_>, room: RoomId) -> Result<(), Reason> {
    let c = (t.state(room)?.challenge.clone()).ok_or(Reason::Internal)?;
    let progress = c.progress;
    let success = progress >= c.goal.target();
    t.emit(
        room,
        EventKind::ChallengeEnded {
            id: c.id,
            success,
            progress,
        },
    )?;
    Ok(())
}
