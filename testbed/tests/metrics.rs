//! What an operator sees: a battle with gifts, played through an origin and
//! a relay, moves every interaction KPI in both `/metrics` scrapes (read over
//! HTTP like Prometheus would), and both scrapes pass `promtool check
//! metrics`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http_get, promtool_check_metrics, sample, start_battle, topology};
use protocol::message::{ClientMsg, ErrorCode, ALPN_CLIENT};
use protocol::{GiftId, RoomId};

/// Scrape `addr` until `done` holds for the text (at most `within`).
async fn scrape_until(addr: SocketAddr, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, text) = http_get(addr, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        if done(&text) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battle_moves_every_kpi_and_the_scrapes_pass_promtool() {
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let t = topology("metrics", 1, |s| {
        s.relay.metrics_listen = Some(any_port);
        s.origin.metrics_listen = Some(any_port);
        s.origin.retention_window = Duration::from_secs(1);
    })
    .await;
    let origin_metrics = t
        .origin()
        .metrics_addr()
        .expect("the origin serves metrics");
    let relay_metrics = t.relays[0]
        .as_ref()
        .and_then(|r| r.metrics_addr())
        .expect("the relay serves metrics");
    let (code, _) = http_get(relay_metrics, "/healthz").await;
    assert_eq!(code, 200);

    let connect = |user: u64, host_of: &[RoomId]| {
        t.client_builder(user, host_of)
            .relay(t.relay_addr(0))
            .report_every(Some(Duration::from_secs(1)))
            .connect()
    };
    let (a, b) = (RoomId(1), RoomId(2));
    let host_a = connect(1, &[a]).await.expect("host a");
    let host_b = connect(2, &[b]).await.expect("host b");
    let gifter = connect(10, &[]).await.expect("gifter");
    let leaver = connect(11, &[]).await.expect("leaver");
    let ra = host_a.join(a).await.expect("join a");
    let rb = host_b.join(b).await.expect("join b");
    let rg = gifter.join(a).await.expect("gifter joins a");
    let _rl = leaver.join(b).await.expect("leaver joins b");

    // One more viewer, on a raw connection, that will fail mid-battle.
    let raw = common::raw(&t, ALPN_CLIENT).await.expect("raw connection");
    let (mut send, _recv) = common::hello_as(&raw, t.token(12, &[]), 12)
        .await
        .expect("welcomed");
    let join = ClientMsg::Join {
        room: a,
        since: None,
    };
    net::write_frame(&mut send, &join).await.expect("send join");
    // The snapshot's stream: the relay has the join.
    let mut snap = raw.accept_uni().await.expect("a snapshot stream");
    let _ = snap.read_to_end(1 << 20).await.expect("the snapshot");

    // The ready probe says so once the relay's link is up (it is: joins were served).
    let (code, body) = http_get(relay_metrics, "/readyz").await;
    assert_eq!(code, 200, "{body}");

    start_battle(&ra, &rb, 4).await;
    for _ in 0..5 {
        let acked = rg.gift(GiftId(1), 1).await.expect("gift outcome");
        assert!(acked.outcome.is_applied(), "{acked:?}");
    }
    // During the battle: one viewer leaves cleanly, one fails.
    leaver.close().await;
    net::close(&raw, ErrorCode::Internal, "the app crashed");

    let text = scrape_until(relay_metrics, Duration::from_secs(15), |m| {
        sample(m, "ringside_interaction_sessions_total", &[("kind", "pk")]) >= 2.0
            && sample(m, "ringside_client_ack_seconds_count", &[("class", "gift")]) >= 5.0
    })
    .await;
    // Relay: the KPIs it is placed to see.
    let gift = [("class", "gift")];
    // At least one per gift: a copy that arrives after the ack goes up
    // again and is answered (as the duplicate it is) again.
    assert!(sample(&text, "ringside_action_ack_seconds_count", &gift) >= 5.0);
    assert_eq!(
        sample(&text, "ringside_client_ack_seconds_count", &gift),
        5.0
    );
    assert!(
        sample(
            &text,
            "ringside_action_ack_seconds_count",
            &[("class", "authority")]
        ) >= 2.0
    );
    assert!(sample(&text, "ringside_timer_drift_seconds_count", &[]) >= 1.0);
    let pk = [("kind", "pk")];
    assert_eq!(
        sample(&text, "ringside_interaction_sessions_total", &pk),
        2.0
    );
    assert_eq!(
        sample(&text, "ringside_interaction_session_losses_total", &pk),
        1.0
    );
    // And its health.
    assert_eq!(sample(&text, "ringside_relay_upstream_connected", &[]), 1.0);
    assert_eq!(sample(&text, "ringside_ready", &[]), 1.0);
    assert!(
        sample(
            &text,
            "ringside_relay_handshakes_total",
            &[("outcome", "accepted")]
        ) >= 5.0
    );
    assert!(sample(&text, "ringside_relay_connections", &[]) >= 3.0);
    assert!(
        sample(
            &text,
            "ringside_relay_sent_total",
            &[("class", "gift"), ("path", "datagram")]
        ) >= 5.0
    );
    assert!(sample(&text, "ringside_relay_snapshots_total", &[]) >= 5.0);
    assert!(
        sample(
            &text,
            "ringside_path_sent_packets_total",
            &[("link", "upstream")]
        ) > 0.0
    );
    // Constant labels on every series: the region and the relay's name.
    assert!(text.contains("region=\"r0\""), "{text}");
    promtool_check_metrics(&text);

    // The origin: the battle settles, and a retention window later the
    // viewers still there are counted.
    ra.wait_for(Duration::from_secs(15), |s| {
        (s.last_result.as_ref()).is_some()
    })
    .await
    .expect("the battle settles");
    let text = scrape_until(origin_metrics, Duration::from_secs(10), |m| {
        sample(m, "ringside_post_event_retained_total", &[]) > 0.0
    })
    .await;
    let started = [("kind", "pk"), ("outcome", "started")];
    assert_eq!(
        sample(&text, "ringside_interaction_starts_total", &started),
        1.0
    );
    let failed = [("kind", "pk"), ("outcome", "failed")];
    assert_eq!(
        sample(&text, "ringside_interaction_starts_total", &failed),
        0.0
    );
    let settled = [("kind", "pk"), ("outcome", "settled")];
    assert_eq!(
        sample(&text, "ringside_interaction_completions_total", &settled),
        1.0
    );
    let in_pk = [("window", "pk")];
    assert_eq!(sample(&text, "ringside_gifts_total", &in_pk), 5.0);
    assert!(sample(&text, "ringside_gift_value_total", &in_pk) >= 5.0);
    assert_eq!(
        sample(&text, "ringside_gifts_total", &[("window", "none")]),
        0.0
    );
    // Conversion: one gifter among the viewers present during the battle
    // (presence does not know roles: the hosts count as present too).
    let pk = [("kind", "pk")];
    assert_eq!(
        sample(&text, "ringside_interaction_gifters_total", &pk),
        1.0
    );
    assert!(sample(&text, "ringside_interaction_viewers_total", &pk) >= 3.0);
    // Retention: everyone present at the bell stayed.
    let present = sample(&text, "ringside_post_event_viewers_total", &[]);
    assert!(present >= 3.0, "{present}");
    assert_eq!(
        sample(&text, "ringside_post_event_retained_total", &[]),
        present
    );
    assert!(sample(&text, "ringside_wal_sync_seconds_count", &[]) > 0.0);
    assert_eq!(sample(&text, "ringside_origin_relays", &[]), 1.0);
    assert_eq!(sample(&text, "ringside_ready", &[]), 1.0);
    promtool_check_metrics(&text);

    t.shutdown().await;
}
