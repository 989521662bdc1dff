//! The room rules as short stories, one per rule, driven by a virtual clock.

mod common;

use common::*;
use protocol::message::{ActionMsg, Actor};
use protocol::room::{
    ApplicationEnd, BattlePhase, Goal, Grant, InviteEnd, Mute, PkInviteEnd, SeatLeaveReason,
    SeatMode,
};
use protocol::{Action, ActionId, EventKind, GiftId, Reason, SessionId, UserId};

mod pk {
    use super::*;

    #[test]
    fn a_whole_battle_from_invite_to_close() {
        let mut w = World::new();
        let battle = start_battle(&mut w, 60);
        let b = w.state(A).battle.clone().expect("battle in A");
        assert_eq!(b.phase, BattlePhase::Running);
        assert_eq!(b.rooms, [A, B]);
        assert_eq!(b.ends_at, w.now + secs(60));

        applied(w.viewer(11, A, gift(3))); // 300 for A
        applied(w.viewer(21, B, gift(2))); // 200 for B
        applied(w.viewer(12, A, gift(1))); // 100 more for A
        assert_eq!(
            w.state(A).battle.as_ref().map(|b| b.scores),
            Some([400, 200])
        );

        w.advance(secs(60));
        assert!(matches!(w.last_event(A), EventKind::PkBell { .. }));
        assert_eq!(
            w.state(B).battle.as_ref().map(|b| b.phase),
            Some(BattlePhase::Grace)
        );

        w.advance(secs(2));
        let result = w
            .state(A)
            .battle
            .as_ref()
            .and_then(|b| b.result.clone())
            .expect("settled");
        assert_eq!(result.winner, Some(A));
        assert_eq!(result.scores, [400, 200]);
        assert_eq!(result.battle, battle);

        w.advance(secs(5));
        assert!(w.state(A).battle.is_none() && w.state(B).battle.is_none());
        assert_eq!(
            w.state(B).last_result.as_ref().map(|r| r.winner),
            Some(Some(A))
        );
    }

    #[test]
    fn both_rooms_see_the_same_battle_at_every_step() {
        let mut w = World::new();
        start_battle(&mut w, 30);
        for step in 0..8 {
            applied(w.viewer(10 + step, if step % 2 == 0 { A } else { B }, gift(1)));
            assert_eq!(w.state(A).battle, w.state(B).battle);
            w.advance(secs(5));
            assert_eq!(w.state(A).battle, w.state(B).battle);
        }
    }

    #[test]
    fn crossing_invites_become_one_battle() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::PkInvite {
                to: B,
                duration_secs: 60,
            },
        ));
        let first = w.pending_battle(A);
        // B invites A before answering A's invitation: that is a yes.
        applied(w.host(
            B,
            Action::PkInvite {
                to: A,
                duration_secs: 30,
            },
        ));
        let a = w.state(A).battle.clone().expect("A in a battle");
        let b = w.state(B).battle.clone().expect("B in a battle");
        assert_eq!(a, b);
        assert_eq!(a.id, first);
        assert!(w.state(A).pk_invite.is_none() && w.state(B).pk_invite.is_none());
        // The first invitation's terms hold: 60 seconds.
        assert_eq!(a.ends_at, w.now + secs(60));
    }

    #[test]
    fn an_invite_can_be_rejected_or_cancelled() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::PkInvite {
                to: B,
                duration_secs: 60,
            },
        ));
        let battle = w.pending_battle(B);
        applied(w.host(B, Action::PkReject { battle }));
        assert!(matches!(
            w.last_event(A),
            EventKind::PkInviteClosed {
                reason: PkInviteEnd::Rejected,
                ..
            }
        ));
        applied(w.host(
            A,
            Action::PkInvite {
                to: B,
                duration_secs: 60,
            },
        ));
        let battle = w.pending_battle(A);
        // Only the inviter cancels; only the invited accepts.
        assert_eq!(
            rejected(w.host(B, Action::PkCancel { battle })),
            Reason::NoInvite
        );
        assert_eq!(
            rejected(w.host(A, Action::PkAccept { battle })),
            Reason::NoInvite
        );
        applied(w.host(A, Action::PkCancel { battle }));
        assert!(w.state(A).pk_invite.is_none() && w.state(B).pk_invite.is_none());
        assert_eq!(
            rejected(w.host(B, Action::PkAccept { battle })),
            Reason::NoInvite
        );
    }

    #[test]
    fn an_accept_after_the_invite_timed_out_is_expired() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::PkInvite {
                to: B,
                duration_secs: 60,
            },
        ));
        let battle = w.pending_battle(B);
        w.advance(secs(10));
        assert!(matches!(
            w.last_event(B),
            EventKind::PkInviteClosed {
                reason: PkInviteEnd::Expired,
                ..
            }
        ));
        assert_eq!(
            rejected(w.host(B, Action::PkAccept { battle })),
            Reason::Expired
        );
        assert!(w.state(B).battle.is_none());
    }

    #[test]
    fn an_accept_just_before_the_timeout_starts_the_battle() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::PkInvite {
                to: B,
                duration_secs: 60,
            },
        ));
        let battle = w.pending_battle(B);
        w.advance(secs(10) - std::time::Duration::from_micros(1));
        applied(w.host(B, Action::PkAccept { battle }));
        assert!(w.state(A).battle.is_some());
    }

    #[test]
    fn one_battle_per_room_at_a_time() {
        let mut w = World::new();
        start_battle(&mut w, 60);
        assert_eq!(
            rejected(w.host(
                C,
                Action::PkInvite {
                    to: A,
                    duration_secs: 60
                }
            )),
            Reason::Busy
        );
        assert_eq!(
            rejected(w.host(
                A,
                Action::PkInvite {
                    to: C,
                    duration_secs: 60
                }
            )),
            Reason::Busy
        );
        // A pending invitation also makes a room busy for everyone else.
        let d = protocol::RoomId(4);
        w.open(d);
        applied(w.host(
            C,
            Action::PkInvite {
                to: d,
                duration_secs: 60,
            },
        ));
        assert_eq!(
            rejected(w.host(
                protocol::RoomId(5),
                Action::PkInvite {
                    to: d,
                    duration_secs: 60
                }
            )),
            Reason::Busy
        );
        assert_eq!(
            rejected(w.host(
                C,
                Action::PkInvite {
                    to: A,
                    duration_secs: 60
                }
            )),
            Reason::Busy
        );
    }

    #[test]
    fn only_hosts_run_battles_and_durations_are_bounded() {
        let mut w = World::new();
        let invite = Action::PkInvite {
            to: B,
            duration_secs: 60,
        };
        assert_eq!(rejected(w.viewer(7, A, invite.clone())), Reason::NotAllowed);
        assert_eq!(
            rejected(w.host(
                A,
                Action::PkInvite {
                    to: A,
                    duration_secs: 60
                }
            )),
            Reason::SameRoom
        );
        assert_eq!(
            rejected(w.host(
                A,
                Action::PkInvite {
                    to: B,
                    duration_secs: 1
                }
            )),
            Reason::BadArgument
        );
        assert_eq!(
            rejected(w.host(
                A,
                Action::PkInvite {
                    to: B,
                    duration_secs: 100_000
                }
            )),
            Reason::BadArgument
        );
        applied(w.host(A, invite));
        let battle = w.pending_battle(B);
        assert_eq!(
            rejected(w.viewer(8, B, Action::PkAccept { battle })),
            Reason::NotAllowed
        );
        // The host of another room cannot answer for B.
        assert_eq!(
            rejected(w.act_as(host_of(C), Grant::Host, C, Action::PkAccept { battle })),
            Reason::NoInvite
        );
    }

    #[test]
    fn a_gift_credits_its_own_rooms_side_and_events_carry_totals() {
        let mut w = World::new();
        let battle = start_battle(&mut w, 60);
        applied(w.viewer(21, B, gift(2)));
        applied(w.viewer(22, B, gift(3)));
        match w.last_event(B) {
            EventKind::Gift {
                value,
                room_total,
                pk,
                ..
            } => {
                assert_eq!(value, 300);
                assert_eq!(room_total, 500);
                assert_eq!(pk, Some((battle, [0, 500])));
            }
            other => panic!("expected a gift, got {other:?}"),
        }
        // The other room hears the new totals.
        assert!(matches!(
            w.last_event(A),
            EventKind::PkScore {
                scores: [0, 500],
                ..
            }
        ));
    }

    #[test]
    fn a_gift_stamped_before_the_bell_arriving_in_the_grace_counts() {
        let mut w = World::new();
        start_battle(&mut w, 60);
        let ends_at = w
            .state(A)
            .battle
            .as_ref()
            .map(|b| b.ends_at)
            .expect("battle");
        w.advance(secs(61)); // one second into the two-second grace
        let stamp = ends_at.saturating_sub(std::time::Duration::from_millis(300));
        applied(w.act_stamped(UserId(11), Grant::Viewer, A, gift(1), stamp));
        assert_eq!(w.state(A).battle.as_ref().map(|b| b.scores), Some([100, 0]));
    }

    #[test]
    fn a_gift_stamped_after_the_bell_does_not_count() {
        let mut w = World::new();
        start_battle(&mut w, 60);
        w.advance(secs(61));
        let now = w.now;
        applied(w.act_stamped(UserId(11), Grant::Viewer, A, gift(1), now));
        assert_eq!(w.state(A).battle.as_ref().map(|b| b.scores), Some([0, 0]));
        // The gift itself still reaches the host.
        assert_eq!(w.state(A).gift_value, 100);
    }

    #[test]
    fn a_gift_after_the_grace_is_not_counted() {
        let mut w = World::new();
        start_battle(&mut w, 60);
        let ends_at = w
            .state(A)
            .battle
            .as_ref()
            .map(|b| b.ends_at)
            .expect("battle");
        w.advance(secs(62)); // the grace is over: settled
        let stamp = ends_at.saturating_sub(std::time::Duration::from_millis(100));
        applied(w.act_stamped(UserId(11), Grant::Viewer, A, gift(5), stamp));
        let b = w.state(A).battle.clone().expect("still in punishment");
        assert_eq!(b.scores, [0, 0]);
        assert_eq!(b.result.map(|r| r.winner), Some(None));
    }

    #[test]
    fn a_stamp_from_the_future_or_too_far_back_is_not_trusted() {
        let mut w = World::new();
        start_battle(&mut w, 60);
        let ends_at = w
            .state(A)
            .battle
            .as_ref()
            .map(|b| b.ends_at)
            .expect("battle");
        w.advance(secs(61));
        // Claims to be from long before the bell (more than max_stamp_age ago):
        // judged by arrival, which is after the bell.
        let old = ends_at.saturating_sub(secs(30));
        applied(w.act_stamped(UserId(11), Grant::Viewer, A, gift(1), old));
        // Stamped later than it arrived: judged by arrival too.
        w.advance(std::time::Duration::from_millis(100));
        let future = w.now + secs(1);
        applied(w.act_stamped(UserId(12), Grant::Viewer, B, gift(1), future));
        assert_eq!(w.state(A).battle.as_ref().map(|b| b.scores), Some([0, 0]));
        // Before the bell, a future stamp is replaced by the (earlier) arrival
        // time, which counts.
        let mut w = World::new();
        start_battle(&mut w, 60);
        let future = w.now + secs(600);
        applied(w.act_stamped(UserId(11), Grant::Viewer, A, gift(1), future));
        assert_eq!(w.state(A).battle.as_ref().map(|b| b.scores), Some([100, 0]));
    }

    #[test]
    fn equal_scores_are_a_draw() {
        let mut w = World::new();
        start_battle(&mut w, 10);
        applied(w.viewer(11, A, gift(2)));
        applied(w.viewer(21, B, gift(2)));
        w.advance(secs(12));
        let r = w
            .state(B)
            .battle
            .as_ref()
            .and_then(|b| b.result.clone())
            .expect("settled");
        assert_eq!((r.winner, r.scores), (None, [200, 200]));
    }

    #[test]
    fn either_host_may_forfeit_and_the_other_side_wins() {
        let mut w = World::new();
        let battle = start_battle(&mut w, 60);
        applied(w.viewer(11, A, gift(9)));
        assert_eq!(
            rejected(w.viewer(11, A, Action::PkForfeit { battle })),
            Reason::NotAllowed
        );
        applied(w.host(A, Action::PkForfeit { battle }));
        let r = w
            .state(B)
            .battle
            .as_ref()
            .and_then(|b| b.result.clone())
            .expect("settled");
        assert_eq!((r.winner, r.forfeited_by), (Some(B), Some(A)));
        assert_eq!(
            rejected(w.host(B, Action::PkForfeit { battle })),
            Reason::BattleOver
        );
        w.advance(secs(5));
        assert!(w.state(A).battle.is_none());
        // Both rooms are free for a new battle afterwards.
        start_battle(&mut w, 10);
    }

    #[test]
    fn a_host_cannot_gift_its_own_room() {
        let mut w = World::new();
        assert_eq!(rejected(w.host(A, gift(1))), Reason::NotAllowed);
    }
}

mod gifts {
    use super::*;

    #[test]
    fn gifts_chat_and_likes_carry_totals() {
        let mut w = World::new();
        applied(w.viewer(
            11,
            A,
            Action::Gift {
                gift: GiftId(1),
                count: 3,
            },
        ));
        applied(w.viewer(
            12,
            A,
            Action::Gift {
                gift: GiftId(4),
                count: 2,
            },
        ));
        assert_eq!((w.state(A).gift_value, w.state(A).gift_count), (2003, 5));
        applied(w.viewer(11, A, Action::Like { count: 5 }));
        applied(w.viewer(12, A, Action::Like { count: 2 }));
        assert!(matches!(w.last_event(A), EventKind::Likes { total: 7, .. }));
        applied(w.viewer(11, A, Action::Chat { text: "hi".into() }));
        assert_eq!(w.state(A).chats, 1);
    }

    #[test]
    fn bad_gifts_chats_and_likes_are_refused() {
        let mut w = World::new();
        assert_eq!(
            rejected(w.viewer(
                11,
                A,
                Action::Gift {
                    gift: GiftId(99),
                    count: 1
                }
            )),
            Reason::UnknownGift
        );
        assert_eq!(rejected(w.viewer(11, A, gift(0))), Reason::BadArgument);
        assert_eq!(
            rejected(w.viewer(11, A, gift(1_000_000))),
            Reason::BadArgument
        );
        assert_eq!(
            rejected(w.viewer(11, A, Action::Chat { text: "  ".into() })),
            Reason::BadArgument
        );
        let long = "x".repeat(protocol::room::MAX_CHAT_BYTES + 1);
        assert_eq!(
            rejected(w.viewer(11, A, Action::Chat { text: long })),
            Reason::TooLong
        );
        assert_eq!(
            rejected(w.viewer(11, A, Action::Like { count: 0 })),
            Reason::BadArgument
        );
        assert_eq!(w.state(A).gift_value, 0);
    }
}

mod seats {
    use super::*;

    #[test]
    fn the_host_invites_and_the_guest_accepts() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(11),
                seat: Some(2),
            },
        ));
        applied(w.viewer(11, A, Action::SeatAccept));
        assert_eq!(w.state(A).seats.seats[2].user, Some(UserId(11)));
        assert!(w.state(A).seats.invites.is_empty());
        // Accepting twice: the invitation is gone.
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatAccept)),
            Reason::NoInvite
        );
    }

    #[test]
    fn an_invitation_can_be_declined_cancelled_or_left_to_expire() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(11),
                seat: None,
            },
        ));
        applied(w.viewer(11, A, Action::SeatDecline));
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(12),
                seat: None,
            },
        ));
        applied(w.host(A, Action::SeatCancelInvite { user: UserId(12) }));
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(13),
                seat: None,
            },
        ));
        w.advance(secs(10));
        assert!(matches!(
            w.last_event(A),
            EventKind::SeatInviteClosed {
                reason: InviteEnd::Expired,
                ..
            }
        ));
        assert_eq!(
            rejected(w.viewer(13, A, Action::SeatAccept)),
            Reason::NoInvite
        );
        assert!(w.state(A).seats.seats.iter().all(|s| s.user.is_none()));
    }

    #[test]
    fn a_viewer_applies_and_the_host_approves_or_denies() {
        let mut w = World::new();
        applied(w.viewer(11, A, Action::SeatApply));
        applied(w.viewer(12, A, Action::SeatApply));
        assert_eq!(rejected(w.viewer(11, A, Action::SeatApply)), Reason::Busy);
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatApprove { user: UserId(12) })),
            Reason::NotAllowed
        );
        applied(w.host(A, Action::SeatApprove { user: UserId(11) }));
        applied(w.host(A, Action::SeatDeny { user: UserId(12) }));
        assert_eq!(w.state(A).seats.seat_of(UserId(11)), Some(0));
        assert_eq!(w.state(A).seats.seat_of(UserId(12)), None);
        assert!(w.state(A).seats.applications.is_empty());
        assert!(matches!(
            w.last_event(A),
            EventKind::SeatApplicationClosed {
                reason: ApplicationEnd::Denied,
                ..
            }
        ));
    }

    #[test]
    fn the_last_seat_goes_to_the_first_taker() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        for (user, seat) in [(11, 0), (12, 1), (13, 2)] {
            applied(w.viewer(user, A, Action::SeatTake { seat }));
        }
        applied(w.viewer(14, A, Action::SeatTake { seat: 3 }));
        assert_eq!(
            rejected(w.viewer(15, A, Action::SeatTake { seat: 3 })),
            Reason::SeatTaken
        );
        assert_eq!(w.state(A).seats.seats[3].user, Some(UserId(14)));
    }

    #[test]
    fn taking_needs_free_take_mode_and_a_free_unlocked_seat() {
        let mut w = World::new();
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatTake { seat: 0 })),
            Reason::WrongMode
        );
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatApply)),
            Reason::WrongMode
        );
        applied(w.host(
            A,
            Action::SeatLock {
                seat: 1,
                locked: true,
            },
        ));
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatTake { seat: 1 })),
            Reason::SeatLocked
        );
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatTake { seat: 9 })),
            Reason::NoSuchSeat
        );
        applied(w.viewer(11, A, Action::SeatTake { seat: 0 }));
        // A user sits on at most one seat.
        assert_eq!(
            rejected(w.viewer(11, A, Action::SeatTake { seat: 2 })),
            Reason::AlreadySeated
        );
        // An occupied seat cannot be locked.
        assert_eq!(
            rejected(w.host(
                A,
                Action::SeatLock {
                    seat: 0,
                    locked: true
                }
            )),
            Reason::SeatTaken
        );
        applied(w.host(
            A,
            Action::SeatLock {
                seat: 1,
                locked: false,
            },
        ));
        applied(w.viewer(12, A, Action::SeatTake { seat: 1 }));
        assert_eq!(
            rejected(w.host(A, Action::SeatTake { seat: 2 })),
            Reason::NotAllowed
        );
    }

    #[test]
    fn the_host_kicks_and_a_guest_leaves() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        applied(w.viewer(11, A, Action::SeatTake { seat: 0 }));
        applied(w.viewer(12, A, Action::SeatTake { seat: 1 }));
        assert_eq!(
            rejected(w.viewer(12, A, Action::SeatKick { seat: 0 })),
            Reason::NotAllowed
        );
        applied(w.host(A, Action::SeatKick { seat: 0 }));
        assert!(matches!(
            w.last_event(A),
            EventKind::SeatLeft {
                reason: SeatLeaveReason::Kicked,
                ..
            }
        ));
        applied(w.viewer(12, A, Action::SeatLeave));
        assert_eq!(
            rejected(w.viewer(12, A, Action::SeatLeave)),
            Reason::NotSeated
        );
        assert!(w.state(A).seats.seats.iter().all(|s| s.user.is_none()));
        assert_eq!(
            rejected(w.host(A, Action::SeatKick { seat: 0 })),
            Reason::NotSeated
        );
    }

    #[test]
    fn the_host_mutes_any_seat_and_a_guest_only_its_own() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        applied(w.viewer(11, A, Action::SeatTake { seat: 0 }));
        applied(w.viewer(12, A, Action::SeatTake { seat: 1 }));
        assert_eq!(
            rejected(w.viewer(
                11,
                A,
                Action::SeatMute {
                    seat: 1,
                    muted: true
                }
            )),
            Reason::NotAllowed
        );
        applied(w.viewer(
            11,
            A,
            Action::SeatMute {
                seat: 0,
                muted: true,
            },
        ));
        assert_eq!(w.state(A).seats.seats[0].mute, Mute::BySelf);
        applied(w.viewer(
            11,
            A,
            Action::SeatMute {
                seat: 0,
                muted: false,
            },
        ));
        applied(w.host(
            A,
            Action::SeatMute {
                seat: 1,
                muted: true,
            },
        ));
        // The host's mute is the host's to lift.
        assert_eq!(
            rejected(w.viewer(
                12,
                A,
                Action::SeatMute {
                    seat: 1,
                    muted: false
                }
            )),
            Reason::NotAllowed
        );
        applied(w.host(
            A,
            Action::SeatMute {
                seat: 1,
                muted: false,
            },
        ));
        assert_eq!(w.state(A).seats.seats[1].mute, Mute::Off);
        assert_eq!(
            rejected(w.host(
                A,
                Action::SeatMute {
                    seat: 2,
                    muted: true
                }
            )),
            Reason::NotSeated
        );
    }

    #[test]
    fn a_disconnected_guest_is_held_then_released() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(11),
                seat: None,
            },
        ));
        applied(w.viewer(11, A, Action::SeatAccept));
        w.presence(A, 11, false);
        assert!(w.state(A).seats.seats[0].away_since.is_some());
        w.advance(secs(3));
        w.presence(A, 11, true);
        assert_eq!(w.state(A).seats.seats[0].away_since, None);
        w.advance(secs(10));
        assert_eq!(w.state(A).seats.seats[0].user, Some(UserId(11)));
        // Gone for good this time.
        w.presence(A, 11, false);
        w.advance(secs(5));
        assert!(matches!(
            w.last_event(A),
            EventKind::SeatLeft {
                reason: SeatLeaveReason::Released,
                ..
            }
        ));
        assert_eq!(w.state(A).seats.seats[0].user, None);
        // Presence of someone without a seat changes nothing.
        let before = w.state(A).seq;
        w.presence(A, 99, false);
        assert_eq!(w.state(A).seq, before);
    }

    #[test]
    fn approving_with_no_free_seat_is_refused() {
        let mut w = World::new();
        for seat in 0..4 {
            applied(w.host(A, Action::SeatLock { seat, locked: true }));
        }
        applied(w.viewer(11, A, Action::SeatApply));
        assert_eq!(
            rejected(w.host(A, Action::SeatApprove { user: UserId(11) })),
            Reason::SeatsFull
        );
        assert_eq!(w.state(A).seats.applications, vec![UserId(11)]);
    }
}

mod challenges {
    use super::*;

    #[test]
    fn a_challenge_succeeds_the_moment_its_goal_is_reached() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::ChallengeStart {
                goal: Goal::GiftValue(250),
                window_secs: 30,
            },
        ));
        applied(w.viewer(11, A, gift(2)));
        assert!(matches!(
            w.last_event(A),
            EventKind::ChallengeProgress { progress: 200, .. }
        ));
        applied(w.viewer(12, A, gift(1)));
        assert!(matches!(
            w.last_event(A),
            EventKind::ChallengeEnded {
                success: true,
                progress: 300,
                ..
            }
        ));
        assert!(w.state(A).challenge.is_none());
    }

    #[test]
    fn a_challenge_fails_at_its_deadline() {
        let mut w = World::new();
        applied(w.host(
            A,
            Action::ChallengeStart {
                goal: Goal::Likes(100),
                window_secs: 10,
            },
        ));
        applied(w.viewer(11, A, Action::Like { count: 40 }));
        w.advance(secs(10));
        assert!(matches!(
            w.last_event(A),
            EventKind::ChallengeEnded {
                success: false,
                progress: 40,
                ..
            }
        ));
        // Likes after the deadline count for nothing.
        applied(w.viewer(11, A, Action::Like { count: 70 }));
        assert!(w.state(A).challenge.is_none());
    }

    #[test]
    fn only_the_host_or_an_operator_starts_one_challenge_at_a_time() {
        let mut w = World::new();
        let start = Action::ChallengeStart {
            goal: Goal::GiftCount(5),
            window_secs: 30,
        };
        assert_eq!(rejected(w.viewer(11, A, start.clone())), Reason::NotAllowed);
        applied(w.act_as(UserId(1), Grant::Operator, A, start.clone()));
        assert_eq!(rejected(w.host(A, start)), Reason::ChallengeRunning);
        let zero = Action::ChallengeStart {
            goal: Goal::GiftCount(0),
            window_secs: 30,
        };
        assert_eq!(rejected(w.host(B, zero)), Reason::BadArgument);
    }
}

mod idempotency {
    use super::*;

    fn gift_msg(n: u64) -> (Actor, ActionMsg) {
        let actor = Actor {
            user: UserId(11),
            grant: Grant::Viewer,
        };
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(500),
                n,
            },
            room: A,
            sent_at: protocol::ServerTime(0),
            action: gift(1),
        };
        (actor, msg)
    }

    #[test]
    fn a_repeated_action_returns_its_original_outcome_and_changes_nothing() {
        let mut w = World::new();
        let (actor, msg) = gift_msg(1);
        let first = w.send(actor, &msg);
        let state = w.state(A).clone();
        let log = w.log.len();
        for _ in 0..3 {
            assert_eq!(w.send(actor, &msg), first);
        }
        assert_eq!(w.state(A), &state);
        assert_eq!(w.log.len(), log);
        assert_eq!(w.state(A).gift_value, 100);
    }

    #[test]
    fn a_repeated_rejection_stays_a_rejection() {
        let mut w = World::new();
        let actor = Actor {
            user: UserId(11),
            grant: Grant::Viewer,
        };
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(500),
                n: 1,
            },
            room: A,
            sent_at: w.now,
            action: Action::SeatTake { seat: 0 },
        };
        assert_eq!(rejected(w.send(actor, &msg)), Reason::WrongMode);
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        // Now taking would work, but this id was decided already.
        assert_eq!(rejected(w.send(actor, &msg)), Reason::WrongMode);
        assert!(w.state(A).seats.seats.iter().all(|s| s.user.is_none()));
    }

    #[test]
    fn ids_older_than_the_window_are_stale_and_a_session_id_is_nobody_elses() {
        let mut w = World::with(origin::rules::Config {
            session_window: 4,
            ..test_config()
        });
        for n in 1..=6 {
            let (actor, msg) = gift_msg(n);
            applied(w.send(actor, &msg));
        }
        let (actor, msg) = gift_msg(1);
        assert_eq!(rejected(w.send(actor, &msg)), Reason::Stale);
        let thief = Actor {
            user: UserId(66),
            grant: Grant::Viewer,
        };
        // Another user reusing the victim's session id (ids are public, in
        // every event's cause) acts for itself and touches nothing of the
        // victim's: its next id is decided afresh, the victim's repeat still
        // gets the victim's outcome.
        let (victim, msg7) = gift_msg(7);
        let stolen = ActionMsg {
            action: gift(2),
            ..msg7.clone()
        };
        applied(w.send(thief, &stolen));
        assert_eq!(w.state(A).gift_value, 800);
        let mine = w.send(victim, &msg7);
        applied(mine);
        assert_eq!(w.state(A).gift_value, 900, "the victim's own action counts");
        assert_eq!(w.send(victim, &msg7), mine);
    }
}

mod restart {
    use super::*;

    #[test]
    fn replaying_the_log_rebuilds_rooms_timers_and_seen_ids() {
        let mut w = World::new();
        let battle = start_battle(&mut w, 30);
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        applied(w.viewer(11, A, Action::SeatTake { seat: 0 }));
        w.presence(A, 11, false);
        let (actor, msg) = (
            Actor {
                user: UserId(12),
                grant: Grant::Viewer,
            },
            ActionMsg {
                id: ActionId {
                    session: SessionId(12),
                    n: 77,
                },
                room: B,
                sent_at: w.now,
                action: gift(4),
            },
        );
        let first = w.send(actor, &msg);
        w.advance(secs(3));

        let mut rebuilt = w.replayed();
        for room in [A, B] {
            assert_eq!(rebuilt.room(room), w.auth.room(room));
        }
        assert_eq!(rebuilt.poll_timeout(), w.auth.poll_timeout());
        // The seen-id window came back: the repeat changes nothing.
        match rebuilt.handle_action(w.now, actor, &msg) {
            origin::rules::Decision::Answered { outcome, .. } => assert_eq!(outcome, first),
            other => panic!("expected the original outcome, got {other:?}"),
        }
        // Timers carry on: the hold releases seat 0, the bell rings on time.
        let rec = rebuilt.handle_timeout(w.now + secs(30));
        let kinds: Vec<_> = rec.events.iter().map(|(_, e)| e.kind.clone()).collect();
        assert!(kinds.iter().any(|k| matches!(
            k,
            EventKind::SeatLeft {
                reason: SeatLeaveReason::Released,
                ..
            }
        )));
        assert!(kinds
            .iter()
            .any(|k| matches!(k, EventKind::PkBell { battle: b } if *b == battle)));
        // New battles get fresh ids after a restart.
        assert!(rebuilt.room(A).and_then(|s| s.battle.as_ref()).is_some());
    }
}

mod checkpoint {
    use super::*;
    use origin::rules::Authority;

    #[test]
    fn a_checkpoint_plus_the_rest_of_the_log_equals_the_whole_log() {
        let mut w = World::new();
        start_battle(&mut w, 30);
        applied(w.host(
            A,
            Action::SeatMode {
                mode: SeatMode::FreeTake,
            },
        ));
        applied(w.viewer(11, A, Action::SeatTake { seat: 1 }));
        applied(w.viewer(12, B, gift(2)));
        w.presence(A, 11, false);
        let cut = w.log.len();
        let snap = w.replayed().snapshot();
        applied(w.viewer(13, A, gift(1)));
        w.advance(secs(31));
        applied(w.viewer(14, B, gift(3)));

        let mut restored = Authority::restore(w.auth.config().clone(), snap);
        for rec in &w.log[cut..] {
            restored.replay(rec).expect("the rest replays");
        }
        assert_eq!(restored.snapshot(), w.replayed().snapshot());
        assert_eq!(restored.snapshot(), w.auth.snapshot());
        assert_eq!(restored.poll_timeout(), w.auth.poll_timeout());
        // It survives the codec, as the log stores it.
        let bytes = postcard::to_allocvec(&restored.snapshot()).expect("encode");
        let back: origin::rules::Snapshot = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, w.auth.snapshot());
    }
}

mod determinism {
    use super::*;

    fn story(w: &mut World) {
        start_battle(w, 20);
        for i in 0..10 {
            applied(w.viewer(
                100 + i,
                if i % 3 == 0 { B } else { A },
                gift((i % 4 + 1) as u32),
            ));
            w.advance(secs(1));
        }
        applied(w.host(
            A,
            Action::SeatInvite {
                user: UserId(5),
                seat: None,
            },
        ));
        applied(w.viewer(5, A, Action::SeatAccept));
        w.advance(secs(30));
    }

    #[test]
    fn the_same_actions_at_the_same_times_give_the_same_bytes() {
        let (mut w1, mut w2) = (World::new(), World::new());
        story(&mut w1);
        story(&mut w2);
        let bytes = |w: &World| postcard::to_allocvec(&w.log).expect("encode");
        assert_eq!(bytes(&w1), bytes(&w2));
        assert!(w1.log.len() > 15);
    }

    #[test]
    fn a_battle_id_is_never_reused() {
        let mut w = World::new();
        let first = start_battle(&mut w, 10);
        w.advance(secs(20));
        let second = start_battle(&mut w, 10);
        assert_ne!(first, second);
    }
}

mod rooms {
    use super::*;
    use protocol::{Outcome, Seq};

    #[test]
    fn a_viewer_cannot_open_a_room_and_a_refused_action_leaves_nothing() {
        let mut w = World::bare(test_config());
        assert_eq!(rejected(w.viewer(11, A, gift(1))), Reason::NoRoom);
        assert_eq!(
            rejected(w.viewer(12, A, Action::Chat { text: "hi".into() })),
            Reason::NoRoom
        );
        // A host's refused action does not open its room either.
        assert_eq!(rejected(w.host(A, gift(1))), Reason::NotAllowed);
        assert!(w.auth.room(A).is_none());
        assert_eq!(w.auth.rooms().count(), 0);
        assert!(w.log.iter().all(|r| r.events.is_empty()), "no event at all");
        // Its host opens it by acting in it; then viewers can.
        applied(w.host(
            A,
            Action::Chat {
                text: "live".into(),
            },
        ));
        assert!(matches!(w.events(A)[0].kind, EventKind::Opened { .. }));
        applied(w.viewer(11, A, gift(1)));
    }

    #[test]
    fn live_rooms_are_capped_with_a_clear_reason() {
        let mut w = World::bare(origin::rules::Config {
            max_rooms: 2,
            ..test_config()
        });
        applied(w.host(A, Action::Chat { text: "a".into() }));
        applied(w.host(B, Action::Chat { text: "b".into() }));
        assert_eq!(
            rejected(w.host(C, Action::Chat { text: "c".into() })),
            Reason::Capacity
        );
        // A PK invitation opens no room: the invited one must exist.
        let before = w.state(A).clone();
        assert_eq!(
            rejected(w.host(
                A,
                Action::PkInvite {
                    to: C,
                    duration_secs: 60
                }
            )),
            Reason::NoRoom
        );
        assert_eq!(w.state(A), &before);
        assert!(w.auth.room(C).is_none());
        assert_eq!(w.auth.rooms().count(), 2);
    }

    #[test]
    fn an_idle_room_unloads_and_comes_back_with_its_exact_state() {
        let mut w = World::bare(origin::rules::Config {
            room_idle: secs(60),
            ..test_config()
        });
        applied(w.host(
            A,
            Action::Chat {
                text: "live".into(),
            },
        ));
        applied(w.viewer(11, A, gift(2)));
        w.follow(A, true);
        w.advance(secs(600));
        assert!(w.sweep().is_empty(), "a followed room stays");
        w.follow(A, false);
        w.advance(secs(59));
        assert!(w.sweep().is_empty(), "not idle long enough");
        w.advance(secs(1));
        assert_eq!(w.sweep(), vec![A]);
        assert!(w.auth.room(A).is_none());
        assert_eq!(w.auth.rooms().count(), 0, "nothing left in checkpoints");
        let archived = w.archives[&A].clone();
        assert_eq!(archived.seq, Seq(3));
        assert_eq!(archived.gift_value, 200);
        // Acted on again: back exactly as it was, and it carries on.
        assert_eq!(applied(w.viewer(12, A, gift(1))), Seq(4));
        assert_eq!(w.state(A).gift_value, 300);
        // A relay following it brings it back too.
        w.advance(secs(61));
        assert_eq!(w.sweep(), vec![A]);
        w.follow(A, true);
        assert_eq!(w.state(A).seq, Seq(4));
        // The whole log still replays to the same room.
        assert_eq!(w.replayed().room(A), w.auth.room(A));
    }

    #[test]
    fn battling_rooms_and_seated_guests_stay_loaded() {
        let mut w = World::with(origin::rules::Config {
            room_idle: secs(1),
            ..test_config()
        });
        start_battle(&mut w, 30);
        w.advance(secs(20));
        let gone = w.sweep();
        assert_eq!(gone, vec![C], "mid-battle rooms stay; idle C goes");
        applied(w.host(
            C,
            Action::SeatInvite {
                user: UserId(5),
                seat: None,
            },
        ));
        applied(w.viewer(5, C, Action::SeatAccept));
        // The battle ends (bell, grace, punishment, close); C keeps its guest.
        w.advance(secs(60));
        assert!(w.state(A).battle.is_none());
        let mut gone = w.sweep();
        gone.sort();
        assert_eq!(gone, vec![A, B]);
        assert!(w.auth.room(C).is_some(), "a seated guest keeps its room");
        // The guest leaves: C goes too.
        applied(w.viewer(5, C, Action::SeatLeave));
        w.advance(secs(2));
        assert_eq!(w.sweep(), vec![C]);
    }

    #[test]
    fn a_checkpoint_leaves_unloaded_rooms_out_and_replay_restores_them() {
        let mut w = World::with(origin::rules::Config {
            room_idle: secs(60),
            ..test_config()
        });
        applied(w.viewer(11, A, gift(1)));
        applied(w.viewer(11, B, gift(1)));
        w.advance(secs(61));
        let mut gone = w.sweep();
        gone.sort();
        assert_eq!(gone, vec![A, B, C]);
        // Only B comes back before the checkpoint.
        applied(w.viewer(12, B, gift(1)));
        let cut = w.log.len();
        let snap = w.auth.snapshot();
        let only_b = w.auth.rooms().map(|s| s.room).collect::<Vec<_>>();
        assert_eq!(only_b, vec![B], "the checkpoint holds live rooms only");
        // After it: A comes back, moves on, and is unloaded again (its
        // archive is now ahead of some of the log's events for it).
        applied(w.viewer(13, A, gift(2)));
        applied(w.viewer(14, A, gift(3)));
        w.advance(secs(61));
        let mut gone = w.sweep();
        gone.sort();
        assert_eq!(gone, vec![A, B]);
        applied(w.viewer(15, A, gift(1)));
        let restored = w.restored(snap, cut);
        assert_eq!(restored.room(A), w.auth.room(A));
        assert_eq!(restored.room(A).map(|s| s.gift_value), Some(700));
        assert_eq!(restored.room(B), w.archives.get(&B));
        // The repeat of an action decided before the checkpoint is known.
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(12),
                n: 1,
            },
            room: B,
            sent_at: w.now,
            action: gift(1),
        };
        let actor = Actor {
            user: UserId(12),
            grant: Grant::Viewer,
        };
        let mut restored = restored;
        restored.handle_load(w.now, w.archives[&B].clone());
        match restored.handle_action(w.now, actor, &msg) {
            origin::rules::Decision::Answered { outcome, .. } => {
                assert!(matches!(outcome, Outcome::Applied { .. }))
            }
            other => panic!("expected the original outcome, got {other:?}"),
        }
    }
}

mod evicted_sessions {
    use super::*;

    fn gift_from(user: u64, session: u64, n: u64, w: &World) -> (Actor, ActionMsg) {
        let actor = Actor {
            user: UserId(user),
            grant: Grant::Viewer,
        };
        let msg = ActionMsg {
            id: ActionId {
                session: SessionId(session),
                n,
            },
            room: A,
            sent_at: w.now,
            action: gift(1),
        };
        (actor, msg)
    }

    fn copies(w: &World, msg: &ActionMsg) -> usize {
        (w.events(A).iter())
            .filter(|e| e.cause == Some(msg.id) && matches!(e.kind, EventKind::Gift { .. }))
            .count()
    }

    #[test]
    fn a_session_evicted_from_a_full_memory_never_counts_a_gift_twice() {
        let mut w = World::with(origin::rules::Config {
            max_sessions: 2,
            ..test_config()
        });
        let (actor, msg) = gift_from(12, 1, 1, &w);
        applied(w.send(actor, &msg));
        w.advance(secs(10));
        // Two other users' sessions push user 12's out of the memory.
        for user in [13, 14] {
            let (a, m) = gift_from(user, user, 1, &w);
            applied(w.send(a, &m));
        }
        assert_eq!(w.state(A).gift_value, 300);
        // The late copy of the first gift: not decided again.
        w.advance(secs(10));
        assert_eq!(rejected(w.send(actor, &msg)), Reason::Stale);
        assert_eq!(copies(&w, &msg), 1);
        assert_eq!(w.state(A).gift_value, 300);
        // The same after a restart from the log.
        let mut rebuilt = w.replayed();
        match rebuilt.handle_action(w.now, actor, &msg) {
            origin::rules::Decision::Answered { outcome, .. } => assert_eq!(
                outcome,
                protocol::Outcome::Rejected {
                    reason: Reason::Stale
                }
            ),
            other => panic!("expected Stale, got {other:?}"),
        }
        // The session's next action, sent now, counts.
        let (actor, next) = gift_from(12, 1, 2, &w);
        applied(w.send(actor, &next));
        assert_eq!(w.state(A).gift_value, 400);
    }

    #[test]
    fn a_user_has_a_capped_number_of_sessions_and_old_ones_answer_stale() {
        let mut w = World::with(origin::rules::Config {
            max_user_sessions: 3,
            ..test_config()
        });
        let mut first = Vec::new();
        for session in 1..=6 {
            let (actor, msg) = gift_from(12, session, 1, &w);
            applied(w.send(actor, &msg));
            first.push((actor, msg));
            w.advance(secs(5));
        }
        assert_eq!(w.auth.sessions().len(), 3);
        for (actor, msg) in &first[..3] {
            assert_eq!(rejected(w.send(*actor, msg)), Reason::Stale);
            assert_eq!(copies(&w, msg), 1);
        }
        for (actor, msg) in &first[3..] {
            applied(w.send(*actor, msg));
        }
        assert_eq!(w.state(A).gift_value, 600);
    }
}

mod backstop {
    use super::*;

    #[test]
    fn a_user_over_the_origin_rate_is_throttled_and_nothing_is_recorded() {
        let mut w = World::with(origin::rules::Config {
            user_rate: 10,
            user_burst: 20,
            ..test_config()
        });
        let actor = Actor {
            user: UserId(11),
            grant: Grant::Viewer,
        };
        let msg = |n: u64, w: &World| ActionMsg {
            id: ActionId {
                session: SessionId(11),
                n,
            },
            room: A,
            sent_at: w.now,
            action: gift(1),
        };
        for n in 1..=20 {
            applied(w.send(actor, &msg(n, &w)));
        }
        let log = w.log.len();
        let over = msg(21, &w);
        assert_eq!(
            w.try_send(actor, &over),
            Err(std::time::Duration::from_millis(100))
        );
        assert_eq!(w.log.len(), log, "a throttled action records nothing");
        assert_eq!(w.state(A).gift_value, 2000);
        // Someone else is not held up.
        applied(w.viewer(12, A, gift(1)));
        // Resent after the wait, it is decided as if it were new.
        w.advance(std::time::Duration::from_millis(100));
        applied(w.send(actor, &over));
        assert_eq!(w.state(A).gift_value, 2200);
        // Its repeat is answered from memory, without spending a token.
        assert!(w.try_send(actor, &over).is_ok());
    }
}

mod seeded_ids {
    use super::*;

    #[test]
    fn battle_ids_start_at_the_seed_and_a_lower_seed_changes_nothing() {
        let mut w = World::new();
        w.auth.seed_ids(1_000);
        let invite = Action::PkInvite {
            to: B,
            duration_secs: 60,
        };
        applied(w.host(A, invite.clone()));
        let first = w.pending_battle(B);
        assert_eq!(first, protocol::BattleId(1_000));
        applied(w.host(A, Action::PkCancel { battle: first }));
        w.auth.seed_ids(5);
        applied(w.host(A, invite));
        assert_eq!(w.pending_battle(B), protocol::BattleId(1_001));
    }
}
