//! The two-writer check on real room logs: two origin-side writers
//! (`origin::cluster::Committer`, what a node appends with) take a room in
//! turn on a real nats-server, the deposed one's append is refused, and the
//! testbed reads the streams back and finds one writer per stretch; a
//! message slipped in past the fencing (published by hand) is caught.
//! Skipped without nats-server unless `RINGSIDE_REQUIRE_NATS=1`.

use std::io::Write as _;

use async_nats::jetstream;
use async_nats::HeaderMap;
use origin::cluster::{self, Committer, Entry, RoomLog, HEADER_EPOCH, HEADER_NODE};
use origin::rules::{Ack, Record};
use protocol::{ActionId, Outcome, RoomId, Seq, ServerTime, SessionId, UserId};
use testbed::cluster::{logs, nats, writers, NatsCluster};

fn present(test: &str) -> bool {
    let required = std::env::var("RINGSIDE_REQUIRE_NATS").is_ok_and(|v| v == "1");
    match nats::binary() {
        Ok(_) => true,
        Err(e) => {
            assert!(!required, "{test}: RINGSIDE_REQUIRE_NATS=1 and {e:#}");
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e:#}");
            false
        }
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_taken_over_has_one_writer_per_stretch_and_a_forged_append_is_caught() {
    if !present("cluster logs") {
        return;
    }
    let servers = tokio::task::spawn_blocking(|| NatsCluster::start(1))
        .await
        .expect("task")
        .expect("a server");
    servers.wait_jetstream().await.expect("JetStream");
    let config = cluster::Config {
        nats_url: servers.urls().join(","),
        shards: 2,
        replicas: 1,
        ..cluster::Config::default()
    };
    let (log, _) = RoomLog::connect(&config).await.expect("room log");
    let (room, other) = (RoomId(7), RoomId(8));

    let mut a = Committer::new(log.clone(), "node-a");
    a.acquire(room, 10).await.expect("a fences");
    a.acquire(other, 11).await.expect("a fences the other room");
    let r = a.commit(vec![(room, record(1)), (other, record(2))]).await;
    assert!(r.iter().all(|x| x.result.is_ok()));

    // b takes room 7 over; a's next append there is refused.
    let mut b = Committer::new(log.clone(), "node-b");
    let before = b.acquire(room, 12).await.expect("b fences");
    assert_eq!(before.len(), 2, "a's fence and record");
    let r = a.commit(vec![(room, record(3))]).await;
    assert!(matches!(r[0].result, Err(cluster::Error::Fenced { .. })));
    let r = b.commit(vec![(room, record(4))]).await;
    assert!(r[0].result.is_ok());

    let read = logs::read_all(&servers.urls(), &config)
        .await
        .expect("read");
    let rooms = writers::by_room(read);
    let report = writers::check(&rooms);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(
        (
            report.rooms,
            report.messages,
            report.fences,
            report.moved_rooms
        ),
        (2, 6, 3, 1)
    );
    let nodes: Vec<&str> = rooms[&room].iter().map(|m| m.node.as_str()).collect();
    assert_eq!(nodes, ["node-a", "node-a", "node-b", "node-b"]);

    // Messages published past the fencing (no expected sequence).
    let client = nats::connect(&servers.urls()).await.expect("client");
    let js = jetstream::new(client);
    let publish = |node: &str, epoch: String| {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_NODE, node);
        headers.insert(HEADER_EPOCH, epoch.as_str());
        let payload = protocol::codec::encode(&Entry::Records(vec![record(5)])).expect("encode");
        let js = js.clone();
        let subject = log.subject(room);
        async move {
            (js.publish_with_headers(subject, headers, payload.into())
                .await)
                .expect("publish")
                .await
                .expect("stored");
        }
    };
    let read = || async {
        writers::by_room(
            logs::read_all(&servers.urls(), &config)
                .await
                .expect("read"),
        )
    };
    // The deposed node at its old epoch (as JetStream lets a racing
    // append through): a stray, which no rebuild reads.
    publish("node-a", "10".into()).await;
    let rooms = read().await;
    let report = writers::check(&rooms);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.strays, 1);
    // Another node at the current writer's epoch: two writers.
    let epoch = (rooms[&room].iter().rev())
        .find_map(|m| match &m.entry {
            Entry::Fence { epoch, .. } => Some(*epoch),
            Entry::Records(_) => None,
        })
        .expect("fenced");
    publish("node-x", epoch.to_string()).await;
    let report = writers::check(&read().await);
    assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    assert_eq!(report.violations[0].room, room);
    assert!(report.violations[0].what.contains("two writers"));
}
