//! Bad input closes that one connection with a clear code; nobody else
//! notices. Covered: an unknown ALPN, a forged and an expired token, a
//! malformed frame, an oversized frame, and a flood of datagrams.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use net::token::{unix_now, Claims, Purpose, TokenKey};
use protocol::message::{ClientMsg, ErrorCode};
use protocol::{GiftId, RoomId, UserId};

const A: RoomId = RoomId(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_closed_and_good_ones_are_untouched() {
    // Production limits: 400 messages a second per client.
    let t = topology("bad-input", 1, production_rates).await;
    // A good client, busy the whole time.
    let good = t.client(1, &[], &[0]).await.expect("client connects");
    let room = good.join(A).await.expect("join");
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("outcome")
        .outcome
        .is_applied());

    // Unknown ALPN: the handshake itself fails.
    assert!(raw(&t, b"not-ringside/1").await.is_err());

    // A forged token (signed with another secret) and an expired one.
    let claims = Claims {
        purpose: Purpose::Client,
        user: UserId(5),
        rooms: None,
        host_of: vec![],
        operator: false,
        expires: unix_now() + 60,
    };
    let forged = TokenKey::new(b"someone else").mint(&claims);
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    assert_eq!(
        hello_with(&conn, forged).await.err(),
        Some(Some(ErrorCode::BadToken))
    );
    let expired = t.mint(&Claims {
        expires: unix_now() - 1,
        ..claims.clone()
    });
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    assert_eq!(
        hello_with(&conn, expired).await.err(),
        Some(Some(ErrorCode::TokenExpired))
    );

    // A malformed frame: a length that fits, then garbage.
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Malformed));

    // An oversized frame: the header alone is refused.
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&u32::MAX.to_be_bytes())
        .await
        .expect("write");
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::TooLarge));

    // A flood of datagrams after a proper hello.
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let _session = hello_with(&conn, t.token(6, &[])).await.expect("welcome");
    let ping = Bytes::from(
        protocol::codec::encode(&ClientMsg::Ping { nonce: 1 })
            .map(|p| {
                let mut v = vec![p.len() as u8];
                v.extend(p);
                v
            })
            .expect("encode"),
    );
    let mut sent = 0;
    let code = loop {
        for _ in 0..200 {
            if conn.send_datagram(ping.clone()).is_err() {
                break;
            }
            sent += 1;
        }
        if let Ok(e) = tokio::time::timeout(Duration::from_millis(5), conn.closed()).await {
            break net::close_code(&e);
        }
        assert!(sent < 1_000_000, "the relay never cut the flood off");
    };
    assert_eq!(code, Some(ErrorCode::Flood));

    // A malformed datagram closes that client too.
    let conn = raw(&t, protocol::message::ALPN_CLIENT)
        .await
        .expect("handshake");
    let _session = hello_with(&conn, t.token(7, &[])).await.expect("welcome");
    conn.send_datagram(Bytes::from_static(&[3, 0xff, 0xff, 0xff]))
        .expect("send");
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Malformed));

    // Meanwhile the good client never noticed.
    for _ in 0..10 {
        assert!(room
            .gift(GiftId(1), 1)
            .await
            .expect("outcome")
            .outcome
            .is_applied());
    }
    assert_eq!(origin_state(&t, A).await.gift_value, 11);
    // The ack can overtake the event it acknowledges; the state follows.
    converge(&t, &[&room], Duration::from_secs(5)).await;
}
