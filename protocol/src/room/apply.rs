use thiserror::Error;

use crate::id::Seq;
use crate::time::ServerTime;

use super::event::{Event, EventKind};
use super::state::{BattlePhase, RoomState, Seat, SeatInvite, MAX_SEATS};

/// Why an event could not be applied. The state is unchanged when this is
/// returned: a mirror that sees it asks for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The event is not the next one: events in between are missing.
    #[error("gap: expected {expected}, got {got}")]
    Gap {
        /// The seq that would have fitted.
        expected: Seq,
        /// The seq that came.
        got: Seq,
    },
    /// The event was applied already (a duplicate or a late copy).
    #[error("stale event {got}: state is at {current}")]
    Stale {
        /// The state's seq.
        current: Seq,
        /// The seq that came.
        got: Seq,
    },
    /// The event contradicts the state (no such seat, wrong battle…). Only a
    /// bug or a forged event can cause this.
    #[error("event {seq} does not fit the state: {why}")]
    Invalid {
        /// The offending event.
        seq: Seq,
        /// What did not fit.
        why: &'static str,
    },
}

impl RoomState {
    /// Move the state forward by one event: the only way state ever changes.
    ///
    /// The event must be the next one (`state.seq + 1`); otherwise, or when it
    /// contradicts the state, nothing changes and an error says why.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let expected = self.seq.next();
        if event.seq < expected {
            return Err(ApplyError::Stale {
                current: self.seq,
                got: event.seq,
            });
        }
        if event.seq > expected {
            return Err(ApplyError::Gap {
                expected,
                got: event.seq,
            });
        }
        let invalid = |why| ApplyError::Invalid {
            seq: event.seq,
            why,
        };
        if !self.is_open() && !matches!(event.kind, EventKind::Opened { .. }) {
            return Err(invalid("the first event must be Opened"));
        }
        self.apply_kind(event.at, &event.kind).map_err(invalid)?;
        self.seq = event.seq;
        self.at = event.at;
        Ok(())
    }

    fn apply_kind(&mut self, at: ServerTime, kind: &EventKind) -> Result<(), &'static str> {
        match kind {
            EventKind::Opened { .. }
            | EventKind::Gift { .. }
            | EventKind::Chat { .. }
            | EventKind::Likes { .. } => self.apply_room(kind),
            EventKind::PkInvited(_)
            | EventKind::PkInviteClosed { .. }
            | EventKind::PkStarted(_)
            | EventKind::PkScore { .. }
            | EventKind::PkBell { .. }
            | EventKind::PkSettled { .. }
            | EventKind::PkClosed { .. } => self.apply_pk(at, kind),
            EventKind::ChallengeStarted(_)
            | EventKind::ChallengeProgress { .. }
            | EventKind::ChallengeEnded { .. } => self.apply_challenge(kind),
            // Every other kind is a seat's.
            _ => self.apply_seat(at, kind),
        }
    }

    /// Opening, gifts, chat and likes.
    fn apply_room(&mut self, kind: &EventKind) -> Result<(), &'static str> {
        match kind {
            EventKind::Opened { seats } => {
                if self.is_open() {
                    return Err("room already open");
                }
                if *seats as usize > MAX_SEATS {
                    return Err("too many seats");
                }
                self.seats.seats = vec![Seat::default(); *seats as usize];
            }
            EventKind::Gift {
                count,
                value,
                room_total,
                pk,
                ..
            } => {
                if *room_total != self.gift_value.saturating_add(*value) {
                    return Err("gift total does not add up");
                }
                if let Some((id, scores)) = pk {
                    let battle = self.battle.as_mut().ok_or("gift credits no battle")?;
                    if battle.id != *id {
                        return Err("gift credits another battle");
                    }
                    battle.scores = *scores;
                }
                self.gift_value = *room_total;
                self.gift_count = self.gift_count.saturating_add(u64::from(*count));
            }
            EventKind::Chat { .. } => self.chats = self.chats.saturating_add(1),
            EventKind::Likes { count, total, .. } => {
                if *total != self.likes.saturating_add(u64::from(*count)) {
                    return Err("likes total does not add up");
                }
                self.likes = *total;
            }
            _ => return Err("not an event of this kind"),
        }
        Ok(())
    }

    /// PK invitations and battles.
    fn apply_pk(&mut self, _at: ServerTime, kind: &EventKind) -> Result<(), &'static str> {
        match kind {
            EventKind::PkInvited(invite) => {
                if self.pk_invite.is_some() || self.battle.is_some() {
                    return Err("room already has a PK invite or battle");
                }
                if invite.from != self.room && invite.to != self.room {
                    return Err("PK invite for another room");
                }
                self.pk_invite = Some(invite.clone());
            }
            EventKind::PkInviteClosed { battle, .. } => match &self.pk_invite {
                Some(i) if i.battle == *battle => self.pk_invite = None,
                _ => return Err("no such PK invite"),
            },
            EventKind::PkStarted(battle) => {
                if self.battle.is_some() {
                    return Err("room already in a battle");
                }
                if battle.side_of(self.room).is_none() {
                    return Err("battle of other rooms");
                }
                if matches!(&self.pk_invite, Some(i) if i.battle == battle.id) {
                    self.pk_invite = None;
                }
                self.battle = Some(battle.clone());
            }
            EventKind::PkScore { battle, scores } => {
                let b = self.battle.as_mut().ok_or("no battle")?;
                if b.id != *battle {
                    return Err("score for another battle");
                }
                b.scores = *scores;
            }
            EventKind::PkBell { battle } => {
                let b = self.battle.as_mut().ok_or("no battle")?;
                if b.id != *battle || b.phase != BattlePhase::Running {
                    return Err("bell for no running battle");
                }
                b.phase = BattlePhase::Grace;
            }
            EventKind::PkSettled {
                result,
                punishment_until,
            } => {
                let b = self.battle.as_mut().ok_or("no battle")?;
                if b.id != result.battle || b.result.is_some() {
                    return Err("settlement for no open battle");
                }
                b.scores = result.scores;
                b.result = Some(result.clone());
                b.phase = BattlePhase::Punishment {
                    until: *punishment_until,
                };
            }
            EventKind::PkClosed { battle } => {
                let b = self.battle.take().ok_or("no battle")?;
                if b.id != *battle {
                    self.battle = Some(b);
                    return Err("closing another battle");
                }
                if b.result.is_some() {
                    self.last_result = b.result;
                }
            }
            _ => return Err("not an event of this kind"),
        }
        Ok(())
    }

    /// Co-host seats.
    fn apply_seat(&mut self, at: ServerTime, kind: &EventKind) -> Result<(), &'static str> {
        match kind {
            EventKind::SeatModeSet { mode } => self.seats.mode = *mode,
            EventKind::SeatInvited {
                user,
                seat,
                expires_at,
            } => {
                if self.seats.invite_for(*user).is_some() {
                    return Err("user already invited");
                }
                if let Some(s) = seat {
                    if *s as usize >= self.seats.seats.len() {
                        return Err("no such seat");
                    }
                }
                self.seats.invites.push(SeatInvite {
                    user: *user,
                    seat: *seat,
                    expires_at: *expires_at,
                });
            }
            EventKind::SeatInviteClosed { user, .. } => {
                let i = (self.seats.invites.iter())
                    .position(|i| i.user == *user)
                    .ok_or("no such seat invite")?;
                self.seats.invites.remove(i);
            }
            EventKind::SeatApplied { user } => {
                if self.seats.applications.contains(user) {
                    return Err("user already applied");
                }
                self.seats.applications.push(*user);
            }
            EventKind::SeatApplicationClosed { user, .. } => {
                let i = (self.seats.applications.iter())
                    .position(|u| u == user)
                    .ok_or("no such application")?;
                self.seats.applications.remove(i);
            }
            EventKind::SeatTaken { seat, user } => {
                if self.seats.seat_of(*user).is_some() {
                    return Err("user already seated");
                }
                let s = self.seat_mut(*seat)?;
                if !s.is_free() {
                    return Err("seat not free");
                }
                *s = Seat {
                    user: Some(*user),
                    ..Seat::default()
                };
            }
            EventKind::SeatLeft { seat, user, .. } => {
                let s = self.seat_mut(*seat)?;
                if s.user != Some(*user) {
                    return Err("user not on that seat");
                }
                *s = Seat {
                    locked: s.locked,
                    ..Seat::default()
                };
            }
            EventKind::SeatMuted { seat, mute } => {
                let s = self.seat_mut(*seat)?;
                if s.user.is_none() {
                    return Err("muting an empty seat");
                }
                s.mute = *mute;
            }
            EventKind::SeatLocked { seat, locked } => {
                let s = self.seat_mut(*seat)?;
                if s.user.is_some() && *locked {
                    return Err("locking an occupied seat");
                }
                s.locked = *locked;
            }
            EventKind::SeatAway { seat, user } => {
                let s = self.seat_mut(*seat)?;
                if s.user != Some(*user) || s.away_since.is_some() {
                    return Err("away for a guest not present on that seat");
                }
                s.away_since = Some(at);
            }
            EventKind::SeatBack { seat, user } => {
                let s = self.seat_mut(*seat)?;
                if s.user != Some(*user) || s.away_since.is_none() {
                    return Err("back for a guest not away on that seat");
                }
                s.away_since = None;
            }
            _ => return Err("not an event of this kind"),
        }
        Ok(())
    }

    /// Timed engagement events.
    fn apply_challenge(&mut self, kind: &EventKind) -> Result<(), &'static str> {
        match kind {
            EventKind::ChallengeStarted(c) => {
                if self.challenge.is_some() {
                    return Err("a challenge is running");
                }
                self.challenge = Some(c.clone());
            }
            EventKind::ChallengeProgress { id, progress } => {
                let c = self.challenge.as_mut().ok_or("no challenge")?;
                if c.id != *id {
                    return Err("progress of another challenge");
                }
                c.progress = *progress;
            }
            EventKind::ChallengeEnded { id, .. } => match &self.challenge {
                Some(c) if c.id == *id => self.challenge = None,
                _ => return Err("ending no such challenge"),
            },
            _ => return Err("not an event of this kind"),
        }
        Ok(())
    }

    fn seat_mut(&mut self, seat: u8) -> Result<&mut Seat, &'static str> {
        self.seats
            .seats
            .get_mut(seat as usize)
            .ok_or("no such seat")
    }
}
