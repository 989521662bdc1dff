//! Sessions that outlive their tokens: with a token provider, the SDK
//! renews before expiry and moves between relays with the newest token; a
//! relay that refuses an expired token makes it fetch a fresh one and resume
//! the same session, instead of failing it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_sdk::{Client, ClientEvent};
use common::*;
use net::token::{unix_now, Claims, Purpose, TokenKey};
use protocol::{GiftId, RoomId, UserId};
use testbed::topology::Topology;

const USER: u64 = 9;

fn token(secret: &str, expires: u64) -> Vec<u8> {
    TokenKey::new(secret.as_bytes()).mint(&Claims {
        purpose: Purpose::Client,
        user: UserId(USER),
        rooms: None,
        host_of: vec![],
        operator: false,
        expires,
    })
}

/// A client whose first token expires in three whole seconds (2–3 s of
/// real life: renewed at half of it, well after [`client_sdk::token::RENEW_MIN`]
/// and well before expiry), with `provider`.
async fn client<F, Fut>(t: &Topology, provider: F) -> Client
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = client_sdk::token::TokenResult> + Send + 'static,
{
    Client::builder()
        .token(token(t.token_secret(), unix_now() + 3))
        .token_provider(provider)
        .trust_pem(&t.identity.cert_pem())
        .expect("pem")
        .relays([t.relay_addr(0), t.relay_addr(1)])
        .probe(false)
        .connect()
        .await
        .expect("connects")
}

/// Wait out the first token (real time: expiry is wall-clock seconds), then
/// take relay 0 away: the session must go on on relay 1.
async fn expire_and_fail_over(t: &mut Topology) {
    tokio::time::sleep(Duration::from_secs(4)).await;
    t.relays[0].take().expect("relay 0").abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_renews_ahead_and_moves_with_the_newest_token() {
    let mut t = topology("renew-ahead", 2, |_| {}).await;
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let secret = t.token_secret().to_string();
    let c = client(&t, move || {
        c2.fetch_add(1, Ordering::Relaxed);
        let fresh = token(&secret, unix_now() + 3600);
        async move { Ok(fresh) }
    })
    .await;
    let session = c.session();
    let mut events = c.events();
    let room = c.join(RoomId(1)).await.expect("joins");
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    expire_and_fail_over(&mut t).await;
    // Renewed 1–1.5 s in (half of its life), on the relay.
    assert!(c.stats().renewals >= 1, "{:?}", c.stats());
    let acked = tokio::time::timeout(Duration::from_secs(10), room.gift(GiftId(1), 1))
        .await
        .expect("resolves")
        .expect("outcome after the move");
    assert!(acked.outcome.is_applied());
    assert_eq!(acked.id.session, session, "the same session");
    // Relay 1 took the renewed token at once: no refusal, no second fetch.
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, ClientEvent::Failed { .. }), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_and_the_session_resumes() {
    let mut t = topology("renew-late", 2, |_| {}).await;
    // The backend is down until `open`: renewals fail, and the token expires.
    let open = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let (o2, c2) = (open.clone(), calls.clone());
    let secret = t.token_secret().to_string();
    let c = client(&t, move || {
        c2.fetch_add(1, Ordering::Relaxed);
        let ok = o2.load(Ordering::Relaxed);
        let fresh = token(&secret, unix_now() + 3600);
        async move {
            match ok {
                true => Ok(fresh),
                false => Err("backend down".into()),
            }
        }
    })
    .await;
    let session = c.session();
    let mut events = c.events();
    let room = c.join(RoomId(1)).await.expect("joins");
    assert!(room
        .gift(GiftId(1), 1)
        .await
        .expect("outcome")
        .outcome
        .is_applied());
    expire_and_fail_over(&mut t).await;
    assert_eq!(c.stats().renewals, 0, "no renewal could happen");
    // Relay 1 refuses the expired token; the backend is back: the SDK fetches
    // a fresh token and resumes (before, the session failed here for good).
    open.store(true, Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(10), room.gift(GiftId(1), 1))
        .await
        .expect("resolves")
        .expect("outcome after a fresh token");
    assert!(acked.outcome.is_applied());
    assert_eq!(acked.id.session, session, "the same session");
    assert!(calls.load(Ordering::Relaxed) >= 2);
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, ClientEvent::Failed { .. }), "{e:?}");
    }
    converge(&t, &[&room], Duration::from_secs(5)).await;
    assert_eq!(origin_state(&t, RoomId(1)).await.gift_count, 2);
}
