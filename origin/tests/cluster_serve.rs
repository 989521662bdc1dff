//! The origin binary in cluster mode, through relay links: origin nodes
//! (`Origin::start_with` with a `[cluster]` section) on one local
//! nats-server, driven by fake relays. Actions at a room's owner are acked
//! and published; a subscription or an action at another node is answered
//! `Moved` / `Redirect` naming the owner, never applied. A PK battle
//! between rooms of two nodes brings the invited room to the inviter's
//! node; killing that node mid-battle loses no acked gift and counts none
//! twice, and the battle settles on the survivor. Of 200 rooms, those of a
//! killed node answer again within the 2 s (p99).

mod fake_relay;
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fake_relay::{Link, TempDir, Wire};
use net::Identity;
use origin::{cluster, Config, Origin};
use protocol::message::{ActionMsg, Actor, DownMsg, UpMsg};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, Outcome, RoomId, ServerTime, SessionId, UserId};

const SECRET: &str = "a test cluster secret of at least 32 bytes";

fn config(dir: &std::path::Path, url: &str, node: &str, test: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        cluster_secret: Some(SECRET.into()),
        rules: origin::rules::Config {
            pk_min_duration: Duration::from_secs(4),
            pk_grace: Duration::from_secs(1),
            pk_punishment: Duration::from_secs(1),
            ..origin::rules::Config::default()
        },
        cluster: Some(cluster::Config {
            node: node.into(),
            nats_url: url.into(),
            // Each test its own streams and bucket on the shared server.
            stream: format!("T_{test}"),
            subject_prefix: format!("t.{test}"),
            bucket: format!("t-{test}"),
            ..cluster::Config::default()
        }),
        ..Config::default()
    }
}

/// Nodes `names` on `url`, once each sees all of them.
async fn start_nodes(
    url: &str,
    names: &[&str],
    test: &str,
) -> (BTreeMap<String, Origin>, Vec<TempDir>) {
    let mut nodes = BTreeMap::new();
    let mut dirs = Vec::new();
    for name in names {
        let dir = TempDir::new(&format!("serve-{test}-{name}"));
        let identity = Identity::self_signed(&["localhost"]).expect("identity");
        let origin = Origin::start_with(config(&dir.0, url, name, test), identity)
            .await
            .expect("node starts");
        assert_eq!(origin.node_name(), Some(*name));
        nodes.insert(name.to_string(), origin);
        dirs.push(dir);
    }
    let all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    // A node finds new nodes at its full listings (every 8 renewals).
    let mut agreed = false;
    for _ in 0..400 {
        if nodes.values().all(|o| o.cluster_nodes() == all) {
            agreed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<_> = nodes.values().map(Origin::cluster_nodes).collect();
    assert!(agreed, "every node sees every node within 20 s: {seen:?}");
    (nodes, dirs)
}

async fn wire(origin: &Origin) -> Wire {
    Link::connect(origin, SECRET).await.into_wire()
}

fn host(room: RoomId) -> Actor {
    Actor {
        user: UserId(room.0 * 1000),
        grant: Grant::Host,
    }
}

fn fan(user: u64) -> Actor {
    Actor {
        user: UserId(user),
        grant: Grant::Viewer,
    }
}

fn msg(room: RoomId, session: u64, n: u64, action: Action) -> ActionMsg {
    ActionMsg {
        id: ActionId {
            session: SessionId(session),
            n,
        },
        room,
        sent_at: ServerTime(0),
        action,
    }
}

const WAIT: Duration = Duration::from_secs(5);

/// The ack (or redirect) of `id` on `wire`.
async fn answer(wire: &mut Wire, id: ActionId) -> Option<Result<Outcome, Option<String>>> {
    wire.until(WAIT, |m| match m {
        DownMsg::Ack { id: i, outcome, .. } if *i == id => Some(Ok(*outcome)),
        DownMsg::Redirect { msg, owner, .. } if msg.id == id => Some(Err(owner.clone())),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_act_and_subscribe_at_the_owner_and_are_pointed_there_elsewhere() {
    let Some(server) = nats::start("cluster serve") else {
        return;
    };
    let (nodes, _dirs) = start_nodes(&server.url, &["a", "b", "c"], "basic").await;
    let mut wires = BTreeMap::new();
    for (name, o) in &nodes {
        wires.insert(name.clone(), wire(o).await);
    }
    let mut owners = BTreeSet::new();
    for r in 1..=6 {
        let room = RoomId(r);
        let owner = nodes["a"].owner_of(room).expect("an owner");
        for o in nodes.values() {
            assert_eq!(o.owner_of(room).as_deref(), Some(owner.as_str()));
        }
        owners.insert(owner.clone());
        let other = nodes
            .keys()
            .find(|n| **n != owner)
            .expect("another")
            .clone();
        // A subscription at another node: Moved, naming the owner.
        let w = wires.get_mut(&other).expect("wire");
        let sub = UpMsg::Subscribe {
            room,
            since: None,
            history: None,
        };
        assert!(w.up(sub.clone()).await);
        let moved = w
            .until(WAIT, |m| match m {
                DownMsg::Moved { room: r, owner } if *r == room => Some(owner.clone()),
                _ => None,
            })
            .await;
        assert_eq!(moved, Some(Some(owner.clone())), "{room} at {other}");
        // An action there: handed back undecided, naming the owner.
        let open = msg(room, r * 1000, 1, Action::Chat { text: "hi".into() });
        let up = UpMsg::Action {
            actor: host(room),
            msg: open.clone(),
        };
        assert!(w.up(up.clone()).await);
        assert_eq!(
            answer(w, open.id).await,
            Some(Err(Some(owner.clone()))),
            "{room}: redirect"
        );
        assert!(!nodes[&other].open_room(room).await, "not the owner");
        // At the owner: a snapshot, then the same action is applied (it was
        // never applied at the other node) and published.
        let w = wires.get_mut(&owner).expect("wire");
        assert!(w.up(sub).await);
        let snap = w
            .until(WAIT, |m| match m {
                DownMsg::Snapshot { room: r, state, .. } if *r == room => Some(state.seq),
                _ => None,
            })
            .await;
        assert_eq!(snap, Some(protocol::Seq(0)), "{room} unopened");
        assert!(w.up(up).await);
        let outcome = answer(w, open.id).await;
        assert!(
            matches!(outcome, Some(Ok(Outcome::Applied { .. }))),
            "{outcome:?}"
        );
        let gift = msg(
            room,
            77,
            r,
            Action::Gift {
                gift: GiftId(2),
                count: 1,
            },
        );
        let up = UpMsg::Action {
            actor: fan(77),
            msg: gift.clone(),
        };
        assert!(w.up(up).await);
        let outcome = answer(w, gift.id).await;
        assert!(matches!(outcome, Some(Ok(Outcome::Applied { .. }))));
        let events = w
            .until(WAIT, |m| match m {
                DownMsg::Events { room: r, events } if *r == room => events
                    .iter()
                    .any(|e| e.cause == Some(gift.id))
                    .then_some(()),
                _ => None,
            })
            .await;
        assert!(events.is_some(), "{room}: the gift's event published");
        assert!(nodes[&owner].open_room(room).await, "open already");
        let state = nodes[&owner].room_state(room).await.expect("served");
        assert_eq!(state.gift_count, 1);
        assert_eq!(nodes[&other].room_state(room).await, None);
    }
    assert!(owners.len() > 1, "rooms spread over nodes: {owners:?}");
    // A node drained: its rooms are handed over at once (no lease to wait
    // out) and served by the next node from their logs.
    let room = RoomId(1);
    let gone = nodes["a"].owner_of(room).expect("an owner");
    let mut nodes = nodes;
    let drained = std::time::Instant::now();
    nodes
        .remove(&gone)
        .expect("node")
        .shutdown()
        .await
        .expect("drained");
    wires.remove(&gone);
    let mut served = None;
    for _ in 0..100 {
        let live = nodes.keys().map(String::as_str);
        let to = protocol::placement::owner(room, live)
            .expect("a node")
            .to_owned();
        let w = wires.get_mut(&to).expect("wire");
        let sub = UpMsg::Subscribe {
            room,
            since: None,
            history: None,
        };
        assert!(w.up(sub).await);
        let answer = w
            .until(WAIT, |m| match m {
                DownMsg::Snapshot { room: r, state, .. } if *r == room => {
                    Some(Some(state.gift_count))
                }
                DownMsg::Moved { room: r, .. } if *r == room => Some(None),
                _ => None,
            })
            .await;
        if let Some(Some(gifts)) = answer {
            served = Some((to, gifts));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (to, gifts) = served.expect("the drained node's room is served again");
    assert_eq!(gifts, 1, "rebuilt from its log at {to}");
    println!(
        "FIGURE cluster drain: {gone} shut down; its room served by {to} {} ms later",
        drained.elapsed().as_millis()
    );
    // As the binary runs it: serving until told to stop, then a clean stop.
    let (_, o) = nodes.pop_first().expect("a node");
    let start = std::time::Instant::now();
    let stop = tokio::time::sleep(Duration::from_millis(300));
    o.serve_until(stop).await.expect("served, then stopped");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "served until told"
    );
    for (_, o) in nodes {
        o.shutdown().await.expect("clean shutdown");
    }
}

/// A fake relay linked to every node (the kill test's; it needs `Origin::abort`,
/// feature `fault`): sends a room's actions to the
/// placement's owner among the live nodes (or where a redirect said),
/// follows redirects, and resends until answered.
#[cfg(feature = "fault")]
struct Router {
    wires: BTreeMap<String, Wire>,
    live: BTreeSet<String>,
    routes: BTreeMap<RoomId, String>,
}

#[cfg(feature = "fault")]
impl Router {
    async fn new(nodes: &BTreeMap<String, Origin>) -> Router {
        let mut wires = BTreeMap::new();
        for (name, o) in nodes {
            wires.insert(name.clone(), wire(o).await);
        }
        Router {
            live: wires.keys().cloned().collect(),
            wires,
            routes: BTreeMap::new(),
        }
    }

    fn target(&self, room: RoomId) -> String {
        (self
            .routes
            .get(&room)
            .filter(|n| self.live.contains(*n))
            .cloned())
        .or_else(|| {
            protocol::placement::owner(room, self.live.iter().map(String::as_str))
                .map(str::to_owned)
        })
        .expect("a live node")
    }

    /// Send `m` as `actor` where it belongs, resending until it is acked
    /// (bounded); returns the outcome and the node that answered.
    async fn act(&mut self, actor: Actor, m: &ActionMsg) -> (Outcome, String) {
        for _ in 0..400 {
            let to = self.target(m.room);
            let w = self.wires.get_mut(&to).expect("a wire");
            let up = UpMsg::Action {
                actor,
                msg: m.clone(),
            };
            if !w.up(up).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            match answer(w, m.id).await {
                Some(Ok(outcome)) => {
                    self.routes.insert(m.room, to.clone());
                    return (outcome, to);
                }
                Some(Err(Some(owner))) if self.live.contains(&owner) && owner != to => {
                    self.routes.insert(m.room, owner);
                }
                _ => {
                    self.routes.remove(&m.room);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        panic!("{:?} never answered", m.id);
    }

    /// Send without waiting for the answer.
    async fn fire(&mut self, actor: Actor, m: &ActionMsg) {
        let to = self.target(m.room);
        let w = self.wires.get_mut(&to).expect("a wire");
        let _ = w
            .up(UpMsg::Action {
                actor,
                msg: m.clone(),
            })
            .await;
    }

    /// Send all of `actions` at once and resend (every 100 ms, following
    /// redirects) until each is acked (bounded); returns each outcome and
    /// when it came.
    async fn settle(
        &mut self,
        actions: &[(Actor, ActionMsg)],
    ) -> BTreeMap<ActionId, (Outcome, std::time::Instant)> {
        let mut pending: BTreeMap<ActionId, (Actor, ActionMsg)> = (actions.iter())
            .map(|(a, m)| (m.id, (*a, m.clone())))
            .collect();
        let mut done = BTreeMap::new();
        for _ in 0..300 {
            if pending.is_empty() {
                break;
            }
            for (actor, m) in pending.values() {
                self.fire(*actor, m).await;
            }
            let end = std::time::Instant::now() + Duration::from_millis(100);
            while std::time::Instant::now() < end && !pending.is_empty() {
                let mut redirects = Vec::new();
                for w in self.wires.values_mut() {
                    while let Some(m) = w.next(Duration::from_millis(2)).await {
                        match m {
                            DownMsg::Ack { id, outcome, .. } if pending.remove(&id).is_some() => {
                                done.insert(id, (outcome, std::time::Instant::now()));
                            }
                            DownMsg::Redirect { msg, owner, .. } => {
                                redirects.push((msg.room, owner));
                            }
                            _ => {}
                        }
                    }
                }
                for (room, owner) in redirects {
                    match owner.filter(|o| self.live.contains(o)) {
                        Some(o) => self.routes.insert(room, o),
                        None => self.routes.remove(&room),
                    };
                }
            }
        }
        assert!(pending.is_empty(), "{} never answered", pending.len());
        done
    }

    fn kill(&mut self, name: &str) {
        self.live.remove(name);
        self.wires.remove(name);
        self.routes.retain(|_, n| n != name);
    }
}

#[cfg(feature = "fault")]
const HEART: u64 = 5;

#[cfg(feature = "fault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_of_a_running_battle_loses_no_acked_gift_and_counts_none_twice() {
    let Some(server) = nats::start("cluster serve kill") else {
        return;
    };
    let (mut nodes, _dirs) = start_nodes(&server.url, &["a", "b", "c"], "kill").await;
    let mut router = Router::new(&nodes).await;
    let owner = |nodes: &BTreeMap<String, Origin>, room| {
        (nodes.values().next())
            .and_then(|o| o.owner_of(room))
            .expect("an owner")
    };
    // Two rooms on different nodes.
    let a = RoomId(1);
    let b = (2..100)
        .map(RoomId)
        .find(|r| owner(&nodes, *r) != owner(&nodes, a))
        .expect("a room on another node");
    let home = owner(&nodes, a);
    for room in [a, b] {
        let open = msg(room, room.0 * 1000, 1, Action::Chat { text: "hi".into() });
        let (outcome, at) = router.act(host(room), &open).await;
        assert!(outcome.is_applied(), "{outcome:?}");
        assert_eq!(at, owner(&nodes, room));
    }
    // A relay following b where it is now.
    let b_was = owner(&nodes, b);
    let sub = UpMsg::Subscribe {
        room: b,
        since: None,
        history: None,
    };
    let w = router.wires.get_mut(&b_was).expect("a wire");
    assert!(w.up(sub).await);
    let seq = w
        .until(WAIT, |m| match m {
            DownMsg::Snapshot { room, state, .. } if *room == b => Some(state.seq),
            _ => None,
        })
        .await;
    assert!(seq.is_some(), "b served at {b_was}");
    // The invitation brings b to a's node (pinned), then is decided there.
    let invite = msg(
        a,
        a.0 * 1000,
        2,
        Action::PkInvite {
            to: b,
            duration_secs: 10,
        },
    );
    let (outcome, at) = router.act(host(a), &invite).await;
    assert!(outcome.is_applied(), "{outcome:?}");
    assert_eq!(at, home);
    // Every node watches the pins: all send b where a is (bounded wait).
    for _ in 0..100 {
        if nodes
            .values()
            .all(|o| o.owner_of(b).as_ref() == Some(&home))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for o in nodes.values() {
        assert_eq!(o.owner_of(b), Some(home.clone()), "b pinned to a's node");
    }
    // b's old node told its subscribers where b went.
    let w = router.wires.get_mut(&b_was).expect("a wire");
    let moved = w
        .until(WAIT, |m| match m {
            DownMsg::Moved { room, owner } if *room == b => Some(owner.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        moved,
        Some(Some(home.clone())),
        "b's subscribers were moved"
    );
    let battle = (nodes[&home].room_state(b).await)
        .and_then(|s| s.pk_invite)
        .expect("b invited")
        .battle;
    let accept = msg(b, b.0 * 1000, 2, Action::PkAccept { battle });
    let (outcome, at) = router.act(host(b), &accept).await;
    assert!(outcome.is_applied(), "{outcome:?}");
    assert_eq!(at, home, "the accept was redirected to the battle's node");
    // Gifts in both rooms: some acked, then a burst nobody waits for.
    let gift = |room: RoomId, n: u64| {
        let m = msg(
            room,
            500 + room.0,
            n,
            Action::Gift {
                gift: GiftId(2),
                count: 1,
            },
        );
        (fan(500 + room.0), m)
    };
    let mut gifts = Vec::new();
    let mut acked = BTreeMap::new();
    for n in 1..=5 {
        for room in [a, b] {
            let (actor, m) = gift(room, n);
            let (outcome, _) = router.act(actor, &m).await;
            assert!(outcome.is_applied());
            acked.insert(m.id, outcome);
            gifts.push((actor, m));
        }
    }
    for n in 6..=15 {
        for room in [a, b] {
            let (actor, m) = gift(room, n);
            router.fire(actor, &m).await;
            gifts.push((actor, m));
        }
    }
    // Its node counted the battle's start (the KPIs in cluster mode).
    use origin::metrics::{Completion, CompletionLabels, Kind, StartLabels};
    let pk_started = StartLabels {
        kind: Kind::Pk,
        outcome: "started",
        reason: "none",
    };
    let victim = nodes.remove(&home).expect("the victim");
    assert_eq!(victim.metrics().starts.get_or_create(&pk_started).get(), 1);
    // Kill the battle's node, as a crash would.
    victim.abort().await;
    router.kill(&home);
    let killed = std::time::Instant::now();
    // Every gift again, same ids: each answers its first outcome once.
    let mut resumed = BTreeMap::new();
    let mut finals = BTreeMap::new();
    for (actor, m) in &gifts {
        let (outcome, at) = router.act(*actor, m).await;
        resumed.entry(m.room).or_insert_with(|| killed.elapsed());
        assert_ne!(at, home);
        assert!(outcome.is_applied(), "{:?}: {outcome:?}", m.id);
        if let Some(first) = acked.get(&m.id) {
            assert_eq!(outcome, *first, "an acked gift answered differently");
        }
        finals.insert(m.id, outcome);
    }
    // Both rooms on one survivor (the pin followed), and the battle settles.
    let survivor = owner(&nodes, a);
    assert_eq!(owner(&nodes, b), survivor, "the pair stays together");
    let mut result = None;
    for _ in 0..300 {
        let state = nodes[&survivor].room_state(a).await.expect("served");
        let r = (state.battle.and_then(|bt| bt.result)).or(state.last_result);
        if let Some(r) = r.filter(|r| r.battle == battle) {
            result = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = result.expect("the battle settled on the survivor");
    let per_room = gifts.len() as u64 / 2;
    assert_eq!(finals.len(), gifts.len());
    assert_eq!(
        result.scores,
        [per_room * HEART, per_room * HEART],
        "every gift counted exactly once"
    );
    for room in [a, b] {
        let state = nodes[&survivor].room_state(room).await.expect("served");
        assert_eq!(state.gift_count, per_room, "{room}");
    }
    // The KPIs in cluster mode: the survivor followed the battle from the
    // rooms' state (its start was counted by the dead node) and counted
    // its end once; no node counted it aborted.
    let count = |o: &Origin, outcome| {
        let labels = CompletionLabels {
            kind: Kind::Pk,
            outcome,
        };
        o.metrics().completions.get_or_create(&labels).get()
    };
    assert_eq!(count(&nodes[&survivor], Completion::Settled), 1);
    for (name, o) in &nodes {
        assert_eq!(count(o, Completion::Aborted), 0, "{name}");
        if *name != survivor {
            assert_eq!(count(o, Completion::Settled), 0, "{name}");
        }
        let started = o.metrics().starts.get_or_create(&pk_started).get();
        assert_eq!(started, 0, "{name}: it started on {home}");
    }
    // Once neither room has a battle (settled, punished, closed), the
    // survivor lets the pair go: the pin leaves the bucket.
    let client = async_nats::connect(server.url.as_str())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let bucket = js.get_key_value("t-kill").await.expect("the bucket");
    let pin = format!("pin.{}", b.0);
    let mut unpinned = false;
    for _ in 0..100 {
        if bucket.get(pin.as_str()).await.expect("readable").is_none() {
            unpinned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unpinned, "the pin of b outlived its battle");
    let worst = resumed.values().max().copied().expect("resumed");
    let first = resumed.values().min().copied().expect("resumed");
    println!(
        "FIGURE cluster kill mid-battle: killed {home} holding both battle rooms; they answered \
         again {}..{} ms after the kill on {survivor} (goal: < 2000 ms p99); {} gifts, {} acked \
         before the kill, each counted once",
        first.as_millis(),
        worst.as_millis(),
        gifts.len(),
        acked.len()
    );
    for (_, o) in nodes {
        o.shutdown().await.expect("clean shutdown");
    }
}

#[cfg(feature = "fault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_room_of_a_killed_node_answers_again_within_two_seconds() {
    let Some(server) = nats::start("cluster serve many") else {
        return;
    };
    let (mut nodes, _dirs) = start_nodes(&server.url, &["a", "b", "c"], "many").await;
    let mut router = Router::new(&nodes).await;
    let rooms: Vec<RoomId> = (1..=200).map(RoomId).collect();
    let opens: Vec<(Actor, ActionMsg)> = (rooms.iter())
        .map(|r| {
            let m = msg(*r, r.0 * 1000, 1, Action::Chat { text: "hi".into() });
            (host(*r), m)
        })
        .collect();
    let opened = router.settle(&opens).await;
    assert!(opened.values().all(|(o, _)| o.is_applied()));
    let victim = nodes["a"].owner_of(RoomId(1)).expect("an owner");
    let victims: Vec<RoomId> = (rooms.iter().copied())
        .filter(|r| nodes["a"].owner_of(*r).as_ref() == Some(&victim))
        .collect();
    nodes.remove(&victim).expect("victim").abort().await;
    router.kill(&victim);
    let killed = std::time::Instant::now();
    let gifts: Vec<(Actor, ActionMsg)> = (victims.iter())
        .map(|r| {
            let m = msg(
                *r,
                900,
                r.0,
                Action::Gift {
                    gift: GiftId(1),
                    count: 1,
                },
            );
            (fan(900), m)
        })
        .collect();
    let answered = router.settle(&gifts).await;
    let mut took: Vec<Duration> = (answered.values())
        .map(|(o, at)| {
            assert!(o.is_applied(), "{o:?}");
            at.duration_since(killed)
        })
        .collect();
    took.sort();
    let pct = |p: usize| took[(took.len() * p / 100).min(took.len() - 1)];
    let (p50, p99, max) = (pct(50), pct(99), took[took.len() - 1]);
    println!(
        "FIGURE cluster kill, {} of {} rooms on the killed node: answering again p50 {} ms, \
         p99 {} ms, max {} ms after the kill (goal: p99 < 2000 ms; resends every 100 ms)",
        victims.len(),
        rooms.len(),
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis()
    );
    // The goal with room for a loaded test machine.
    assert!(p99 < Duration::from_secs(4), "p99 {p99:?}");
    for (_, o) in nodes {
        o.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_append_fails_is_won_again_and_nothing_counts_twice() {
    let Some(server) = nats::start("cluster serve fenced") else {
        return;
    };
    let (nodes, _dirs) = start_nodes(&server.url, &["a", "b"], "fenced").await;
    let room = RoomId(5);
    let owner = nodes["a"].owner_of(room).expect("an owner");
    let mut w = wire(&nodes[&owner]).await;
    let sub = UpMsg::Subscribe {
        room,
        since: None,
        history: None,
    };
    assert!(w.up(sub.clone()).await);
    let open = msg(room, room.0 * 1000, 1, Action::Chat { text: "hi".into() });
    let up = |actor, m: &ActionMsg| UpMsg::Action {
        actor,
        msg: m.clone(),
    };
    assert!(w.up(up(host(room), &open)).await);
    assert!(matches!(answer(&mut w, open.id).await, Some(Ok(o)) if o.is_applied()));
    // Someone else writes the room's subject: the owner's next append
    // expects a last sequence the log no longer has, and is refused.
    let client = async_nats::connect(server.url.as_str())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let shard = protocol::placement::score(room, "shard") % 8;
    let stray = origin::cluster::Entry::Fence {
        node: "intruder".into(),
        epoch: 0,
    };
    let bytes = protocol::codec::encode(&stray).expect("encodes");
    (js.publish(format!("t.fenced.{shard}.{}", room.0), bytes.into())
        .await)
        .expect("sent")
        .await
        .expect("stored");
    let gift = msg(
        room,
        77,
        1,
        Action::Gift {
            gift: GiftId(2),
            count: 1,
        },
    );
    assert!(w.up(up(fan(77), &gift)).await);
    // Not acked: handed back with no owner, and the room's subscriber is
    // told it moved (the owner dropped it).
    assert_eq!(answer(&mut w, gift.id).await, Some(Err(None)));
    let moved = w
        .until(WAIT, |m| match m {
            DownMsg::Moved { room: r, owner } if *r == room => Some(owner.clone()),
            _ => None,
        })
        .await;
    assert_eq!(moved, Some(None));
    // The owner wins the room again (a new epoch, fenced, rebuilt): the
    // resent gift is answered, applied once whatever the refused append did.
    let mut outcome = None;
    for _ in 0..50 {
        assert!(w.up(up(fan(77), &gift)).await);
        if let Some(Ok(o)) = answer(&mut w, gift.id).await {
            outcome = Some(o);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(outcome.is_some_and(|o| o.is_applied()), "{outcome:?}");
    let state = nodes[&owner].room_state(room).await.expect("served again");
    assert_eq!(state.gift_count, 1, "counted once");
    assert!(w.up(sub).await);
    let snap = w
        .until(WAIT, |m| match m {
            DownMsg::Snapshot { room: r, state, .. } if *r == room => Some(state.gift_count),
            _ => None,
        })
        .await;
    assert_eq!(snap, Some(1));
    for (_, o) in nodes {
        o.shutdown().await.expect("clean shutdown");
    }
}

/// One action in flight in a room: what was sent, when first and last.
#[cfg(feature = "fault")]
struct InFlight {
    actor: Actor,
    msg: ActionMsg,
    sent: std::time::Instant,
    fired: std::time::Instant,
}

#[cfg(feature = "fault")]
impl Router {
    /// Keep one action per room going, each room on its own: `next(room,
    /// n)` (n = 1, 2, ..) is sent once the room's previous one was acked
    /// and `every` has passed since that one was sent, for `span`;
    /// unanswered ones are resent every 100 ms (following redirects).
    /// Returns per room its longest wait for an ack and how many were
    /// acked. Bounded: nothing new after `span`, and the last ones must be
    /// acked within 30 s more.
    async fn pace(
        &mut self,
        rooms: &[RoomId],
        (span, every): (Duration, Duration),
        next: impl Fn(RoomId, u64) -> (Actor, ActionMsg),
    ) -> BTreeMap<RoomId, (Duration, u64)> {
        let start = std::time::Instant::now();
        let deadline = start + span + Duration::from_secs(30);
        let mut done: BTreeMap<RoomId, (Duration, u64)> =
            rooms.iter().map(|r| (*r, (Duration::ZERO, 0))).collect();
        let mut next_at: BTreeMap<RoomId, std::time::Instant> =
            rooms.iter().map(|r| (*r, start)).collect();
        let mut flying: BTreeMap<RoomId, InFlight> = BTreeMap::new();
        loop {
            let now = std::time::Instant::now();
            assert!(now < deadline, "unanswered in {:?}", flying.keys());
            if now >= start + span && flying.is_empty() {
                return done;
            }
            for room in rooms {
                match flying.get_mut(room) {
                    Some(f) if now.duration_since(f.fired) >= Duration::from_millis(100) => {
                        f.fired = now;
                        let (actor, msg) = (f.actor, f.msg.clone());
                        self.fire(actor, &msg).await;
                    }
                    Some(_) => {}
                    None if now < start + span && next_at[room] <= now => {
                        let (actor, msg) = next(*room, done[room].1 + 1);
                        self.fire(actor, &msg).await;
                        let f = InFlight {
                            actor,
                            msg,
                            sent: now,
                            fired: now,
                        };
                        flying.insert(*room, f);
                    }
                    None => {}
                }
            }
            let mut redirects = Vec::new();
            for w in self.wires.values_mut() {
                while let Some(m) = w.next(Duration::from_millis(2)).await {
                    match m {
                        DownMsg::Ack { id, outcome, .. } => {
                            let Some(room) = (flying.iter())
                                .find(|(_, f)| f.msg.id == id)
                                .map(|(r, _)| *r)
                            else {
                                continue;
                            };
                            assert!(outcome.is_applied(), "{outcome:?}");
                            let f = flying.remove(&room).expect("in flight");
                            let (longest, n) = done.get_mut(&room).expect("a room");
                            *longest = (*longest).max(f.sent.elapsed());
                            *n += 1;
                            next_at.insert(room, f.sent + every);
                        }
                        DownMsg::Redirect { msg, owner, .. } => redirects.push((msg.room, owner)),
                        _ => {}
                    }
                }
            }
            for (room, owner) in redirects {
                match owner.filter(|o| self.live.contains(o)) {
                    Some(o) => self.routes.insert(room, o),
                    None => self.routes.remove(&room),
                };
            }
        }
    }
}

/// A NATS server that leads no stream (nor the bucket) killed: the nodes
/// connected to it reconnect, nothing acked is lost or counted twice.
#[cfg(feature = "fault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_follower_killed_pauses_rooms_briefly_and_loses_no_acked_gift() {
    nats_kill("nats3f", false).await;
}

/// The server that leads the bucket's stream killed: the bucket answers
/// nothing for its election (4–9 s on 2.9.10), every node's lease renewal
/// goes unanswered meanwhile, and the nodes keep their leases and rooms
/// through it (the blind hold, `blind_hold_ms`): only the rooms whose log
/// stream the dead server also led pause, for that stream's election.
/// Measured (three runs): the other rooms waited at most 17–110 ms, those
/// rooms 5.1–7.0 s. With the hold off (`RINGSIDE_TEST_BLIND_HOLD_MS=0`,
/// which fails the bounds) every room paused (the others 5.1–5.2 s, one
/// run); before the hold and the lease's own renewing task, rooms came
/// back after up to 24–29 s, or not within 30 s. Nothing acked is lost or
/// counted twice.
#[cfg(feature = "fault")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_leader_killed_pauses_some_rooms_and_loses_no_acked_gift() {
    nats_kill("nats3l", true).await;
}

/// How long gifts keep coming after a NATS server is killed: past the
/// longest election (9 s) and the rooms won again after it.
#[cfg(feature = "fault")]
const NATS_KILL_LOAD: Duration = Duration::from_secs(14);

/// Two nodes on three NATS servers (replicas 3), 16 rooms with a gift
/// each; kill the server leading the bucket's stream (`leader`) or one
/// leading nothing, then a gift in every room every 250 ms (each room on
/// its own: a paused room holds up no other) for [`NATS_KILL_LOAD`]: all
/// acked, each once; each room's longest wait for an ack is its pause.
#[cfg(feature = "fault")]
async fn nats_kill(test: &str, leader: bool) {
    let Some(mut nats3) = nats::start_cluster("cluster serve nats kill") else {
        return;
    };
    if std::env::var("RINGSIDE_TEST_LOG").is_ok() {
        // `1`: info; anything else is a filter (`info,origin::cluster=debug`).
        let filter = std::env::var("RINGSIDE_TEST_LOG").unwrap_or_default();
        let filter = if filter == "1" {
            "info"
        } else {
            filter.as_str()
        };
        ops::log::init(ops::LogFormat::Text, filter);
    }
    let (nodes, _dirs) = start_on_three(&nats3.urls, test).await;
    let mut router = Router::new(&nodes).await;
    let rooms: Vec<RoomId> = (1..=16).map(RoomId).collect();
    // One fan per room (the per-user rate backstop), one action id each.
    let gift = |room: RoomId, n: u64| {
        let m = msg(
            room,
            900 + room.0,
            n,
            Action::Gift {
                gift: GiftId(2),
                count: 1,
            },
        );
        (fan(900 + room.0), m)
    };
    let opens: Vec<(Actor, ActionMsg)> = (rooms.iter())
        .map(|r| {
            let m = msg(*r, r.0 * 1000, 1, Action::Chat { text: "hi".into() });
            (host(*r), m)
        })
        .collect();
    router.settle(&opens).await;
    let first: Vec<_> = rooms.iter().map(|r| gift(*r, 1)).collect();
    let acked = router.settle(&first).await;
    assert!(acked.values().all(|(o, _)| o.is_applied()));
    let (bucket_leader, stream_leaders) = leaders(&nats3.urls, test).await;
    let victim = match leader {
        true => bucket_leader,
        false => match ["n0", "n1", "n2"]
            .into_iter()
            .find(|n| *n != bucket_leader && !stream_leaders.contains(&Some(n.to_string())))
        {
            Some(n) => n.to_owned(),
            None => {
                println!("every server leads a stream: no follower to kill");
                return;
            }
        },
    };
    // The rooms whose log's stream the victim led: they wait for its
    // election whatever the leases do.
    let shard = |r: &RoomId| (protocol::placement::score(*r, "shard") % 8) as usize;
    let led: BTreeSet<RoomId> = (rooms.iter())
        .filter(|r| stream_leaders[shard(r)].as_deref() == Some(victim.as_str()))
        .copied()
        .collect();
    nats3.kill(&victim);
    let every = Duration::from_millis(250);
    let paced = router
        .pace(&rooms, (NATS_KILL_LOAD, every), |r, n| gift(r, 1 + n))
        .await;
    // Every gift acked before and after the kill is there, once (a room
    // may be between two owners' hands for a moment: bounded wait).
    for room in &rooms {
        let mut count = None;
        for _ in 0..150 {
            for o in nodes.values() {
                if let Some(s) = o.room_state(*room).await {
                    count = Some(s.gift_count);
                }
            }
            if count.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(count, Some(1 + paced[room].1), "{room}");
    }
    let figure = |rooms: Vec<Duration>| {
        let mut v = rooms;
        v.sort();
        match v.last() {
            Some(max) => format!(
                "{} rooms, pause median {} ms, max {} ms",
                v.len(),
                v[v.len() / 2].as_millis(),
                max.as_millis()
            ),
            None => "no rooms".into(),
        }
    };
    let (on_led, others): (Vec<_>, Vec<_>) = paced.iter().partition(|(r, _)| led.contains(r));
    let on_led: Vec<Duration> = on_led.into_iter().map(|(_, d)| d.0).collect();
    let others: Vec<Duration> = others.into_iter().map(|(_, d)| d.0).collect();
    println!(
        "FIGURE cluster serve, nats server {victim} killed (bucket leader: {leader}), a gift per \
         room every 250 ms for {} s: on streams it led {}; on other streams {}; every acked gift \
         counted once (goal: no interruption beyond a short pause)",
        NATS_KILL_LOAD.as_secs(),
        figure(on_led.clone()),
        figure(others.clone()),
    );
    // Far from the figures: a room on a stream the victim did not lead
    // must not wait for the bucket's election (4 s at least); one on a
    // stream it led waits for that stream's (9 s at most) and its fence.
    for d in others {
        assert!(d < Duration::from_secs(3), "a room paused {d:?}");
    }
    for d in on_led {
        assert!(d < Duration::from_secs(20), "a room paused {d:?}");
    }
    for (_, o) in nodes {
        o.shutdown().await.expect("clean shutdown");
    }
}

/// Nodes `a` and `b` (replicas 3) on the three servers at `urls`, once
/// each sees both.
#[cfg(feature = "fault")]
async fn start_on_three(urls: &str, test: &str) -> (BTreeMap<String, Origin>, Vec<TempDir>) {
    let mut nodes = BTreeMap::new();
    let mut dirs = Vec::new();
    for name in ["a", "b"] {
        let dir = TempDir::new(&format!("serve-{test}-{name}"));
        let mut config = config(&dir.0, urls, name, test);
        if let Some(c) = config.cluster.as_mut() {
            c.replicas = 3;
            // For an A/B of the blind hold (0: none; the bounds then fail).
            if let Ok(ms) = std::env::var("RINGSIDE_TEST_BLIND_HOLD_MS") {
                c.blind_hold = Duration::from_millis(ms.parse().expect("milliseconds"));
            }
        }
        // The streams can be placed on three servers once all three have
        // joined the JetStream cluster, a moment after its leader is
        // elected: try again until then (bounded).
        let mut started = None;
        for _ in 0..100 {
            let identity = Identity::self_signed(&["localhost"]).expect("identity");
            match Origin::start_with(config.clone(), identity).await {
                Ok(o) => {
                    started = Some(o);
                    break;
                }
                Err(e) if e.to_string().contains("no suitable peers") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("node: {e}"),
            }
        }
        let origin = started.expect("the streams placed on three servers within 10 s");
        nodes.insert(name.to_string(), origin);
        dirs.push(dir);
    }
    for _ in 0..200 {
        if nodes.values().all(|o| o.cluster_nodes().len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (nodes, dirs)
}

/// The server leading the bucket's stream, and the leader of each of the
/// eight room streams (in shard order).
#[cfg(feature = "fault")]
async fn leaders(urls: &str, test: &str) -> (String, Vec<Option<String>>) {
    let servers: Vec<async_nats::ServerAddr> = (urls.split(','))
        .map(|u| u.parse().expect("a url"))
        .collect();
    let client = async_nats::connect(servers).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let leader = |name: String| {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(&name).await.expect("a stream");
            let info = stream.info().await.expect("its info");
            info.cluster.as_ref().and_then(|c| c.leader.clone())
        }
    };
    let mut streams = Vec::new();
    for k in 0..8 {
        streams.push(leader(format!("T_{test}_{k}")).await);
    }
    let bucket = leader(format!("KV_t-{test}")).await.expect("a leader");
    (bucket, streams)
}
