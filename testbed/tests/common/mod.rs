//! Shared by the integration tests: logging, and a topology with test rules.

#![allow(dead_code)]

use std::time::Duration;

use client_sdk::Room;
use net::{self, Tuning};
use protocol::message::{ClientMsg, ErrorCode, Hello, PROTOCOL_VERSION};
use protocol::RoomState;
use protocol::SessionId;
use testbed::topology::{fast_rules, Spec, Topology};

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

/// A topology tweak: the relay's production rate limits (the test topology
/// raises them, since simulated clients act in bursts).
pub fn production_rates(s: &mut Spec) {
    let d = relay::Limits::default();
    s.relay.limits.actions_per_sec = d.actions_per_sec;
    s.relay.limits.action_burst = d.action_burst;
    s.relay.limits.messages_per_sec = d.messages_per_sec;
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

/// The host of `ra`'s room invites `rb`'s room to a battle of `secs`; `rb`'s
/// host sees the invitation arrive and accepts; returns once `ra` sees the
/// battle running.
pub async fn start_battle(ra: &Room, rb: &Room, secs: u32) -> protocol::BattleId {
    let invite = ra.pk_invite(rb.id(), secs).await.expect("invite acked");
    assert!(invite.outcome.is_applied(), "{invite:?}");
    let pending = rb
        .wait_for(Duration::from_secs(5), |s| s.pk_invite.is_some())
        .await
        .expect("the invited host sees the invitation");
    let battle = pending.pk_invite.expect("invite").battle;
    let accept = rb.pk_accept(battle).await.expect("accept acked");
    assert!(accept.outcome.is_applied(), "{accept:?}");
    ra.wait_for(Duration::from_secs(5), |s| {
        (s.battle.as_ref()).is_some_and(|b| b.phase == protocol::room::BattlePhase::Running)
    })
    .await
    .expect("the inviter sees the battle running");
    battle
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

/// A raw connection to relay 0 with a given ALPN.
pub async fn raw(
    t: &testbed::topology::Topology,
    alpn: &[u8],
) -> Result<quinn::Connection, String> {
    raw_with(t, alpn, &Tuning::default()).await
}

/// A raw connection to relay 0 with a given ALPN and transport settings.
pub async fn raw_with(
    t: &testbed::topology::Topology,
    alpn: &[u8],
    tuning: &Tuning,
) -> Result<quinn::Connection, String> {
    let ep = net::client_endpoint("127.0.0.1:0".parse().expect("addr"), tuning)
        .map_err(|e| e.to_string())?;
    let cfg = net::client_config(&t.identity.certs, alpn, tuning).map_err(|e| e.to_string())?;
    let conn = ep
        .connect_with(cfg, t.relay_addr(0), "localhost")
        .map_err(|e| e.to_string())?;
    conn.await.map_err(|e| e.to_string())
}

/// Send hello with `token`: the session's control stream if the relay
/// welcomed us (keep it: dropping it ends the session), else the close code.
pub async fn hello_with(
    conn: &quinn::Connection,
    token: Vec<u8>,
) -> Result<(quinn::SendStream, quinn::RecvStream), Option<ErrorCode>> {
    hello_as(conn, token, 99).await
}

/// Hello with `token` and a session of our choice, keeping the control
/// stream if welcomed; else the close code.
pub async fn hello_as(
    conn: &quinn::Connection,
    token: Vec<u8>,
    session: u64,
) -> Result<(quinn::SendStream, quinn::RecvStream), Option<ErrorCode>> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| None)?;
    let hello = ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        token,
        session: SessionId(session),
        datagrams: true,
    });
    net::write_frame(&mut send, &hello)
        .await
        .map_err(|_| None)?;
    let mut buf = Vec::new();
    match net::read_frame::<protocol::message::ServerMsg>(&mut recv, &mut buf).await {
        Ok(Some(_)) => Ok((send, recv)),
        _ => Err(closed_code(conn).await),
    }
}

pub async fn closed_code(conn: &quinn::Connection) -> Option<ErrorCode> {
    let e = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .ok()?;
    net::close_code(&e)
}

/// `GET path` (no `Accept`: the classic text format for `/metrics`): the
/// status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    testbed::scrape::http_get(addr, path)
        .await
        .expect("an HTTP answer")
}

/// The value of a series (see [`testbed::scrape::sample`]); panics, with the
/// scrape, when there is none.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    testbed::scrape::sample(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
}

/// `promtool check metrics` on a scrape. Without promtool on PATH the check
/// is skipped with a note, unless `RINGSIDE_REQUIRE_PROMTOOL=1` (CI sets it,
/// after installing the `prometheus` package).
pub fn promtool_check_metrics(scrape: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("RINGSIDE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "promtool is required (apt-get install prometheus): {e}"
            );
            eprintln!("NOTE: promtool not found ({e}); `promtool check metrics` skipped");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
