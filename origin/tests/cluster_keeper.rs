//! The lease keeper against a real nats-server: a node wins free rooms at
//! once, hands rooms over without a wait when it drains, and its rooms go
//! to another node once its leases run out when it dies — never while they
//! were still valid.

mod nats;

use std::time::{Duration, Instant};

use origin::cluster::keeper::{Change, Keeper};
use origin::cluster::lease::Timing;
use origin::cluster::{self, Placement, RoomLog};
use protocol::RoomId;

const TIMING: Timing = Timing {
    ttl: Duration::from_millis(1000),
    margin: Duration::from_millis(200),
};

async fn keeper(url: &str, node: &str) -> Keeper {
    let c = cluster::Config {
        node: node.into(),
        nats_url: url.into(),
        lease_ttl: TIMING.ttl,
        lease_margin: TIMING.margin,
        ..cluster::Config::default()
    };
    let (_, js) = RoomLog::connect(&c).await.expect("connect");
    let placement = Placement::open(&js, &c).await.expect("bucket");
    Keeper::new(node, TIMING, placement)
}

/// Step `k` on the real clock until it holds every room of `rooms`
/// (bounded); returns every change and when it was reported.
async fn until_held(k: &mut Keeper, rooms: &[RoomId]) -> Vec<(Instant, Change)> {
    let mut changes = Vec::new();
    for _ in 0..200 {
        let now = Instant::now();
        let got = k.step(now).await;
        let at = Instant::now();
        changes.extend(got.into_iter().map(|c| (at, c)));
        if rooms.iter().all(|r| k.owned(*r, at).is_some()) {
            return changes;
        }
        if let Some(t) = k.poll_timeout() {
            tokio::time::sleep_until(t.max(Instant::now()).into()).await;
        }
    }
    panic!("rooms not held after 200 steps: {changes:?}");
}

#[tokio::test]
async fn rooms_are_won_handed_over_and_taken_from_a_dead_node() {
    let Some(server) = nats::start("lease keeper") else {
        return;
    };
    let mut a = keeper(&server.url, "a").await;
    let mut b = keeper(&server.url, "b").await;
    let rooms: Vec<RoomId> = (1..=20).map(RoomId).collect();
    let t0 = Instant::now();
    for r in &rooms {
        a.want(t0, *r);
    }
    let won = until_held(&mut a, &rooms).await;
    assert_eq!(
        won.iter()
            .filter(|(_, c)| matches!(c, Change::Gained { .. }))
            .count(),
        20
    );
    assert!(t0.elapsed() < TIMING.ttl, "free rooms are won at once");

    // Drain: A hands rooms 1..=10 over; B wins them without waiting.
    let (drained, kept) = rooms.split_at(10);
    for r in drained {
        a.release(*r);
    }
    let lost = a.step(Instant::now()).await;
    assert_eq!(lost.len(), 10);
    assert!(lost
        .iter()
        .all(|c| matches!(c, Change::Lost { room } if drained.contains(room))));
    let handed = Instant::now();
    for r in drained {
        b.want(handed, *r);
    }
    until_held(&mut b, drained).await;
    assert!(
        handed.elapsed() < TIMING.ttl,
        "a drained room moves at once"
    );

    // Death: A stops renewing. B wants its rooms (as the policy would once
    // A's node lease is gone) and wins each only after A's lease ran out.
    let died = Instant::now();
    for r in kept {
        b.want(died, *r);
    }
    let taken = until_held(&mut b, kept).await;
    for (at, change) in &taken {
        if let Change::Gained { room, .. } = change {
            assert_eq!(a.owned(*room, *at), None, "{room} had two owners");
        }
    }
    let took = died.elapsed();
    assert!(
        took <= TIMING.ttl + TIMING.margin + TIMING.renew_every() + Duration::from_millis(1500),
        "{took:?}"
    );
    println!(
        "a dead node's 10 rooms taken over in {} ms",
        took.as_millis()
    );
}
