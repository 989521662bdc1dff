//! The testbed's NATS cluster launcher against real nats-servers: three
//! clustered servers with JetStream, one killed and started again, all
//! gone on drop. Skipped (with a message saying how to install
//! nats-server) when nats-server is missing, unless
//! `RINGSIDE_REQUIRE_NATS=1` (CI), when that fails.

use std::io::Write as _;

use async_nats::jetstream::{self, stream};
use testbed::cluster::{nats, NatsCluster};

/// Whether the test can run; panics if nats-server is required and missing.
fn present(test: &str) -> bool {
    let required = std::env::var("RINGSIDE_REQUIRE_NATS").is_ok_and(|v| v == "1");
    match nats::binary() {
        Ok(_) => true,
        Err(e) => {
            assert!(!required, "{test}: RINGSIDE_REQUIRE_NATS=1 and {e:#}");
            // Straight to the descriptor: the harness captures eprintln!.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e:#}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_cluster_and_one_comes_back_after_a_kill() {
    if !present("nats cluster launcher") {
        return;
    }
    let mut c = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("launcher task")
        .expect("three servers start");
    assert_eq!(c.len(), 3);
    c.wait_jetstream()
        .await
        .expect("JetStream places R3 streams");

    // A replicated stream takes a message.
    let client = nats::connect(&c.urls()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "T".into(),
        subjects: vec!["t.>".into()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("R3 stream");
    let ack = js.publish("t.1", "x".into()).await.expect("publish");
    assert_eq!(ack.await.expect("stored on a majority").sequence, 1);

    let pid = c.pid(1).expect("running");
    c.kill(1).expect("kill");
    assert!(!c.is_running(1) && c.pid(1).is_none());
    // The process is gone (SIGKILL, reaped).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(c.kill(1).is_err(), "a dead server cannot be killed again");

    let mut c = tokio::task::spawn_blocking(move || {
        let mut c = c;
        c.restart(1).map(|()| c)
    })
    .await
    .expect("task")
    .expect("restarts on its ports and data");
    assert!(c.is_running(1));
    c.wait_jetstream()
        .await
        .expect("three servers place R3 streams again");
    let pids: Vec<u32> = (0..3).filter_map(|i| c.pid(i)).collect();
    assert_eq!(pids.len(), 3);
    drop(js);
    c.kill(0).expect("kill");
    drop(c);
    for p in pids.iter().skip(1) {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "server {p} killed on drop"
        );
    }
}
