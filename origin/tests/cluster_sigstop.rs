//! The fencing test from issue 12 with a real process: an owner (a child
//! process: this test binary, running `child_owner`) acks gifts in a room;
//! it is stopped with SIGSTOP; another node takes the lease once it runs
//! out, fences the log and rebuilds the room; the owner is resumed with
//! SIGCONT and must neither append nor ack anything more.
//!
//! The owner's rules, as a serving node will have them: act only while the
//! lease is valid on its own monotonic clock (which runs on while the
//! process is stopped); ack only once the append is acknowledged by
//! JetStream and the lease is still valid then.

mod nats;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use origin::cluster::lease::{Lease, Timing};
use origin::cluster::{self, rebuild, split, Committer, Entry, Outcome, Placement, RoomLog};
use origin::rules::{self, Authority, Decision};
use protocol::message::{ActionMsg, Actor};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, Outcome as Ack, RoomId, ServerTime, SessionId, UserId};

const ROOM: RoomId = RoomId(7);
const TIMING: Timing = Timing {
    ttl: Duration::from_millis(1000),
    margin: Duration::from_millis(200),
};
const CHILD_ENV: &str = "RINGSIDE_CLUSTER_CHILD_URL";
const FAN: UserId = UserId(5);
const SESSION: SessionId = SessionId(55);

fn config(url: &str, node: &str) -> cluster::Config {
    cluster::Config {
        node: node.into(),
        nats_url: url.into(),
        lease_ttl: TIMING.ttl,
        lease_margin: TIMING.margin,
        ..cluster::Config::default()
    }
}

fn gift_msg(n: u64, now: ServerTime) -> (Actor, ActionMsg) {
    let actor = Actor {
        user: if n == 1 { UserId(7_000) } else { FAN },
        grant: if n == 1 { Grant::Host } else { Grant::Viewer },
    };
    let action = if n == 1 {
        Action::Chat {
            text: "open".into(),
        }
    } else {
        Action::Gift {
            gift: GiftId(1),
            count: 1,
        }
    };
    let msg = ActionMsg {
        id: ActionId {
            session: SessionId(SESSION.0 + u64::from(n == 1)),
            n,
        },
        room: ROOM,
        sent_at: now,
        action,
    };
    (actor, msg)
}

/// Drive a lease on the real clock until it has nothing to do now.
async fn drive(lease: &mut Lease, placement: &Placement) {
    for _ in 0..10 {
        let now = Instant::now();
        let Some(command) = lease.poll_command(now) else {
            return;
        };
        let outcome = placement.execute(ROOM, command).await;
        let now = Instant::now();
        match outcome {
            Outcome::Read(seen) => lease.handle_read(now, seen),
            Outcome::Written(revision) => lease.handle_written(now, revision),
            Outcome::Refused => lease.handle_refused(now),
            Outcome::Failed(_) => lease.handle_failed(now),
        }
    }
}

/// The owner, in the child process: wins the room, then decides and
/// commits one gift every 10 ms, printing `OWNER ACKED <n>` for each ack
/// it may send, until its lease or its log says it is done.
#[tokio::test]
#[ignore = "run by a_stopped_owner_cannot_append_or_ack_after_sigcont, as its child"]
async fn child_owner() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let c = config(&url, "a");
    let (log, js) = RoomLog::connect(&c).await.expect("connect");
    let placement = Placement::open(&js, &c).await.expect("bucket");
    let mut committer = Committer::new(log, "a");
    let mut lease = Lease::new("a", TIMING);
    lease.handle_want(Instant::now());
    drive(&mut lease, &placement).await;
    let epoch = lease.owned(Instant::now()).expect("the room is free");
    committer.acquire(ROOM, epoch).await.expect("fence");
    let mut auth = Authority::new(rules::Config::default());
    let t0 = ServerTime(3_000_000_000);
    let started = Instant::now();
    for n in 1..=3000u64 {
        drive(&mut lease, &placement).await;
        if lease.owned(Instant::now()).is_none() {
            println!("OWNER LOST before {n}");
            return;
        }
        let now = t0 + started.elapsed();
        let (actor, msg) = gift_msg(n, now);
        let Decision::Decided(record) = auth.handle_action(now, actor, &msg) else {
            panic!("{n} not decided");
        };
        let done = committer.commit(split(record, ROOM)).await;
        if let Some(failed) = done.iter().find(|a| a.result.is_err()) {
            println!("OWNER FENCED at {n}: {:?}", failed.result);
            return;
        }
        // Acked by JetStream; ack only while the lease still holds.
        if lease.owned(Instant::now()).is_none() {
            println!("OWNER LOST after appending {n} (not acked)");
            return;
        }
        println!("OWNER ACKED {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kill(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {signal} {pid}");
}

#[tokio::test]
async fn a_stopped_owner_cannot_append_or_ack_after_sigcont() {
    let Some(server) = nats::start("SIGSTOP fencing") else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_owner", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &server.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the owner");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("OWNER ") && tx.send(line).is_err() {
                break;
            }
        }
    });
    let acked = |line: &str| {
        line.strip_prefix("OWNER ACKED ")
            .and_then(|n| n.parse::<u64>().ok())
    };
    // Let it ack a few gifts (bounded wait).
    let mut before = Vec::new();
    while before.len() < 20 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the owner acks");
        before.push(acked(&line).unwrap_or_else(|| panic!("unexpected: {line}")));
    }
    kill("-STOP", pid);
    // Anything it printed before it stopped.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        before.push(acked(&line).unwrap_or_else(|| panic!("unexpected: {line}")));
    }
    let stopped = Instant::now();

    // Node B takes the room once the lease runs out.
    let c = config(&server.url, "b");
    let (log, js) = RoomLog::connect(&c).await.expect("connect");
    let placement = Placement::open(&js, &c).await.expect("bucket");
    let mut committer = Committer::new(log.clone(), "b");
    let mut lease = Lease::new("b", TIMING);
    lease.handle_want(Instant::now());
    for _ in 0..200 {
        drive(&mut lease, &placement).await;
        if lease.owned(Instant::now()).is_some() {
            break;
        }
        if let Some(t) = lease.poll_timeout() {
            tokio::time::sleep_until(t.into()).await;
        }
    }
    let epoch = lease.owned(Instant::now()).expect("B took over");
    let took = stopped.elapsed();
    let entries = committer.acquire(ROOM, epoch).await.expect("fence");
    let mut auth = Authority::new(rules::Config::default());
    rebuild(&mut auth, &entries).expect("rebuild");
    // Everything A acked is in the room B rebuilt: re-sent, it answers Applied.
    let now = ServerTime(4_000_000_000);
    for n in &before {
        let (actor, msg) = gift_msg(*n, now);
        match auth.handle_action(now, actor, &msg) {
            Decision::Answered { outcome, .. } => {
                assert!(matches!(outcome, Ack::Applied { .. }), "{n}: {outcome:?}")
            }
            other => panic!("acked gift {n} missing after the take-over: {other:?}"),
        }
    }

    // A resumes: it may say it lost the room; it must not ack or append.
    kill("-CONT", pid);
    let mut after = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        after.push(line);
    }
    let status = child.wait().expect("the owner exits");
    let _ = reader.join();
    assert!(status.success(), "{status}");
    assert!(
        after.iter().all(|l| acked(l).is_none()),
        "acked after SIGCONT: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|l| l.contains("LOST") || l.contains("FENCED")),
        "{after:?}"
    );
    let log_now = log.read(ROOM).await.expect("read");
    let fence = log_now
        .iter()
        .position(|l| matches!(&l.entry, Entry::Fence { node, .. } if node == "b"))
        .expect("B's fence");
    assert!(
        log_now[fence..].iter().all(|l| l.node == "b"),
        "A appended after B's fence"
    );
    println!(
        "owner stopped after {} acks; B took over {} ms later; A after SIGCONT: {:?}",
        before.len(),
        took.as_millis(),
        after
    );
}
