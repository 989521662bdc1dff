//! The origin dies abruptly — no clean shutdown, not one more packet — after
//! acking gifts. Restarted from its data directory, it has every one of them,
//! and the clients, still connected to their relays, converge to it.

mod common;

use std::time::Duration;

use client_sdk::Outcome;
use common::*;
use protocol::{GiftId, RoomId};

const A: RoomId = RoomId(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_gift_survives_an_origin_crash() {
    // A checkpoint every 7 records: the restart reads one plus the tail.
    let mut t = topology("crash", 1, |s| s.checkpoint_every = 7).await;
    let viewers = [
        t.client(11, &[], &[0]).await.expect("client connects"),
        t.client(12, &[], &[0]).await.expect("client connects"),
    ];
    let mut rooms = Vec::new();
    for v in &viewers {
        rooms.push(v.join(A).await.expect("join"));
    }
    let mut acked_value = 0u64;
    for round in 0..20u32 {
        for r in &rooms {
            let acked = r.gift(GiftId(1 + round % 3), 2).await.expect("outcome");
            assert!(matches!(acked.outcome, Outcome::Applied { .. }));
            acked_value += [1u64, 5, 100][(round % 3) as usize] * 2;
        }
    }
    let before = origin_state(&t, A).await;
    assert_eq!(before.gift_value, acked_value);

    // Crash: the process state is gone; only what the log synced remains.
    t.origin.take().expect("origin").abort().await;
    t.restart_origin().await.expect("origin restarts");
    let after = origin_state(&t, A).await;
    assert_eq!(
        after, before,
        "the restarted origin has exactly what was acked"
    );

    // Clients carry on through the same relay once it reconnects upstream.
    let acked = rooms[0]
        .gift(GiftId(3), 1)
        .await
        .expect("outcome after restart");
    assert!(acked.outcome.is_applied());
    let refs: Vec<_> = rooms.iter().collect();
    converge(&t, &refs, Duration::from_secs(10)).await;
    assert_eq!(origin_state(&t, A).await.gift_value, acked_value + 100);
}
