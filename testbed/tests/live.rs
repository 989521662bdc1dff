//! The live path end to end on 127.0.0.1 with real quinn: an origin, two
//! relays, hosts and viewers in two rooms; a whole PK battle with gifts from
//! both sides through both relays, and a co-host sequence. Every client ends
//! with the origin's state, and every acknowledged gift counts exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use client_sdk::{Outcome, Room, Update};
use common::*;
use protocol::room::Mute;
use protocol::{EventKind, GiftId, RoomId, UserId};

const A: RoomId = RoomId(1);
const B: RoomId = RoomId(2);
const VIEWERS_PER_ROOM: u64 = 10;
const GIFTS_EACH: u32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_pk_battle_and_a_co_host_sequence_through_two_relays() {
    let t = topology("live", 2, |_| {}).await;
    let host_a = t.client(1000, &[A], &[0]).await.expect("client connects");
    let host_b = t.client(2000, &[B], &[1]).await.expect("client connects");
    let ra = host_a.join(A).await.expect("host A joins");
    let rb = host_b.join(B).await.expect("host B joins");

    // Ten viewers per room, alternating relays.
    let mut viewers: Vec<(u64, RoomId, client_sdk::Client)> = Vec::new();
    for i in 0..VIEWERS_PER_ROOM * 2 {
        let room = if i % 2 == 0 { A } else { B };
        let user = 100 + i;
        let relay = (i / 2 % 2) as usize;
        viewers.push((
            user,
            room,
            t.client(user, &[], &[relay])
                .await
                .expect("client connects"),
        ));
    }
    let mut rooms: Vec<(u64, Room)> = Vec::new();
    for (user, room, c) in &viewers {
        rooms.push((*user, c.join(*room).await.expect("viewer joins")));
    }
    // A witness of every event in room A, to count gifts by their cause.
    let mut witness = rooms[0].1.updates();

    // A invites B; B's host sees the invitation arrive and accepts.
    start_battle(&ra, &rb, 3).await;

    // Gifts from both sides, through both relays, all at once.
    let mut sends = Vec::new();
    for (user, room) in rooms.iter() {
        for k in 0..GIFTS_EACH {
            let gift = GiftId(1 + (k + *user as u32) % 3); // values 1, 5, 100
            sends.push(async move { (room.id(), gift, room.gift(gift, 1).await) });
        }
    }
    let results = join_all(sends).await;
    let value = |g: GiftId| match g.0 {
        1 => 1u64,
        2 => 5,
        _ => 100,
    };
    let mut acked_value: BTreeMap<RoomId, u64> = BTreeMap::new();
    let mut acked_ids = Vec::new();
    for (room, gift, r) in results {
        let acked = r.expect("every gift gets an outcome");
        assert!(
            matches!(acked.outcome, Outcome::Applied { .. }),
            "gift refused: {acked:?}"
        );
        *acked_value.entry(room).or_default() += value(gift);
        if room == A {
            acked_ids.push(acked.id);
        }
    }

    // The bell, the grace, the settlement: every client sees the result.
    let settled = ra
        .wait_for(Duration::from_secs(10), |s| {
            s.battle.as_ref().is_some_and(|b| b.result.is_some())
        })
        .await
        .expect("A sees the settlement");
    let result = settled.battle.and_then(|b| b.result).expect("result");
    assert_eq!(
        result.scores,
        [acked_value[&A], acked_value[&B]],
        "scores are the acked gifts"
    );
    let expected_winner = match acked_value[&A].cmp(&acked_value[&B]) {
        std::cmp::Ordering::Greater => Some(A),
        std::cmp::Ordering::Less => Some(B),
        std::cmp::Ordering::Equal => None,
    };
    assert_eq!(result.winner, expected_winner);

    // Co-hosts: invite-accept, apply-approve, mute, kick.
    let (guest_user, guest) = (rooms[0].0, &rooms[0].1);
    assert!(ra
        .seat_invite(UserId(guest_user), Some(1))
        .await
        .expect("acked")
        .outcome
        .is_applied());
    guest
        .wait_for(Duration::from_secs(5), |s| !s.seats.invites.is_empty())
        .await
        .expect("guest sees the invite");
    assert!(guest
        .seat_accept()
        .await
        .expect("acked")
        .outcome
        .is_applied());
    let (applicant_user, applicant) = (rooms[2].0, &rooms[2].1);
    assert!(applicant
        .seat_apply()
        .await
        .expect("acked")
        .outcome
        .is_applied());
    assert!(ra
        .seat_approve(UserId(applicant_user))
        .await
        .expect("acked")
        .outcome
        .is_applied());
    assert!(ra
        .seat_mute(1, true)
        .await
        .expect("acked")
        .outcome
        .is_applied());
    // The guest cannot lift the host's mute.
    assert!(!guest
        .seat_mute(1, false)
        .await
        .expect("acked")
        .outcome
        .is_applied());
    assert!(ra.seat_kick(0).await.expect("acked").outcome.is_applied());

    // Everyone converges to the origin, in both rooms.
    let mut all: Vec<&Room> = rooms.iter().map(|(_, r)| r).collect();
    all.push(&ra);
    all.push(&rb);
    converge(&t, &all, Duration::from_secs(10)).await;
    let a = origin_state(&t, A).await;
    assert_eq!(a.seats.seats[1].user, Some(UserId(guest_user)));
    assert_eq!(a.seats.seats[1].mute, Mute::ByHost);
    assert_eq!(a.seats.seats[0].user, None, "the approved guest was kicked");
    assert_eq!(a.gift_value, acked_value[&A]);
    assert_eq!(origin_state(&t, B).await.gift_value, acked_value[&B]);

    // Every acknowledged gift in A appears exactly once in A's event stream.
    let mut seen: BTreeMap<protocol::ActionId, usize> = BTreeMap::new();
    while let Ok(u) = witness.try_recv() {
        if let Update::Event(e) = u {
            if let (EventKind::Gift { .. }, Some(cause)) = (&e.kind, e.cause) {
                *seen.entry(cause).or_default() += 1;
            }
        }
    }
    for id in &acked_ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "gift {id} seen {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(seen.len(), acked_ids.len());
}
