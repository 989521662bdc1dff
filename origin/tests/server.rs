//! The real origin on loopback, driven by a minimal relay: the backstop's
//! `Throttled` answer, and idle rooms that leave memory and come back
//! exactly (on subscribe, on action and after a restart).

mod fake_relay;
use fake_relay::{Link, TempDir};
use std::path::Path;
use std::time::Duration;

use net::{self, Identity};
use origin::{Config, Origin};
use protocol::message::{DownMsg, UpMsg};
use protocol::room::Grant;
use protocol::{Action, GiftId, Outcome, RoomId, Seq, UserId};

const SECRET: &str = "a test cluster secret of at least 32 bytes";
const ROOM: RoomId = RoomId(7);

fn config(dir: &Path, rules: origin::rules::Config) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        cluster_secret: Some(SECRET.into()),
        // Every record is followed by a checkpoint: unloaded rooms must be
        // found again without them.
        checkpoint_every: 1,
        rules,
        ..Config::default()
    }
}

fn gift() -> Action {
    Action::Gift {
        gift: GiftId(3),
        count: 1,
    }
}

/// Wait (bounded) for the room's archive to reach `seq`: the idle timer is
/// real time here.
async fn archived(dir: &Path, seq: Seq) -> protocol::RoomState {
    let archives = origin::wal::Archives::open(dir).expect("archives");
    for _ in 0..1000 {
        if let Some(s) = archives.read(ROOM).expect("readable") {
            if s.seq == seq {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{ROOM} never archived at {seq}");
}

#[tokio::test]
async fn an_idle_room_leaves_memory_and_comes_back_exactly_even_after_a_restart() {
    let dir = TempDir::new("origin-unload");
    let rules = origin::rules::Config {
        room_idle: Duration::from_millis(100),
        ..origin::rules::Config::default()
    };
    let identity = Identity::self_signed(&["localhost"]).expect("identity");
    let origin = Origin::start_with(config(&dir.0, rules.clone()), identity.clone())
        .await
        .expect("origin");
    let mut link = Link::connect(&origin, SECRET).await;
    // A viewer cannot open the room; its host can.
    let id = link.send(ROOM, 11, Grant::Viewer, gift()).await;
    assert_eq!(
        link.outcome(id).await,
        Outcome::Rejected {
            reason: protocol::Reason::NoRoom
        }
    );
    let id = link
        .send(ROOM, 7000, Grant::Host, Action::Chat { text: "hi".into() })
        .await;
    assert_eq!(link.outcome(id).await, Outcome::Applied { seq: Seq(2) });
    let id = link.send(ROOM, 11, Grant::Viewer, gift()).await;
    assert_eq!(link.outcome(id).await, Outcome::Applied { seq: Seq(3) });

    // Nobody follows it: it is archived and leaves memory.
    let state = archived(&dir.0, Seq(3)).await;
    assert_eq!(state.gift_value, 100);
    // A relay subscribing brings it back, exactly.
    assert_eq!(link.snapshot(ROOM).await, state);
    let id = link.send(ROOM, 12, Grant::Viewer, gift()).await;
    assert_eq!(link.outcome(id).await, Outcome::Applied { seq: Seq(4) });
    link.up(UpMsg::Unsubscribe { room: ROOM }).await;
    let state = archived(&dir.0, Seq(4)).await;
    // Two records elsewhere: the checkpoint after the first one, written
    // before the second is acknowledged, leaves the unloaded room out.
    for text in ["a", "b"] {
        let other = RoomId(8);
        let id = link
            .send(other, 8000, Grant::Host, Action::Chat { text: text.into() })
            .await;
        assert!(link.outcome(id).await.is_applied());
    }
    drop(link);
    origin.shutdown().await.expect("shutdown");
    {
        let (_wal, recovered) =
            origin::wal::Wal::open(&dir.0, Default::default()).expect("the log opens");
        let blob = recovered.checkpoint.expect("a checkpoint");
        let snap: origin::rules::Snapshot = protocol::codec::decode(&blob).expect("decodes");
        let at_checkpoint = origin::rules::Authority::restore(rules.clone(), snap);
        assert!(at_checkpoint.room(RoomId(8)).is_some());
        assert!(
            at_checkpoint.room(ROOM).is_none(),
            "left out of the checkpoint"
        );
    }

    // After a restart (checkpoints leave the room out): still there.
    let origin = Origin::start_with(config(&dir.0, rules), identity)
        .await
        .expect("restart");
    let mut link = Link::connect(&origin, SECRET).await;
    let id = link.send(ROOM, 13, Grant::Viewer, gift()).await;
    assert_eq!(link.outcome(id).await, Outcome::Applied { seq: Seq(5) });
    let now = link.snapshot(ROOM).await;
    assert_eq!(now.gift_value, state.gift_value + 100);
    assert_eq!(now.seq, Seq(5));
    origin.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_user_over_the_origin_rate_hears_throttled() {
    let dir = TempDir::new("origin-throttle");
    let rules = origin::rules::Config {
        user_rate: 1,
        user_burst: 2,
        ..origin::rules::Config::default()
    };
    let identity = Identity::self_signed(&["localhost"]).expect("identity");
    let origin = Origin::start_with(config(&dir.0, rules), identity)
        .await
        .expect("origin");
    let mut link = Link::connect(&origin, SECRET).await;
    // An operator opens the room (in process), so viewers can act in it.
    assert!(origin.open_room(ROOM).await);
    let mut ids = Vec::new();
    // Ten at once: past a burst of two even if this machine stalls for
    // seconds between them (one token a second).
    for _ in 0..10 {
        ids.push(link.send(ROOM, 11, Grant::Viewer, gift()).await);
    }
    let (user, id, wait) = link
        .until(|m| match m {
            DownMsg::Throttled {
                user,
                id,
                retry_after_ms,
            } => Some((*user, *id, *retry_after_ms)),
            _ => None,
        })
        .await;
    assert_eq!(user, UserId(11));
    assert!(ids[2..].contains(&id), "the burst of two went through");
    assert!(wait > 0 && wait <= 1000, "retry after {wait} ms");
    let state = origin.room_state(ROOM).await.expect("room");
    assert!(state.gift_value < 1000, "not all of them counted");
    assert_eq!(
        state.seq.0,
        1 + state.gift_value / 100,
        "Opened, then the gifts"
    );
    origin.shutdown().await.expect("shutdown");
}
