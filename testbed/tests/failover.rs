//! Surviving failure: a relay killed mid-battle, a relay drained, a relay cut
//! off from the origin, and the origin restarted mid-battle. Gifts are in
//! flight the whole time; none may be lost or counted twice.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_sdk::{Client, ClientEvent, Continuity, Outcome, Room, Update};
use common::*;
use protocol::{GiftId, RoomId, UserId};
use testbed::impair::{LinkProfile, Profile};
use testbed::link::{spawn_link, LinkConfig};
use testbed::topology::Topology;

/// These tests time failovers against seconds-long bounds; on a 2-core
/// machine they run one at a time so that none starves another.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const A: RoomId = RoomId(31);
const B: RoomId = RoomId(32);
const CLIENTS: u64 = 20;

/// Hosts of A (relay 1) and B (relay 1), a running battle, and `CLIENTS`
/// viewers of A pinned to relay 0 first, relay 1 second.
async fn battle_on_relay0(t: &Topology) -> (Room, Room, Vec<(Client, Room)>) {
    let ha = t.client(1, &[A], &[1]).await.expect("host A");
    let hb = t.client(2, &[B], &[1]).await.expect("host B");
    let (ra, rb) = (
        ha.join(A).await.expect("join"),
        hb.join(B).await.expect("join"),
    );
    start_battle(&ra, &rb, 60).await;
    let mut viewers = Vec::new();
    for i in 0..CLIENTS {
        let c = t
            .client_builder(100 + i, &[])
            .relays([t.relay_addr(0), t.relay_addr(1)])
            .probe(false)
            .connect()
            .await
            .expect("viewer connects");
        assert_eq!(c.relay().map(|r| r.addr), Some(t.relay_addr(0)));
        let r = c.join(A).await.expect("join");
        viewers.push((c, r));
    }
    (ra, rb, viewers)
}

/// Every viewer sends a gift every 25 ms (800 gifts a second in all), one in
/// flight at a time, until `stop`.
/// Returns per-viewer tasks yielding (applied, failed) counts.
fn gift_storm(
    viewers: &[(Client, Room)],
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    viewers
        .iter()
        .map(|(_, r)| {
            let (r, stop, acked) = (r.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, 0);
                let mut pace = tokio::time::interval(Duration::from_millis(25));
                for _ in 0..10_000 {
                    pace.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match r.gift(GiftId(1), 1).await {
                        Ok(a) if matches!(a.outcome, Outcome::Applied { .. }) => {
                            ok += 1;
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

async fn wait_acked(acked: &AtomicU64, more_than: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while acked.load(Ordering::Relaxed) <= more_than {
        assert!(Instant::now() < deadline, "gifts stopped being acked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_battle_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut t = topology("kill", 2, |_| {}).await;
    let (ra, rb, viewers) = battle_on_relay0(&t).await;
    let mut events: Vec<_> = viewers.iter().map(|(c, _)| c.events()).collect();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let storm = gift_storm(&viewers, stop.clone(), acked.clone());
    wait_acked(&acked, 100, Duration::from_secs(5)).await;

    let killed = Instant::now();
    t.relays[0].take().expect("relay 0").abort().await;
    // Every client resumes on relay 1 within 2 s of the death.
    for (i, ev) in events.iter_mut().enumerate() {
        let moved = tokio::time::timeout_at((killed + Duration::from_secs(2)).into(), async {
            loop {
                match ev.recv().await {
                    Ok(ClientEvent::Reconnected { relay, .. }) => break relay,
                    Ok(_) => {}
                    Err(e) => panic!("client {i} events: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("client {i} not resumed within 2 s of the kill"));
        assert_eq!(moved.addr, t.relay_addr(1));
    }
    let before = acked.load(Ordering::Relaxed);
    wait_acked(&acked, before + 50, Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for s in storm {
        let (ok, failed) = s.await.expect("storm task");
        assert_eq!(failed, 0, "a gift failed instead of resolving");
        total += ok;
    }
    let mut rooms: Vec<&Room> = viewers.iter().map(|(_, r)| r).collect();
    rooms.push(&ra);
    rooms.push(&rb);
    converge(&t, &rooms, Duration::from_secs(10)).await;
    let a = origin_state(&t, A).await;
    assert_eq!(a.gift_count, total, "acked gifts lost or counted twice");
    assert_eq!(a.battle.map(|b| b.scores[0]), Some(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_relay_moves_its_clients_without_a_gap() {
    let _serial = SERIAL.lock().await;
    let mut t = topology("drain", 2, |_| {}).await;
    let (ra, _rb, viewers) = battle_on_relay0(&t).await;
    let mut events: Vec<_> = viewers.iter().map(|(c, _)| c.events()).collect();
    // Watch every viewer's updates: a snapshot after the join would be a rebuild.
    let mut updates: Vec<_> = viewers.iter().map(|(_, r)| r.updates()).collect();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let storm = gift_storm(&viewers, stop.clone(), acked.clone());
    wait_acked(&acked, 100, Duration::from_secs(5)).await;

    let relay0 = t.relays[0].take().expect("relay 0");
    let left = relay0.drain(vec![t.relay_addr(1).to_string()]).await;
    assert_eq!(left, 0, "every client left the draining relay");
    for (i, ev) in events.iter_mut().enumerate() {
        let continuity = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                if let Ok(ClientEvent::Reconnected { continuity, .. }) = ev.recv().await {
                    break continuity;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("client {i} never resumed"));
        assert_eq!(continuity, Continuity::GapFree, "client {i}");
    }
    let before = acked.load(Ordering::Relaxed);
    wait_acked(&acked, before + 50, Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for s in storm {
        let (ok, failed) = s.await.expect("storm task");
        assert_eq!(failed, 0, "an action failed during the drain");
        total += ok;
    }
    let rooms: Vec<&Room> = viewers.iter().map(|(_, r)| r).chain([&ra]).collect();
    converge(&t, &rooms, Duration::from_secs(10)).await;
    assert_eq!(origin_state(&t, A).await.gift_count, total);
    // No client saw a gap: consecutive events, never a snapshot.
    for (i, u) in updates.iter_mut().enumerate() {
        let mut last = None;
        while let Ok(u) = u.try_recv() {
            match u {
                Update::Event(e) => {
                    if let Some(prev) = last {
                        assert_eq!(e.seq, protocol::Seq(prev + 1), "client {i} skipped");
                    }
                    last = Some(e.seq.0);
                }
                Update::Snapshot(s) => {
                    panic!("client {i} was rebuilt from a snapshot at {}", s.seq)
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_cut_off_from_the_origin_acks_nothing_until_it_is_back() {
    let _serial = SERIAL.lock().await;
    let t = topology("partition", 1, |_| {}).await;
    let viewers: Vec<(Client, Room)> = {
        let mut v = Vec::new();
        for i in 0..5u64 {
            let c = t.client(200 + i, &[], &[0]).await.expect("connect");
            let r = c.join(A).await.expect("join");
            v.push((c, r));
        }
        v
    };
    let mut status = viewers[0].0.events();
    let relay = t.relays[0].as_ref().expect("relay");
    relay.partition_upstream(true);
    // The relay notices (idle timeout) and tells its clients.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(ClientEvent::Upstream { connected: false }) = status.recv().await {
                break;
            }
        }
    })
    .await
    .expect("clients are told the room is degraded");
    let before = origin_state(&t, A).await.gift_count;
    // Gifts sent now cannot be committed, so none may be acked.
    let mut sends = Vec::new();
    for (_, r) in &viewers {
        for _ in 0..4 {
            let r = r.clone();
            sends.push(tokio::spawn(async move { r.gift(GiftId(2), 1).await }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sends.iter().all(|s| !s.is_finished()),
        "an action was acked while the origin was unreachable"
    );
    assert_eq!(origin_state(&t, A).await.gift_count, before);

    relay.partition_upstream(false);
    for s in sends {
        let acked = s
            .await
            .expect("task")
            .expect("outcome after the link returns");
        assert!(acked.outcome.is_applied());
    }
    let rooms: Vec<&Room> = viewers.iter().map(|(_, r)| r).collect();
    converge(&t, &rooms, Duration::from_secs(10)).await;
    assert_eq!(
        origin_state(&t, A).await.gift_count,
        before + 20,
        "each gift exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_restart_keeps_timers_scores_and_seats() {
    let _serial = SERIAL.lock().await;
    let mut t = topology("origin-restart", 1, |_| {}).await;
    let ha = t.client(1, &[A], &[0]).await.expect("host A");
    let hb = t.client(2, &[B], &[0]).await.expect("host B");
    let (ra, rb) = (
        ha.join(A).await.expect("join"),
        hb.join(B).await.expect("join"),
    );
    let guest = t.client(50, &[], &[0]).await.expect("guest");
    let rg = guest.join(A).await.expect("join");
    start_battle(&ra, &rb, 4).await;
    assert!(ra
        .seat_invite(UserId(50), Some(2))
        .await
        .expect("seat invite")
        .outcome
        .is_applied());
    rg.wait_for(Duration::from_secs(5), |s| !s.seats.invites.is_empty())
        .await
        .expect("seat invite seen");
    assert!(rg.seat_accept().await.expect("accept").outcome.is_applied());
    for _ in 0..5 {
        assert!(rg
            .gift(GiftId(3), 1)
            .await
            .expect("gift")
            .outcome
            .is_applied());
    }
    let before = origin_state(&t, A).await;
    let ends_at = before.battle.as_ref().map(|b| b.ends_at).expect("battle");

    t.origin.take().expect("origin").abort().await;
    t.restart_origin().await.expect("restart");
    let after = origin_state(&t, A).await;
    assert_eq!(
        after.battle.as_ref().map(|b| (b.ends_at, b.scores)),
        Some((ends_at, [500, 0]))
    );
    assert_eq!(after.seats.seats[2].user, Some(UserId(50)));

    // Gifts keep counting after the restart, and the bell rings on time.
    assert!(rg
        .gift(GiftId(3), 1)
        .await
        .expect("gift after restart")
        .outcome
        .is_applied());
    let settled = ra
        .wait_for(Duration::from_secs(10), |s| {
            s.battle.as_ref().is_some_and(|b| b.result.is_some())
        })
        .await
        .expect("the battle settles after the restart");
    let result = settled.battle.and_then(|b| b.result).expect("result");
    assert_eq!(result.scores, [600, 0]);
    assert_eq!(result.winner, Some(A));
    converge(&t, &[&ra, &rb, &rg], Duration::from_secs(10)).await;
    assert_eq!(
        origin_state(&t, A).await.seats.seats[2].user,
        Some(UserId(50)),
        "the seat survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_raises_no_false_alarm() {
    let _serial = SERIAL.lock().await;
    let t = topology("no-false-alarm", 1, |_| {}).await;
    let profile = LinkProfile::symmetric(Profile {
        loss: 0.05,
        ..Profile::default()
    });
    let cfg = LinkConfig {
        seed: 11,
        ..LinkConfig::new("127.0.0.1:0".parse().expect("addr"), t.relay_addr(0))
    }
    .with_profile(profile);
    let link = spawn_link(cfg).await.expect("link");
    let mut clients = Vec::new();
    for i in 0..5u64 {
        let c = t
            .client_builder(400 + i, &[])
            .relay(link.local_addr())
            .connect()
            .await
            .expect("connect");
        let r = c.join(A).await.expect("join");
        clients.push((c.events(), c, r));
    }
    // Idle apart from keep-alives for 6 s at 5% loss. A client moves on its
    // standby's notice (the origin lost the relay's link: nothing here cuts
    // that link) or its own idle timeout (45 s); neither may fire, nor may
    // the relay give up on a client whose packets are lost now and then.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (events, _, _) in clients.iter_mut() {
        while let Ok(e) = events.try_recv() {
            assert!(
                !matches!(e, ClientEvent::Moving { .. }),
                "a false alarm: {e:?}"
            );
        }
    }
}
