//! Clients' links drop 20% of UDP datagrams each way (every QUIC packet,
//! datagram or stream, is at risk). Every action still gets its outcome —
//! datagram copies, then the stream fallback — and every client converges,
//! through gap repair.

mod common;

use std::time::Duration;

use client_sdk::{Outcome, Room};
use common::*;
use protocol::{GiftId, RoomId};
use testbed::impair::{LinkProfile, Profile};
use testbed::link::{spawn_link, LinkConfig};

const ROOMS: [RoomId; 2] = [RoomId(21), RoomId(22)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_of_all_datagrams_lost_and_nothing_is_missing() {
    let t = topology("lossy", 2, |_| {}).await;
    let lossy = LinkProfile::symmetric(Profile {
        loss: 0.2,
        ..Profile::default()
    });
    let mut links = Vec::new();
    for (i, relay) in t.relay_addrs().into_iter().enumerate() {
        let cfg = LinkConfig {
            seed: 7 + i as u64,
            ..LinkConfig::new("127.0.0.1:0".parse().expect("addr"), relay)
        }
        .with_profile(lossy.clone());
        links.push(spawn_link(cfg).await.expect("link starts"));
    }

    let mut clients = Vec::new();
    let mut rooms: Vec<Room> = Vec::new();
    for i in 0..12u64 {
        let link = links[(i % 2) as usize].local_addr();
        // Half the clients send each action once (no up-front copy), so that
        // some of their actions certainly need the stream fallback.
        let redundancy = if i % 4 < 2 {
            None
        } else {
            Some(Duration::from_millis(4))
        };
        // A handshake through 20% loss each way may need several
        // retransmissions: give it time.
        let c = t
            .client_builder(300 + i, &[])
            .relay(link)
            .redundancy(redundancy)
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("connects through loss");
        rooms.push(
            c.join(ROOMS[(i / 2 % 2) as usize])
                .await
                .expect("joins through loss"),
        );
        clients.push(c);
    }

    // Each gift 20 ms after the previous one, so that each travels in a
    // packet of its own (sent at once, quinn would pack them into one or two
    // packets, and their losses would not be independent).
    let mut sends = Vec::new();
    for r in &rooms {
        for k in 0..10u32 {
            sends.push(async move {
                tokio::time::sleep(Duration::from_millis(20 * u64::from(k))).await;
                r.gift(GiftId(1 + k % 2), 1).await
            });
        }
    }
    let results = join_all(sends).await;
    let mut applied = 0;
    for r in results {
        let acked = r.expect("every gift gets an outcome");
        assert!(
            matches!(acked.outcome, Outcome::Applied { .. }),
            "{acked:?}"
        );
        applied += 1;
    }
    assert_eq!(applied, 120);
    let refs: Vec<&Room> = rooms.iter().collect();
    converge(&t, &refs, Duration::from_secs(20)).await;
    let total: u64 = [
        origin_state(&t, ROOMS[0]).await,
        origin_state(&t, ROOMS[1]).await,
    ]
    .iter()
    .map(|s| s.gift_count)
    .sum();
    assert_eq!(total, 120, "every gift counted once");

    // The repairs really happened: actions fell back to the stream, gaps
    // were filled.
    let (fallbacks, resyncs) = clients
        .iter()
        .map(|c| c.stats())
        .fold((0, 0), |(f, r), s| (f + s.fallbacks, r + s.resyncs));
    let all: Vec<_> = clients.iter().map(|c| c.stats()).collect();
    assert!(
        fallbacks > 0,
        "no action needed the stream fallback: {all:?}"
    );
    assert!(resyncs > 0, "no gap needed repair");

    // The links really dropped a fifth.
    for l in links {
        let s = l.shutdown().await.expect("link stats");
        for d in [&s.up, &s.down] {
            let share = d.engine.dropped() as f64 / d.engine.packets_in.max(1) as f64;
            assert!(
                (0.12..0.28).contains(&share),
                "dropped {share:.3} of {}",
                d.engine.packets_in
            );
        }
    }
}
