//! A room log on a three-server NATS cluster (replicas 3): killing the
//! stream's leader (SIGKILL) loses no acknowledged record, and the writer
//! carries on after a pause, each record in the log exactly once.

mod nats;

use std::time::{Duration, Instant};

use origin::cluster::{self, Committer, Entry, RoomLog};
use origin::rules::{Ack, Record};
use protocol::{ActionId, Outcome, RoomId, Seq, ServerTime, SessionId, UserId};

const ROOM: RoomId = RoomId(3);

fn record(n: u64) -> Record {
    Record {
        ack: Some(Ack {
            id: ActionId {
                session: SessionId(1),
                n,
            },
            user: UserId(1),
            outcome: Outcome::Applied { seq: Seq(n) },
            at: ServerTime(n),
        }),
        events: Vec::new(),
    }
}

/// The action numbers of every record in `entries`, in log order.
fn numbers(entries: &[Entry]) -> Vec<u64> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Records(r) => Some(r),
            Entry::Fence { .. } => None,
        })
        .flatten()
        .filter_map(|r| r.ack.map(|a| a.id.n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_loses_no_acknowledged_record() {
    let Some(mut servers) = nats::start_cluster("three-server cluster") else {
        return;
    };
    let config = cluster::Config {
        node: "a".into(),
        nats_url: servers.urls.clone(),
        replicas: 3,
        ..cluster::Config::default()
    };
    // The stream can be placed on three servers once all three have joined
    // the JetStream cluster, a moment after its leader is elected: try
    // again until then (bounded).
    let mut connected = None;
    for _ in 0..100 {
        match RoomLog::connect(&config).await {
            Ok(c) => {
                connected = Some(c);
                break;
            }
            Err(cluster::Error::Setup { reason, .. }) if reason.contains("no suitable peers") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
    let (log, js) = connected.expect("the stream placed on three servers within 10 s");
    let mut committer = Committer::new(log.clone(), "a");
    committer.acquire(ROOM, 1).await.expect("fence");
    let mut acked = Vec::new();
    for n in 0..50 {
        let done = committer.commit(vec![(ROOM, record(n))]).await;
        done[0].result.as_ref().expect("appended");
        acked.push(n);
    }
    let mut stream = js.get_stream(&config.stream).await.expect("stream");
    let info = stream.info().await.expect("info");
    let leader = (info.cluster.as_ref())
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    assert_eq!(info.config.num_replicas, 3);
    servers.kill(&leader);
    let killed = Instant::now();

    // Carry on as a node would: a failed append drops the room; fence and
    // read again, and append only what the log does not hold yet (the id
    // memory's job in the origin), with a bounded pause between tries.
    let mut epoch = 1;
    let mut pause = None;
    let mut failures = 0;
    for n in 50..100 {
        let mut done = false;
        for _ in 0..200 {
            if committer.rooms().next().is_none() {
                epoch += 1;
                // What the fence was appended after: the log as it is (a
                // plain read may come from a replica that lags).
                let Ok(entries) = committer.acquire(ROOM, epoch).await else {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if numbers(&entries).contains(&n) {
                    done = true;
                    break;
                }
            }
            let r = committer.commit(vec![(ROOM, record(n))]).await;
            if r[0].result.is_ok() {
                done = true;
                break;
            }
            failures += 1;
        }
        assert!(done, "record {n} not appended after the kill");
        pause.get_or_insert_with(|| killed.elapsed());
        acked.push(n);
    }
    epoch += 1;
    let entries = committer.acquire(ROOM, epoch).await.expect("fence");
    let got = numbers(&entries);
    assert_eq!(got, acked, "every acknowledged record, once, in order");
    // While the stream elects a new leader, appends find no responder
    // ("no stream found"): that election is the pause.
    println!(
        "killed the stream leader {leader}; first append after {} ms ({failures} failed tries)",
        pause.unwrap_or_default().as_millis()
    );
}
