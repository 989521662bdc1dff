//! The abuses against a real in-process relay, and the junk packets' shape.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::transport::junk_packet;
use super::*;
use crate::attack::honest::ROOMS;
use crate::attack::hostile::{Attacker, End, Tally};
use crate::attack::secrets::Secrets;
use crate::bench::sys::TempDir;
use net::Identity;
use protocol::message::ErrorCode;
use tokio::sync::watch;

/// Run `attack` with attackers `indices` against a real in-process
/// relay for `secs`, and return each attacker's tally.
async fn against_a_relay(attack: Attack, indices: &[usize], secs: f64) -> Vec<Tally> {
    let secrets = Secrets::generate().expect("secrets");
    let identity = Identity::self_signed(&["localhost"]).expect("certificate");
    let dir = TempDir::new(None).expect("temp dir");
    let origin = origin::Origin::start_with(
        origin::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: dir.path().join("origin"),
            cluster_secret: Some(secrets.cluster.clone()),
            ..origin::Config::default()
        },
        identity.clone(),
    )
    .await
    .expect("origin");
    let relay = relay::Relay::start_with(
        relay::Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            origin: origin.addr(),
            origin_cert: None,
            cert_out: None,
            cluster_secret: Some(secrets.cluster.clone()),
            token_secret: Some(secrets.token.clone()),
            ..relay::Config::default()
        },
        identity.clone(),
        identity.certs.clone(),
    )
    .await
    .expect("relay");
    let target = Arc::new(Target {
        relay: relay.addr(),
        roots: identity.certs.clone(),
        secrets,
        busy: ROOMS,
        users: 2,
        paced_messages: 10.0,
        paced_actions: 5.0,
        flood: 1000.0,
    });
    let prepared = Arc::new(
        prepare(attack, &target, indices.len())
            .await
            .expect("prepared"),
    );
    let (stop, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for &i in indices {
        let mut att = Attacker::new(i, &target, 7, started, stop_rx.clone());
        let (target, prepared) = (target.clone(), prepared.clone());
        set.spawn(async move {
            run(attack, &mut att, target, prepared)
                .await
                .expect("attack runs");
            (i, att.tally)
        });
    }
    // The attack's duration: attackers go on until told to stop.
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let _ = stop.send(true);
    let mut out: Vec<(usize, Tally)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("attacker task"));
    }
    relay.shutdown().await;
    let _ = origin.shutdown().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

fn first_stop(t: &Tally) -> Option<End> {
    t.first_stops.first().map(|(e, _)| e.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_cut_off_with_its_code_and_the_attacker_comes_back() {
    let tallies = against_a_relay(Attack::Malformed, &[0, 1, 2], 1.5).await;
    for (form, t) in tallies.iter().enumerate() {
        assert_eq!(
            first_stop(t),
            Some(End::code(ErrorCode::Malformed)),
            "form {form}: {t:?}"
        );
        assert!(t.connections >= 2, "form {form} dialed again: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_a_code() {
    let tallies = against_a_relay(Attack::Tokens, &[0, 1, 2, 3, 4], 1.5).await;
    let refusals = [
        ErrorCode::BadToken,
        ErrorCode::TokenExpired,
        ErrorCode::TooLarge,
    ]
    .map(End::code);
    for (form, t) in tallies.iter().enumerate() {
        let end = first_stop(t);
        assert!(
            end.as_ref().is_some_and(|e| refusals.contains(e)),
            "form {form}: {t:?}"
        );
        assert_eq!(
            t.ends.get(&End::Open),
            None,
            "form {form} was let in: {t:?}"
        );
    }
    assert_eq!(
        first_stop(&tallies[2]),
        Some(End::code(ErrorCode::TokenExpired))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_gib_frame_header_is_cut_off_as_too_large() {
    // Attacker 0 plays the frames attack's first form.
    let tallies = against_a_relay(Attack::Frames, &[0], 1.0).await;
    assert_eq!(
        first_stop(&tallies[0]),
        Some(End::code(ErrorCode::TooLarge)),
        "{:?}",
        tallies[0]
    );
}

#[test]
fn junk_initials_look_like_quic_long_headers() {
    let mut rng = crate::impair::rng::Rng::new(3);
    let mut initials = 0;
    for _ in 0..200 {
        let p = junk_packet(&mut rng);
        assert!(!p.is_empty() && p.len() <= 1400);
        if p.len() == 1200 && p[0] == 0xc3 {
            initials += 1;
            assert_eq!(&p[1..5], &[0, 0, 0, 1]);
        }
    }
    assert!(initials > 20, "{initials}");
}
