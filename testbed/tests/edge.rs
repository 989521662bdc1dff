//! The edge holds against a peer with a valid token: each test is one of
//! the abuses found in review (issue 8), tried from outside with a raw QUIC
//! client, and the relay's answer to it.

mod common;

use std::time::Duration;

use common::*;
use net::token::{unix_now, Claims, Purpose};
use net::{self, Tuning};
use protocol::message::{ActionMsg, ClientMsg, ErrorCode, ServerMsg};
use protocol::{Action, ActionId, GiftId, RoomId, ServerTime, SessionId, UserId};

const A: RoomId = RoomId(5);

fn gift(session: u64, n: u64, room: RoomId) -> ClientMsg {
    ClientMsg::Action(ActionMsg {
        id: ActionId {
            session: SessionId(session),
            n,
        },
        room,
        sent_at: ServerTime(0),
        action: Action::Gift {
            gift: GiftId(1),
            count: 1,
        },
    })
}

/// Room `A`, opened by its host, joined by a viewer who gifted once.
async fn open_room(t: &testbed::topology::Topology) -> (client_sdk::Client, client_sdk::Room) {
    let host = t.client(1, &[A], &[0]).await.expect("host");
    let _host_room = host.join(A).await.expect("host joins");
    let viewer = t.client(2, &[], &[0]).await.expect("viewer");
    let room = viewer.join(A).await.expect("join");
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    (host, room)
}

/// How a connection ended, waiting at most `within`.
async fn ended(conn: &quinn::Connection, within: Duration) -> Option<quinn::ConnectionError> {
    tokio::time::timeout(within, conn.closed()).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_grants_only_the_streams_it_reads() {
    // Finding 1: 1,024 uni and 16 bidi streams with 1.25 MB windows each,
    // never read, let one connection make the relay hold over a gigabyte.
    let t = topology("edge-streams", 1, |_| {}).await;
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let _ctrl = hello_as(&conn, t.token(40, &[]), 1).await.expect("welcome");
    // The relay grants no credit for streams it does not read: a
    // conforming peer cannot open one (quinn waits for credit), and one that
    // opens it anyway is closed by quinn with STREAM_LIMIT_ERROR.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), conn.open_uni())
            .await
            .is_err(),
        "the relay granted a unidirectional stream"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(1), conn.open_bi())
            .await
            .is_err(),
        "the relay granted a second bidirectional stream"
    );
    assert!(conn.close_reason().is_none(), "asking is not an offence");
    t.shutdown().await;
}

#[test]
fn the_windows_bound_what_a_client_can_make_the_relay_hold() {
    let t = Tuning::client_facing();
    assert_eq!((t.peer_bidi_streams, t.peer_uni_streams), (1, 0));
    // Stream data in flight to us, datagrams not yet read, our unacked sends.
    let held = t.conn_window as usize + t.datagram_recv_buffer + t.send_window as usize;
    assert!(held <= 512 * 1024, "{held} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_says_nothing_is_closed_within_two_seconds() {
    // Finding 7: the hello deadline was 5 s.
    let t = topology("edge-hello", 1, |_| {}).await;
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let started = std::time::Instant::now();
    let why = ended(&conn, Duration::from_secs(4))
        .await
        .expect("closed for saying nothing");
    assert_eq!(net::close_code(&why), Some(ErrorCode::Timeout));
    assert!(started.elapsed() < Duration::from_millis(2_500));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped() {
    let t = topology("edge-per-addr", 1, |s| s.relay.limits.max_per_addr = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            raw(&t, protocol::message::ALPN_CLIENT)
                .await
                .expect("within the cap"),
        );
    }
    let refused = raw(&t, protocol::message::ALPN_CLIENT).await;
    assert!(refused.is_err(), "the fourth connection was accepted");
    drop(held);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_has_a_limited_number_of_sessions() {
    // Finding 6/7: sessions were unlimited per user.
    let t = topology("edge-sessions", 1, |_| {}).await;
    let cap = relay::Limits::default().sessions_per_user;
    let mut held = Vec::new();
    for s in 0..cap as u64 {
        let conn = raw(&t, protocol::message::ALPN_CLIENT)
            .await
            .expect("handshake");
        let ctrl = hello_as(&conn, t.token(42, &[]), 100 + s)
            .await
            .expect("within the cap");
        held.push((conn, ctrl));
    }
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    assert_eq!(
        hello_as(&conn, t.token(42, &[]), 999).await.err(),
        Some(Some(ErrorCode::Limit))
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_rate_is_per_user_and_every_action_gets_an_answer() {
    // Findings 7 and 14: the rate was per connection, and actions over it
    // vanished without an answer.
    let t = topology("edge-rate", 1, |s| {
        s.relay.limits.actions_per_sec = 50;
        s.relay.limits.action_burst = 100;
    })
    .await;
    let (_host, _room) = open_room(&t).await;
    let per_conn = 100u64;
    let mut conns = Vec::new();
    for s in 0..2u64 {
        let conn = raw(&t, protocol::message::ALPN_CLIENT)
            .await
            .expect("handshake");
        let (mut send, recv) = hello_as(&conn, t.token(43, &[]), 200 + s)
            .await
            .expect("welcome");
        // Join the room first: a viewer's actions in a room its connection
        // has not joined have a small budget of their own.
        let join = ClientMsg::Join {
            room: A,
            since: None,
        };
        net::write_frame(&mut send, &join).await.expect("join");
        for n in 1..=per_conn {
            net::write_frame(&mut send, &gift(200 + s, n, A))
                .await
                .expect("write");
        }
        conns.push((conn, send, recv));
    }
    let (mut acked, mut throttled) = (0u64, 0u64);
    for (_conn, _send, recv) in &mut conns {
        let mut answered = std::collections::BTreeSet::new();
        let mut buf = Vec::new();
        while (answered.len() as u64) < per_conn {
            let msg = tokio::time::timeout(
                Duration::from_secs(10),
                net::read_frame::<ServerMsg>(recv, &mut buf),
            )
            .await
            .expect("every action is answered")
            .expect("frame")
            .expect("open");
            match msg {
                ServerMsg::Ack { id, .. } => {
                    assert!(answered.insert(id.n), "answered twice: {id:?}");
                    acked += 1;
                }
                ServerMsg::Throttled { id, retry_after_ms } => {
                    assert!(retry_after_ms > 0);
                    assert!(answered.insert(id.n), "answered twice: {id:?}");
                    throttled += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(acked + throttled, 2 * per_conn);
    // One user, two connections: one burst of 100 between them (plus what
    // refills while they send), not 100 each.
    assert!(throttled >= 60, "acked {acked}, throttled {throttled}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_no_snapshot_is_cut_off() {
    // Finding 4: a snapshot task per join waited for ever on a client that
    // grants no stream credit.
    let t = topology("edge-snapshot", 1, |s| {
        s.relay.limits.snapshot_timeout_ms = 500;
    })
    .await;
    let (_host, room) = open_room(&t).await;
    let stingy = Tuning {
        peer_uni_streams: 0,
        ..Tuning::default()
    };
    let conn = raw_with(&t, protocol::message::ALPN_CLIENT, &stingy)
        .await
        .expect("handshake");
    let (mut send, _recv) = hello_as(&conn, t.token(44, &[]), 300)
        .await
        .expect("welcome");
    let join = ClientMsg::Join {
        room: A,
        since: None,
    };
    net::write_frame(&mut send, &join).await.expect("join");
    let why = ended(&conn, Duration::from_secs(5))
        .await
        .expect("cut off for not taking its snapshot");
    assert_eq!(net::close_code(&why), Some(ErrorCode::Flood));
    // The host did not notice.
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("still served")
        .outcome
        .is_applied());
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_when_its_token_expires_unless_renewed() {
    // Finding 11: expiry was checked at connect only.
    let t = topology("edge-expiry", 1, |_| {}).await;
    let short = |user: u64, secs: u64| {
        t.mint(&Claims {
            purpose: Purpose::Client,
            user: UserId(user),
            rooms: None,
            host_of: vec![],
            operator: false,
            expires: unix_now() + secs,
        })
    };
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let _ctrl = hello_as(&conn, short(45, 2), 400).await.expect("welcome");
    let why = ended(&conn, Duration::from_secs(5))
        .await
        .expect("closed at expiry");
    assert_eq!(net::close_code(&why), Some(ErrorCode::TokenExpired));

    // Renewed in time, the same session lives on.
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let (mut send, _recv) = hello_as(&conn, short(46, 2), 401).await.expect("welcome");
    let renew = ClientMsg::Renew {
        token: short(46, 600),
    };
    net::write_frame(&mut send, &renew).await.expect("renew");
    assert!(
        ended(&conn, Duration::from_secs(4)).await.is_none(),
        "closed despite a renewed token"
    );
    // Renewing as someone else is refused.
    let renew = ClientMsg::Renew {
        token: short(47, 600),
    };
    net::write_frame(&mut send, &renew).await.expect("renew");
    let why = ended(&conn, Duration::from_secs(3)).await.expect("closed");
    assert_eq!(net::close_code(&why), Some(ErrorCode::BadToken));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_abusing_is_refused_before_its_handshake() {
    let t = topology("edge-penalty", 1, |s| {
        s.relay.limits.strikes = 3;
        s.relay.limits.hello_timeout_ms = 300;
    })
    .await;
    // Three connections that never say hello: three strikes.
    for _ in 0..3 {
        let conn = raw(&t, protocol::message::ALPN_CLIENT)
            .await
            .expect("handshake");
        let why = ended(&conn, Duration::from_secs(3)).await.expect("closed");
        assert_eq!(net::close_code(&why), Some(ErrorCode::Timeout));
    }
    assert!(
        raw(&t, protocol::message::ALPN_CLIENT).await.is_err(),
        "the fourth handshake was accepted"
    );
    t.shutdown().await;
}
