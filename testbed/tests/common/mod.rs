//! Shared by the integration tests: logging, and a topology with test rules.

#![allow(dead_code)]

use std::time::Duration;

use client_sdk::Room;
use protocol::RoomState;
use testbed::topology::{fast_rules, Spec, Topology};

#[allow(unused_imports)]
pub use testbed::topology::TOKEN_SECRET;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A topology with `relays` relays and fast rules, tweaked by `f`.
pub async fn topology(name: &str, relays: usize, f: impl FnOnce(&mut Spec)) -> Topology {
    init_tracing();
    let mut spec = Spec {
        name: name.into(),
        regions: (0..relays).map(|i| format!("r{i}")).collect(),
        rules: fast_rules(),
        ..Spec::default()
    };
    f(&mut spec);
    Topology::start(spec).await.expect("topology starts")
}

/// The origin's state of a room: a room it does not know is an unopened one.
pub async fn origin_state(t: &Topology, room: protocol::RoomId) -> RoomState {
    (t.origin_state(room).await).unwrap_or_else(|| RoomState::new(room))
}

/// Wait until every room equals the origin's state, or panic.
pub async fn converge(t: &Topology, rooms: &[&Room], within: Duration) {
    if let Err(e) = t.converge(rooms, within).await {
        panic!("{e:#}");
    }
}

/// Run futures concurrently on this task (no extra dependency).
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
