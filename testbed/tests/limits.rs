//! Limits that must not turn into wrong answers or hangs: the relay's action
//! rate limit never refuses a gift the origin counted, and a session whose
//! token the relays refuse fails its waiting actions instead of hanging.

mod common;

use std::time::Duration;

use client_sdk::{ClientEvent, Error, Outcome};
use common::*;
use net::token::{unix_now, Claims, Purpose};
use protocol::message::ErrorCode;
use protocol::{GiftId, RoomId, UserId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_never_refuses_a_counted_gift() {
    // Production limits: 50 actions a second per client.
    let t = topology("rate-limit", 1, production_rates).await;
    let c = t.client(9, &[], &[0]).await.expect("connects");
    let room = c.join(RoomId(1)).await.expect("joins");
    for _ in 0..5 {
        assert!(room
            .gift(GiftId(1), 1)
            .await
            .expect("outcome")
            .outcome
            .is_applied());
    }
    // Cut off from the origin, the relay holds actions while the client taps
    // 40 gifts a second; copies and stream fallbacks pile up meanwhile.
    let relay = t.relays[0].as_ref().expect("relay");
    relay.partition_upstream(true);
    let mut sends = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(25));
    for _ in 0..120 {
        pace.tick().await;
        let room = room.clone();
        sends.push(tokio::spawn(async move { room.gift(GiftId(1), 1).await }));
    }
    relay.partition_upstream(false);
    let mut applied = 5;
    for s in sends {
        match s.await.expect("task").expect("outcome").outcome {
            Outcome::Applied { .. } => applied += 1,
            other => panic!("a gift resolved as {other:?}"),
        }
    }
    converge(&t, &[&room], Duration::from_secs(10)).await;
    assert_eq!(origin_state(&t, RoomId(1)).await.gift_count, applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_the_session_instead_of_hanging() {
    let mut t = topology("expired", 2, |_| {}).await;
    // A token that expires in two seconds.
    let token = t.mint(&Claims {
        purpose: Purpose::Client,
        user: UserId(9),
        rooms: None,
        host_of: vec![],
        operator: false,
        expires: unix_now() + 2,
    });
    let c = client_sdk::Client::builder()
        .token(token)
        .trust_pem(&t.identity.cert_pem())
        .expect("pem")
        .relays([t.relay_addr(0), t.relay_addr(1)])
        .probe(false)
        .connect()
        .await
        .expect("connects");
    let mut events = c.events();
    let room = c.join(RoomId(1)).await.expect("joins");
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    // Wait out the token, then take its relay away: the other relay refuses it.
    let expiry = tokio::time::Instant::now() + Duration::from_secs(3);
    tokio::time::sleep_until(expiry).await;
    t.relays[0].take().expect("relay 0").abort().await;
    let result = tokio::time::timeout(Duration::from_secs(10), room.gift(GiftId(1), 1))
        .await
        .expect("the action resolves instead of hanging");
    assert!(
        matches!(
            &result,
            Err(Error::Unresolved { cause, .. }) if matches!(**cause, Error::Refused {
                code: ErrorCode::TokenExpired,
                ..
            })
        ),
        "{result:?}"
    );
    let failed = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let Ok(ClientEvent::Failed { .. }) = events.recv().await {
                break;
            }
        }
    })
    .await;
    assert!(failed.is_ok(), "the app is told once");
}
