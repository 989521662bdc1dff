//! A combo: one client sends 500 gifts as fast as it can, five times what
//! its rate allows at once (production limits: 50 actions a second, bursts
//! of 100). The relay answers the excess `Throttled`; the SDK waits as told,
//! paces itself and tries again, and stops at each gift's deadline. Every
//! gift resolves — applied, or throttled past its deadline — none hangs,
//! each result names its gift's id, the applied ones count exactly once,
//! the gifter is never cut off for flooding, and another user in the same
//! room sees its own gifts acked as usual meanwhile.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use client_sdk::{Error, Outcome};
use common::*;
use protocol::{ActionId, GiftId, RoomId};

const ROOM: RoomId = RoomId(1);
const COMBO: u64 = 500;
/// Short enough that some of the combo cannot make it (500 at 50 a second
/// take 8 s): both kinds of resolution show.
const DEADLINE: Duration = Duration::from_secs(4);
const OTHER_GIFTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combo_of_500_gifts_resolves_every_gift_and_leaves_the_room_alone() {
    let t = topology("combo", 1, production_rates).await;
    let host = t.client(100, &[ROOM], &[0]).await.expect("host connects");
    let hr = host.join(ROOM).await.expect("host joins");
    assert!(hr.like(1).await.expect("opens").outcome.is_applied());

    let gifter = (t.client_builder(1, &[]).relay(t.relay_addr(0)))
        .action_deadline(DEADLINE)
        .connect()
        .await
        .expect("gifter connects");
    let gr = gifter.join(ROOM).await.expect("gifter joins");
    let other = t.client(2, &[], &[0]).await.expect("other connects");
    let or = other.join(ROOM).await.expect("other joins");

    // The other user's latency before the combo.
    let mut before = Duration::ZERO;
    for _ in 0..5 {
        let a = or.gift(GiftId(1), 1).await.expect("outcome");
        assert!(a.outcome.is_applied());
        before = before.max(a.latency);
    }

    // The combo: every gift at once.
    let started = Instant::now();
    let combo: Vec<_> = (0..COMBO)
        .map(|_| {
            let gr = gr.clone();
            tokio::spawn(async move { (gr.gift(GiftId(1), 1).await, started.elapsed()) })
        })
        .collect();
    // Meanwhile, the other user gifts as usual.
    let or2 = or.clone();
    let others = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..OTHER_GIFTS {
            tick.tick().await;
            let a = or2.gift(GiftId(1), 1).await.expect("outcome");
            assert!(a.outcome.is_applied(), "{a:?}");
            latencies.push(a.latency);
        }
        latencies
    });

    let mut applied = 0u64;
    let mut throttled = 0u64;
    let mut unknown = 0u64;
    let mut ids = BTreeSet::new();
    let mut last = Duration::ZERO;
    for h in combo {
        // None hangs: each resolves by its deadline (plus a scheduling margin).
        let (r, at) = tokio::time::timeout(DEADLINE + Duration::from_secs(5), h)
            .await
            .expect("a gift of the combo hung")
            .expect("task");
        last = last.max(at);
        let id: ActionId = match r {
            Ok(acked) => {
                assert!(
                    matches!(acked.outcome, Outcome::Applied { .. }),
                    "{acked:?}"
                );
                applied += 1;
                acked.id
            }
            Err(Error::Throttled { id }) => {
                throttled += 1;
                id
            }
            // On the wire at its deadline with no answer yet (an ack slower
            // than the retransmission timeout on a loaded machine): unknown.
            Err(Error::TimedOut { id }) => {
                unknown += 1;
                id
            }
            Err(e) => panic!("a gift of the combo resolved as {e}"),
        };
        assert_eq!(id.session, gifter.session(), "it names the gifter's action");
        assert!(ids.insert(id.n), "{id} named twice");
    }
    assert_eq!(ids, (1..=COMBO).collect::<BTreeSet<_>>(), "every id, once");
    assert!(
        last < DEADLINE + Duration::from_secs(2),
        "the last gift resolved after {last:?}"
    );
    // The burst goes through at once, then the rate: some make it, the rest
    // are held back past their deadline.
    assert!(applied >= 100, "{applied} applied, {throttled} throttled");
    assert!(throttled > 0, "{applied} applied, {throttled} throttled");
    assert!(unknown <= 32, "{unknown} unknown: more than a window");
    let stats = gifter.stats();
    assert!(stats.throttled > 0, "{stats:?}");
    assert_eq!(stats.moves, 0, "the gifter was cut off: {stats:?}");

    // The other user was never held back, and its acks stayed quick.
    let latencies = others.await.expect("other gifts");
    assert_eq!(other.stats().throttled, 0);
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < (before * 10).max(Duration::from_millis(500)),
        "other user's worst ack {worst:?} during the combo (before: {before:?})"
    );

    // Each applied gift counts exactly once; none held back counts at all.
    converge(&t, &[&gr, &or, &hr], Duration::from_secs(10)).await;
    let state = origin_state(&t, ROOM).await;
    let known = applied + 5 + OTHER_GIFTS as u64;
    assert!(
        (known..=known + unknown).contains(&state.gift_count),
        "{} gifts counted; {known} applied, {unknown} unknown",
        state.gift_count
    );
    eprintln!(
        "combo: {applied} applied, {throttled} throttled past {DEADLINE:?}, {unknown} unknown, \
         last at {last:?}; \
         other user's worst ack {worst:?} (before {before:?}); gifter {stats:?}"
    );
}

/// The same when the relay fails under a client holding many unacknowledged
/// gifts: they go again on the next relay — within the window, paced to the
/// rate — and every one resolves, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unacknowledged_gifts_resolve_on_the_next_relay() {
    const HELD: u64 = 200;
    let mut t = topology("combo-failover", 2, production_rates).await;
    let host = t.client(100, &[ROOM], &[0]).await.expect("host connects");
    let hr = host.join(ROOM).await.expect("host joins");
    assert!(hr.like(1).await.expect("opens").outcome.is_applied());
    let gifter = (t.client_builder(1, &[]).relay(t.relay_addr(0)))
        .relay(t.relay_addr(1))
        .probe(false)
        .action_deadline(Duration::from_secs(20))
        .connect()
        .await
        .expect("gifter connects");
    let gr = gifter.join(ROOM).await.expect("gifter joins");
    // Relay 0 cannot reach the origin: nothing is acked; gifts pile up.
    t.relays[0]
        .as_ref()
        .expect("relay 0")
        .partition_upstream(true);
    let gifts: Vec<_> = (0..HELD)
        .map(|_| {
            let gr = gr.clone();
            tokio::spawn(async move { gr.gift(GiftId(1), 1).await })
        })
        .collect();
    // Once the gifter has sent its window and fallen back to the stream for
    // want of acks (polled: there is no event for it), kill its relay.
    for _ in 0..500 {
        if gifter.stats().fallbacks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gifter.stats().fallbacks > 0, "the gifts went out");
    t.relays[0].take().expect("relay 0").abort().await;
    let mut ids = BTreeSet::new();
    for g in gifts {
        let acked = tokio::time::timeout(Duration::from_secs(30), g)
            .await
            .expect("a held gift hung")
            .expect("task")
            .expect("every held gift resolves with its outcome");
        assert!(acked.outcome.is_applied(), "{acked:?}");
        assert!(ids.insert(acked.id.n), "{} twice", acked.id);
    }
    assert_eq!(ids.len() as u64, HELD);
    converge(&t, &[&gr], Duration::from_secs(10)).await;
    assert_eq!(origin_state(&t, ROOM).await.gift_count, HELD);
}
