//! Cluster mode against a real nats-server (started per test; see
//! `nats/mod.rs` for when a missing server skips and when it fails):
//! fencing at the log, a paused owner cut off, a room rebuilt elsewhere.

mod nats;

use std::time::{Duration, Instant};

use origin::cluster::lease::{Lease, Timing};
use origin::cluster::{self, rebuild, split, Committer, Entry, Error, Outcome, Placement, RoomLog};
use origin::rules::{self, Authority, Decision, Record};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime, SessionId, UserId};

const ROOM: RoomId = RoomId(42);
const HOST: UserId = UserId(42_000);
const TIMING: Timing = Timing {
    ttl: Duration::from_millis(1000),
    margin: Duration::from_millis(200),
};

fn config(url: &str, node: &str) -> cluster::Config {
    cluster::Config {
        node: node.into(),
        nats_url: url.into(),
        lease_ttl: TIMING.ttl,
        lease_margin: TIMING.margin,
        ..cluster::Config::default()
    }
}

/// A node's connection: its room log, its committer, its lease bucket.
struct Node {
    name: String,
    log: RoomLog,
    committer: Committer,
    placement: Placement,
}

async fn node(url: &str, name: &str) -> Node {
    let c = config(url, name);
    let (log, js) = RoomLog::connect(&c).await.expect("connect");
    let placement = Placement::open(&js, &c).await.expect("bucket");
    Node {
        name: name.into(),
        committer: Committer::new(log.clone(), name),
        log,
        placement,
    }
}

/// Run every command `lease` has at `now` against the real bucket.
async fn drive(lease: &mut Lease, placement: &Placement, now: Instant) {
    for _ in 0..10 {
        let Some(command) = lease.poll_command(now) else {
            return;
        };
        match placement.execute(ROOM, command).await {
            Outcome::Read(seen) => lease.handle_read(now, seen),
            Outcome::Written(revision) => lease.handle_written(now, revision),
            Outcome::Refused => lease.handle_refused(now),
            Outcome::Failed(why) => panic!("bucket request failed: {why}"),
        }
    }
    panic!("a lease kept issuing commands at one instant");
}

/// A user's actions, numbered.
struct Sender {
    actor: Actor,
    session: SessionId,
    n: u64,
}

impl Sender {
    fn new(user: UserId, grant: Grant) -> Sender {
        Sender {
            actor: Actor { user, grant },
            session: SessionId(user.0 * 7 + 1),
            n: 0,
        }
    }

    fn msg(&mut self, now: ServerTime, action: Action) -> ActionMsg {
        self.n += 1;
        ActionMsg {
            id: ActionId {
                session: self.session,
                n: self.n,
            },
            room: ROOM,
            sent_at: now,
            action,
        }
    }
}

fn decided(d: Decision) -> Record {
    match d {
        Decision::Decided(r) => r,
        other => panic!("not decided: {other:?}"),
    }
}

fn gift(count: u32) -> Action {
    Action::Gift {
        gift: GiftId(2),
        count,
    }
}

#[tokio::test]
async fn an_append_with_a_stale_expected_sequence_is_refused() {
    let Some(server) = nats::start("fencing at the log") else {
        return;
    };
    let mut a = node(&server.url, "a").await;
    let mut b = node(&server.url, "b").await;
    assert!(a
        .committer
        .acquire(ROOM, 5)
        .await
        .expect("fence")
        .is_empty());
    assert_eq!(a.log.last_seq(ROOM).await.expect("last"), 1, "the fence");
    let rec = Record::default();
    let done = a.committer.commit(vec![(ROOM, rec.clone())]).await;
    let seq = *done[0].result.as_ref().expect("appended");
    assert_eq!(seq, 2);
    // Any append that does not expect the log's true end is refused.
    let entry = Entry::Records(vec![rec.clone()]);
    for stale in [0, 1, 3] {
        match a.log.append(ROOM, &entry, "a", 5, stale).await {
            Err(Error::Fenced { room, expected }) => assert_eq!((room, expected), (ROOM, stale)),
            other => panic!("expected {stale} was not refused: {other:?}"),
        }
    }
    // B takes the room: its fence ends A's run.
    let before = b.committer.acquire(ROOM, 9).await.expect("fence");
    assert_eq!(before.len(), 2, "A's fence and A's records");
    let done = a.committer.commit(vec![(ROOM, rec.clone())]).await;
    assert!(
        matches!(done[0].result, Err(Error::Fenced { .. })),
        "{:?}",
        done[0].result
    );
    assert_eq!(a.committer.rooms().count(), 0, "A dropped the room");
    let again = a.committer.commit(vec![(ROOM, rec.clone())]).await;
    assert!(matches!(again[0].result, Err(Error::NotOwner(ROOM))));
    let done = b.committer.commit(vec![(ROOM, rec)]).await;
    assert!(done[0].result.is_ok());
    // A still believes it won the room at 5 (a stale view of the claim):
    // its fence would cut B off with an older epoch. It is refused.
    match a.committer.acquire(ROOM, 5).await {
        Err(Error::Deposed { room, newer }) => assert_eq!((room, newer), (ROOM, 9)),
        other => panic!("a fence over a later epoch was not refused: {other:?}"),
    }
    let log = a.log.read(ROOM).await.expect("read");
    let writers: Vec<(&str, u64)> = log.iter().map(|l| (l.node.as_str(), l.epoch)).collect();
    assert_eq!(writers, vec![("a", 5), ("a", 5), ("b", 9), ("b", 9)]);
}

/// Decide `msgs` on `auth` at `now` and commit their records in one group
/// commit; returns the outcomes that may be acked (their room's append
/// succeeded) and the ones that may not.
async fn decide_and_commit(
    auth: &mut Authority,
    committer: &mut Committer,
    now: ServerTime,
    msgs: &[(Actor, ActionMsg)],
) -> (Vec<protocol::Outcome>, usize) {
    let mut parts = Vec::new();
    let mut outcomes = Vec::new();
    for (actor, msg) in msgs {
        let rec = decided(auth.handle_action(now, *actor, msg));
        outcomes.push(rec.ack.expect("an action's record has its ack").outcome);
        parts.extend(split(rec, msg.room));
    }
    let done = committer.commit(parts).await;
    if done.iter().all(|a| a.result.is_ok()) {
        (outcomes, 0)
    } else {
        (Vec::new(), outcomes.len())
    }
}

#[tokio::test]
async fn an_owner_paused_past_its_lease_cannot_append_or_ack_after_resuming() {
    let Some(server) = nats::start("paused owner") else {
        return;
    };
    let mut a = node(&server.url, "a").await;
    let mut b = node(&server.url, "b").await;
    let config = rules::Config::default();
    let t0 = Instant::now();
    let now = ServerTime(1_000_000_000);

    // A wins the room and acks three actions.
    let mut lease_a = Lease::new("a", TIMING);
    lease_a.handle_want(t0);
    drive(&mut lease_a, &a.placement, t0).await;
    let epoch_a = lease_a.owned(t0).expect("A owns the room");
    a.committer.acquire(ROOM, epoch_a).await.expect("fence");
    let mut auth_a = Authority::new(config.clone());
    let mut host = Sender::new(HOST, Grant::Host);
    let mut fan = Sender::new(UserId(7), Grant::Viewer);
    let msgs = vec![
        (
            host.actor,
            host.msg(now, Action::Chat { text: "hi".into() }),
        ),
        (fan.actor, fan.msg(now, gift(3))),
        (fan.actor, fan.msg(now, gift(4))),
    ];
    let (acked, refused) = decide_and_commit(&mut auth_a, &mut a.committer, now, &msgs).await;
    assert_eq!((acked.len(), refused), (3, 0));

    // A is paused: its clock stands still, it renews nothing. B watches the
    // lease on its own clock and takes it over once it has not moved for
    // ttl + margin.
    let mut lease_b = Lease::new("b", TIMING);
    lease_b.handle_want(t0);
    let mut b_now = t0;
    for _ in 0..100 {
        drive(&mut lease_b, &b.placement, b_now).await;
        if lease_b.owned(b_now).is_some() {
            break;
        }
        b_now += Duration::from_millis(100);
    }
    let epoch_b = lease_b.owned(b_now).expect("B took over");
    assert!(epoch_b > epoch_a, "epochs grow: {epoch_a} then {epoch_b}");
    assert!(
        b_now - t0 >= TIMING.ttl + TIMING.margin,
        "not before the lease ran out"
    );
    let entries = b.committer.acquire(ROOM, epoch_b).await.expect("fence");
    let mut auth_b = Authority::new(config);
    rebuild(&mut auth_b, &entries).expect("rebuild");
    assert_eq!(
        auth_b.room(ROOM),
        auth_a.room(ROOM),
        "everything A acked is there"
    );

    // A resumes. With its clock still where it stopped it even believes it
    // owns the room: the log refuses its append all the same, so nothing is
    // acked.
    assert_eq!(lease_a.owned(t0), Some(epoch_a), "a stale belief");
    let late = vec![(fan.actor, fan.msg(now, gift(5)))];
    let (acked, refused) = decide_and_commit(&mut auth_a, &mut a.committer, now, &late).await;
    assert_eq!(
        (acked.len(), refused),
        (0, 1),
        "nothing acked after resuming"
    );
    // Its next renewal is refused by the bucket, and it stops believing.
    let a_later = t0 + TIMING.renew_every();
    drive(&mut lease_a, &a.placement, a_later).await;
    assert_eq!(lease_a.owned(a_later), None);
    // With a clock that ran on while it was stopped (a real SIGSTOP), it
    // would have known at once.
    assert_eq!(lease_a.owned(t0 + TIMING.ttl), None);

    // The log: A's entries, then B's fence, then nothing of A's.
    let log = b.log.read(ROOM).await.expect("read");
    let fence_at = log
        .iter()
        .position(|l| matches!(&l.entry, Entry::Fence { node, .. } if node == "b"))
        .expect("B's fence");
    assert!(log[fence_at..]
        .iter()
        .all(|l| l.node == "b" && l.epoch == epoch_b));
    assert!(log[..fence_at]
        .iter()
        .all(|l| l.node == "a" && l.epoch == epoch_a));
    let _ = &b.name;
}

#[tokio::test]
async fn a_room_rebuilt_by_another_node_has_the_same_state_and_id_memory() {
    let Some(server) = nats::start("rebuild elsewhere") else {
        return;
    };
    let mut a = node(&server.url, "a").await;
    let mut b = node(&server.url, "b").await;
    let config = rules::Config::default();
    let mut auth_a = Authority::new(config.clone());
    a.committer.acquire(ROOM, 1).await.expect("fence");
    let mut now = ServerTime(2_000_000_000);
    let mut host = Sender::new(HOST, Grant::Host);
    let mut fans: Vec<Sender> = (1..=5)
        .map(|u| Sender::new(UserId(u), Grant::Viewer))
        .collect();
    let mut sent = vec![(
        host.actor,
        host.msg(
            now,
            Action::Chat {
                text: "open".into(),
            },
        ),
    )];
    sent.push((
        host.actor,
        host.msg(
            now,
            Action::ChallengeStart {
                goal: protocol::room::Goal::GiftValue(1_000_000),
                window_secs: 600,
            },
        ),
    ));
    // Several group commits, several records per room per commit.
    let mut outcomes = Vec::new();
    let (o, _) = decide_and_commit(&mut auth_a, &mut a.committer, now, &sent).await;
    outcomes.extend(o);
    for round in 0..4u32 {
        now = now + Duration::from_millis(250);
        let mut batch = Vec::new();
        for f in fans.iter_mut() {
            batch.push((f.actor, f.msg(now, gift(round + 1))));
            batch.push((f.actor, f.msg(now, Action::Like { count: 3 })));
        }
        // One refused action: an unknown gift. Its id is remembered too.
        let f = &mut fans[0];
        batch.push((
            f.actor,
            f.msg(
                now,
                Action::Gift {
                    gift: GiftId(999),
                    count: 1,
                },
            ),
        ));
        let (o, refused) = decide_and_commit(&mut auth_a, &mut a.committer, now, &batch).await;
        assert_eq!(refused, 0);
        outcomes.extend(o);
        sent.extend(batch);
    }
    assert!(
        outcomes.iter().any(|o| !o.is_applied()),
        "a rejection in the mix"
    );

    // A hands over (or dies); B fences and rebuilds from the log alone.
    a.committer.drop_room(ROOM);
    let entries = b.committer.acquire(ROOM, 2).await.expect("fence");
    let mut auth_b = Authority::new(config);
    let records = rebuild(&mut auth_b, &entries).expect("rebuild");
    assert_eq!(records, sent.len());
    let state = auth_b.room(ROOM).expect("rebuilt").clone();
    assert_eq!(Some(&state), auth_a.room(ROOM), "same state, seq for seq");
    assert!(state.gift_value > 0 && state.challenge.is_some());
    assert_eq!(auth_b.poll_timeout(), auth_a.poll_timeout(), "same timers");

    // Every id re-sent to B answers its first outcome and changes nothing.
    for ((actor, msg), first) in sent.iter().zip(&outcomes) {
        match auth_b.handle_action(now, *actor, msg) {
            Decision::Answered { outcome, .. } => assert_eq!(outcome, *first, "{:?}", msg.id),
            other => panic!("{:?} decided again: {other:?}", msg.id),
        }
    }
    assert_eq!(auth_b.room(ROOM), Some(&state), "nothing applied twice");
    // And B goes on from there: its appends follow its fence.
    let next = vec![(fans[1].actor, fans[1].msg(now, gift(1)))];
    let (o, refused) = decide_and_commit(&mut auth_b, &mut b.committer, now, &next).await;
    assert_eq!((o.len(), refused), (1, 0));
    assert!(o[0].is_applied());
    let _ = (&a.name, &b.name);
}

/// Figures, not a check: `cargo test -p ringside-origin --test cluster --
/// --ignored --nocapture append_figures`. Append latency (one record, one
/// room, awaited) and group-commit throughput (records spread over 100
/// rooms, one commit at a time) against one local nats-server (replicas 1,
/// the 2.9 default sync interval: no fsync per append).
#[tokio::test]
#[ignore = "a measurement; run it by name"]
async fn append_figures() {
    let Some(server) = nats::start("append figures") else {
        return;
    };
    let mut a = node(&server.url, "a").await;
    let rooms: Vec<RoomId> = (1..=100).map(RoomId).collect();
    for room in &rooms {
        a.committer.acquire(*room, 1).await.expect("fence");
    }
    let record = |i: u64| Record {
        ack: Some(rules::Ack {
            id: ActionId {
                session: SessionId(1),
                n: i,
            },
            user: UserId(1),
            outcome: protocol::Outcome::Applied {
                seq: protocol::Seq(i),
            },
            at: ServerTime(i),
        }),
        events: Vec::new(),
    };
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    let mut lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        let done = a.committer.commit(vec![(rooms[0], record(i))]).await;
        assert!(done[0].result.is_ok());
        lat.push(t.elapsed());
    }
    println!(
        "append latency, 1 record: p50 {:?} p99 {:?}",
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    for batch in [10usize, 100, 1000] {
        let mut lat = Vec::new();
        let start = Instant::now();
        let mut n = 0u64;
        for c in 0..(20_000 / batch).max(20) {
            let records = (0..batch)
                .map(|i| (rooms[(c + i) % rooms.len()], record(n + i as u64)))
                .collect();
            n += batch as u64;
            let t = Instant::now();
            let done = a.committer.commit(records).await;
            assert!(done.iter().all(|d| d.result.is_ok()));
            lat.push(t.elapsed());
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "group commit of {batch} records over {} rooms: {:.0} records/s, commit p50 {:?} p99 {:?}",
            batch.min(rooms.len()),
            n as f64 / secs,
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.99)
        );
    }
    // Rebuild: read one room's log back (one direct get per message).
    let (busiest, messages) = {
        let mut best = (rooms[0], 0);
        for r in &rooms[..3] {
            let n = a.log.last_seq(*r).await.expect("last");
            best = best.max((*r, n));
        }
        best
    };
    let t = Instant::now();
    let entries = a.log.read(busiest).await.expect("read");
    println!(
        "read back {} entries of one room (its last stream sequence {messages}) in {:?}",
        entries.len(),
        t.elapsed()
    );
}
