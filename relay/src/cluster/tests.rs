//! Cluster mode on loopback: the relay's links and router against two fake
//! origin nodes (quinn servers speaking the relay protocol: hello,
//! welcome with the node's name, frames both ways) and a stand-in hub that
//! subscribes a room from seq 5 whenever it is told to state it.

use std::time::Duration;

use net::token::TokenKey;
use net::{Identity, Tuning};
use protocol::message::{ActionMsg, Actor, ALPN_RELAY};
use protocol::room::Grant;
use protocol::{Action, ActionId, GiftId, RoomId, Seq, ServerTime, SessionId, UserId};

use super::*;
use crate::origin_estimate::OriginEstimate;

/// How long anything in these tests may take.
const WITHIN: Duration = Duration::from_secs(10);

/// A fake origin node: it welcomes the first relay link as `name`, hands
/// the test what the relay sends (pings answered and left out), and sends
/// what the test gives it.
struct Node {
    name: &'static str,
    addr: SocketAddr,
    cert_pem: String,
    endpoint: quinn::Endpoint,
    got: mpsc::UnboundedReceiver<UpMsg>,
    say: mpsc::UnboundedSender<DownMsg>,
}

impl Node {
    fn start(name: &'static str) -> Node {
        let identity = Identity::self_signed(&["localhost"]).expect("identity");
        let bind = "127.0.0.1:0".parse().expect("addr");
        let endpoint = net::server_endpoint(bind, &identity, &[ALPN_RELAY], &Tuning::backbone())
            .expect("endpoint");
        let (got_tx, got) = mpsc::unbounded_channel();
        let (say, say_rx) = mpsc::unbounded_channel();
        tokio::spawn(serve_node(endpoint.clone(), name, got_tx, say_rx));
        Node {
            name,
            addr: endpoint.local_addr().expect("addr"),
            cert_pem: identity.cert_pem(),
            endpoint,
            got,
            say,
        }
    }

    /// The next message from the relay that `f` picks (skipping others).
    async fn until<T>(&mut self, mut f: impl FnMut(&UpMsg) -> Option<T>) -> T {
        let name = self.name;
        let wait = async {
            while let Some(m) = self.got.recv().await {
                if let Some(t) = f(&m) {
                    return t;
                }
            }
            panic!("{name} closed");
        };
        tokio::time::timeout(WITHIN, wait)
            .await
            .unwrap_or_else(|_| panic!("{name} got no such message"))
    }

    /// Die: the relay's link sees its connection closed.
    fn kill(&self) {
        self.endpoint.close(0u32.into(), b"killed");
    }
}

async fn serve_node(
    endpoint: quinn::Endpoint,
    name: &'static str,
    got: mpsc::UnboundedSender<UpMsg>,
    mut say: mpsc::UnboundedReceiver<DownMsg>,
) {
    let Some(incoming) = endpoint.accept().await else {
        return;
    };
    let conn = incoming.await.expect("handshake");
    let (mut send, mut recv) = conn.accept_bi().await.expect("control stream");
    let mut buf = Vec::new();
    let hello = net::read_frame::<UpMsg>(&mut recv, &mut buf).await;
    assert!(matches!(hello, Ok(Some(UpMsg::Hello { .. }))), "{hello:?}");
    let welcome = DownMsg::Welcome {
        origin: name.to_string(),
    };
    net::write_frame(&mut send, &welcome)
        .await
        .expect("welcome");
    loop {
        tokio::select! {
            m = net::read_frame::<UpMsg>(&mut recv, &mut buf) => match m {
                Ok(Some(UpMsg::Ping { nonce })) => {
                    let pong = DownMsg::Pong { nonce, origin_time: ServerTime(1) };
                    if net::write_frame(&mut send, &pong).await.is_err() { return; }
                }
                Ok(Some(m)) => { let _ = got.send(m); }
                _ => return,
            },
            m = say.recv() => {
                let Some(m) = m else { return };
                if net::write_frame(&mut send, &m).await.is_err() { return; }
            }
        }
    }
}

/// A stand-in for the hub: subscribes room `room` from seq 5 when the test
/// says so (a unit on `subscribe`), and again on every `Rehome` of it, as
/// the hub states a room; passes every input on to the test.
async fn fake_hub(
    mut rx: mpsc::Receiver<HubIn>,
    up: mpsc::Sender<UpMsg>,
    mut subscribe: mpsc::UnboundedReceiver<RoomId>,
    seen: mpsc::UnboundedSender<String>,
) {
    let sub = |room| UpMsg::Subscribe {
        room,
        since: Some(Seq(5)),
        history: None,
    };
    loop {
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                let what = match input {
                    HubIn::Rehome { room, requeue } => {
                        let _ = up.send(sub(room)).await;
                        format!("rehome {} {requeue}", room.0)
                    }
                    HubIn::UpstreamUp => "up".into(),
                    HubIn::UpstreamDown => "down".into(),
                    _ => "other".into(),
                };
                let _ = seen.send(what);
            }
            room = subscribe.recv() => {
                let Some(room) = room else { return };
                let _ = up.send(sub(room)).await;
            }
        }
    }
}

fn gift(room: RoomId) -> (Actor, ActionMsg) {
    let actor = Actor {
        user: UserId(3),
        grant: Grant::Viewer,
    };
    let msg = ActionMsg {
        id: ActionId {
            session: SessionId(1),
            n: 1,
        },
        room,
        sent_at: ServerTime(0),
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    };
    (actor, msg)
}

#[tokio::test]
async fn rooms_follow_placement_moves_redirects_and_a_dead_node() {
    let mut n1 = Node::start("n1");
    let mut n2 = Node::start("n2");
    // One trust file for both nodes: a bundle of two certificates.
    let bundle = format!("{}{}", n1.cert_pem, n2.cert_pem);
    let roots = net::parse_certs(&bundle).expect("bundle");
    assert_eq!(roots.len(), 2, "every certificate of the bundle is trusted");
    let tuning = Tuning::backbone();
    let client_config = net::client_config(&roots, ALPN_RELAY, &tuning).expect("config");
    let endpoint =
        net::client_endpoint("127.0.0.1:0".parse().expect("addr"), &tuning).expect("endpoint");
    let trust = Arc::new(std::sync::Mutex::new(upstream::Trust {
        file: None,
        pem: None,
        client_config,
    }));
    let metrics = Metrics::default();
    let (hub_tx, hub_rx) = mpsc::channel(64);
    let (up_tx, up_rx) = mpsc::channel(64);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let clock = Arc::new(std::sync::atomic::AtomicUsize::new(upstream::NO_CLOCK));
    let estimate = OriginEstimate::new();
    let link = |index, origin, router| {
        Arc::new(Link {
            name: "relay-t".into(),
            index,
            endpoint: endpoint.clone(),
            trust: trust.clone(),
            tuning: tuning.clone(),
            origin,
            server_name: "localhost".into(),
            cluster: TokenKey::new(&[7; 32]),
            origin_estimate: estimate.clone(),
            clock: clock.clone(),
            hub: hub_tx.clone(),
            router: Some(router),
            metrics: metrics.clone(),
        })
    };
    let mut tasks = JoinSet::new();
    let origins = [n1.addr, n2.addr];
    let (hub, m) = (hub_tx.clone(), metrics.clone());
    spawn(&mut tasks, &origins, link, up_rx, hub, m, &shutdown);
    let (subscribe, subscribe_rx) = mpsc::unbounded_channel();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    tasks.spawn(fake_hub(hub_rx, up_tx, subscribe_rx, seen_tx));

    // Both links up (bounded wait on what the operator sees).
    for _ in 0..2_000 {
        if metrics.origin_links_up.get() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(metrics.origin_links_up.get(), 2);
    assert_eq!(metrics.upstream_connected.get(), 1);
    assert_eq!(
        seen.recv().await.as_deref(),
        Some("up"),
        "the hub's link is up once"
    );

    // Room X goes to the placement's node.
    let x = (1..1000)
        .map(RoomId)
        .find(|r| protocol::placement::owner(*r, ["n1", "n2"]) == Some("n1"))
        .expect("a room on n1");
    subscribe.send(x).expect("hub");
    let is_sub = |m: &UpMsg| match m {
        UpMsg::Subscribe { room, since, .. } => Some((*room, *since)),
        _ => None,
    };
    assert_eq!(n1.until(is_sub).await, (x, Some(Seq(5))));

    // n1 does not serve it: n2 does. Resubscribed there from the same seq.
    n1.say
        .send(DownMsg::Moved {
            room: x,
            owner: Some("n2".into()),
        })
        .expect("n1");
    assert_eq!(n2.until(is_sub).await, (x, Some(Seq(5))));
    assert_eq!(seen.recv().await, Some(format!("rehome {} false", x.0)));

    // An action n2 hands back for n1 goes to n1, once.
    let (actor, msg) = gift(x);
    n2.say
        .send(DownMsg::Redirect {
            actor,
            msg: msg.clone(),
            owner: Some("n1".into()),
        })
        .expect("n2");
    let got = n1
        .until(|m| match m {
            UpMsg::Action { msg, .. } => Some(msg.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, msg);
    assert_eq!(metrics.redirects.get(), 1);

    // n2 dies: its room is re-homed on n1, from the same seq, with its
    // waiting actions sent again.
    n2.kill();
    assert_eq!(n1.until(is_sub).await, (x, Some(Seq(5))));
    assert_eq!(
        seen.recv().await,
        Some(format!("rehome {} true", x.0)),
        "re-homed with its actions"
    );
    assert_eq!(metrics.origin_links_up.get(), 1);
    assert_eq!(
        metrics.upstream_connected.get(),
        1,
        "the hub's link stays up"
    );
    let _ = shutdown_tx.send(true);
    tasks.shutdown().await;
}

/// A client connection and what must live as long as it.
type Client = (quinn::Endpoint, quinn::SendStream, quinn::RecvStream);

/// A client of the relay: hello with a token for user 7, then `Join`.
async fn join(relay: &crate::Relay, room: RoomId) -> Client {
    use net::token::{unix_now, Claims};
    use protocol::message::{ClientMsg, Hello, ServerMsg, ALPN_CLIENT, PROTOCOL_VERSION};
    let roots = net::parse_certs(&relay.cert_pem()).expect("relay cert");
    let tuning = Tuning::client_facing();
    let config = net::client_config(&roots, ALPN_CLIENT, &tuning).expect("config");
    let endpoint =
        net::client_endpoint("127.0.0.1:0".parse().expect("addr"), &tuning).expect("endpoint");
    let conn = (endpoint.connect_with(config, relay.addr(), "localhost"))
        .expect("connect")
        .await
        .expect("handshake");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let claims = Claims::client(UserId(7), Vec::new(), unix_now() + 3600);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        token: TokenKey::new(&[b't'; 32]).mint(&claims),
        session: SessionId(70),
        datagrams: false,
    };
    net::write_frame(&mut send, &ClientMsg::Hello(hello))
        .await
        .expect("hello");
    let mut buf = Vec::new();
    let welcome = tokio::time::timeout(WITHIN, net::read_frame::<ServerMsg>(&mut recv, &mut buf))
        .await
        .expect("in time");
    assert!(
        matches!(welcome, Ok(Some(ServerMsg::Welcome(_)))),
        "{welcome:?}"
    );
    let join = ClientMsg::Join { room, since: None };
    net::write_frame(&mut send, &join).await.expect("join");
    (endpoint, send, recv)
}

#[tokio::test]
async fn a_relay_in_cluster_mode_resubscribes_a_room_from_its_cached_seq() {
    let mut n1 = Node::start("n1");
    let mut n2 = Node::start("n2");
    let bundle = format!("{}{}", n1.cert_pem, n2.cert_pem);
    let config = crate::Config {
        name: "relay-c".into(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        origins: vec![n1.addr, n2.addr],
        origin_cert: None,
        cluster_secret: Some("c".repeat(32)),
        cluster_secret_file: None,
        token_secret: Some("t".repeat(32)),
        token_secret_file: None,
        cert_out: None,
        identity_file: None,
        ..crate::Config::default()
    };
    let identity = Identity::self_signed(&["localhost"]).expect("identity");
    let roots = net::parse_certs(&bundle).expect("bundle");
    let relay = crate::Relay::start_with(config, identity, roots)
        .await
        .expect("relay");
    // The hub subscribes (cold: no since) at whichever node the placement
    // picks among the links up by then.
    let x = RoomId(1);
    let _client = join(&relay, x).await;
    let is_sub = |m: &UpMsg| match m {
        UpMsg::Subscribe { room, since, .. } => Some((*room, *since)),
        _ => None,
    };
    let (first, mut other) = tokio::select! {
        s = n1.until(is_sub) => { assert_eq!(s, (x, None)); (n1, n2) }
        s = n2.until(is_sub) => { assert_eq!(s, (x, None)); (n2, n1) }
    };
    // The first node serves it at seq 5, then hands it to the other.
    let mut state = protocol::RoomState::new(x);
    state.seq = Seq(5);
    let snapshot = DownMsg::Snapshot {
        room: x,
        state: Box::new(state),
        recent: Vec::new(),
    };
    first.say.send(snapshot).expect("first");
    first
        .say
        .send(DownMsg::Moved {
            room: x,
            owner: Some(other.name.into()),
        })
        .expect("first");
    // The hub's own seq for the room, and the client announced again.
    assert_eq!(other.until(is_sub).await, (x, Some(Seq(5))));
    let present = other
        .until(|m| match m {
            UpMsg::Presence { room, user, online } => Some((*room, *user, *online)),
            _ => None,
        })
        .await;
    assert_eq!(present, (x, UserId(7), true));
    // The other node dies: back to the first, from seq 5 again.
    other.kill();
    let mut first = first;
    assert_eq!(first.until(is_sub).await, (x, Some(Seq(5))));
    relay.shutdown().await;
}
