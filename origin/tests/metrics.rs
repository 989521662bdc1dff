//! The origin's operator endpoint for real: an origin on loopback with
//! `metrics_listen = 127.0.0.1:0`, a minimal relay playing a PK battle with
//! viewers and gifts, and `/metrics`, `/healthz` and `/readyz` read over
//! HTTP. The scrape must show the battle's KPIs and pass
//! `promtool check metrics` (when promtool is installed; set
//! `RINGSIDE_REQUIRE_PROMTOOL=1` to make its absence a failure).

mod fake_relay;
use fake_relay::{Link, TempDir};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use net::{self, Identity};
use origin::{Config, Origin};
use protocol::message::{DownMsg, UpMsg};
use protocol::room::Grant;
use protocol::{Action, EventKind, GiftId, RoomId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "a test cluster secret of at least 32 bytes";
const A: RoomId = RoomId(1);
const B: RoomId = RoomId(2);
const NODE: &str = "origin-it";

fn config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        cluster_secret: Some(SECRET.into()),
        checkpoint_every: 4,
        metrics_listen: Some("127.0.0.1:0".parse().expect("addr")),
        node_name: NODE.into(),
        retention_window: Duration::from_millis(200),
        rules: origin::rules::Config {
            pk_min_duration: Duration::from_secs(1),
            pk_grace: Duration::from_millis(100),
            pk_punishment: Duration::ZERO,
            ..origin::rules::Config::default()
        },
        ..Config::default()
    }
}

/// What Prometheus sends as `Accept` when it scrapes.
const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One HTTP/1.1 GET on a fresh connection: (status line, headers, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String, String) {
    get_accepting(addr, path, "*/*").await
}

/// A GET with an `Accept` header.
async fn get_accepting(
    addr: std::net::SocketAddr,
    path: &str,
    accept: &str,
) -> (String, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: origin\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answered in time")
        .expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("a header block");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// The value of the series `name{labels}` in an exposition (our own
/// `node` label is added); `None` if the series is absent.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let node = format!("node=\"{NODE}\"");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let set: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            let wanted = labels.iter().map(|(k, v)| format!("{k}=\"{v}\""));
            let all = std::iter::once(node.clone()).chain(wanted);
            let matches = n == name
                && set.len() == labels.len() + 1
                && all.into_iter().all(|l| set.contains(&l.as_str()));
            matches.then(|| v.parse().expect("a number"))
        })
}

fn must(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
}

fn gift(count: u32) -> Action {
    // Worth 100 each in the default catalogue.
    Action::Gift {
        gift: GiftId(3),
        count,
    }
}

#[tokio::test]
async fn a_battle_moves_every_origin_kpi_in_the_scrape() {
    let dir = TempDir::new("origin-metrics");
    let identity = Identity::self_signed(&["localhost"]).expect("identity");
    let origin = Origin::start_with(config(&dir.0), identity)
        .await
        .expect("origin");
    let addr = origin.metrics_addr().expect("metrics_listen is set");
    assert_ne!(addr.port(), 0, "the bound port");
    let (status, _, body) = get(addr, "/readyz").await;
    assert!(status.contains(" 200 "), "{status} {body}");
    let (status, _, _) = get(addr, "/healthz").await;
    assert!(status.contains(" 200 "), "{status}");

    let mut link = Link::connect(&origin, SECRET).await;
    assert!(origin.open_room(A).await && origin.open_room(B).await);
    // Two viewers, one in each room, then a battle between the rooms.
    link.online(A, 11).await;
    link.online(B, 21).await;
    link.up(UpMsg::Subscribe {
        room: A,
        since: None,
        history: None,
    })
    .await;
    let invite = Action::PkInvite {
        to: B,
        duration_secs: 1,
    };
    assert!(link.act(A, 1000, Grant::Host, invite).await.is_applied());
    let battle = (origin.room_state(B).await)
        .and_then(|s| s.pk_invite)
        .expect("an invitation")
        .battle;
    let accept = Action::PkAccept { battle };
    assert!(link.act(B, 2000, Grant::Host, accept).await.is_applied());
    // A second accept finds no invitation: a failed start.
    let again = Action::PkAccept { battle };
    assert!(!link.act(B, 2000, Grant::Host, again).await.is_applied());
    assert!(link.act(A, 11, Grant::Viewer, gift(2)).await.is_applied());
    assert!(link.act(B, 21, Grant::Viewer, gift(1)).await.is_applied());
    // The bell rings after a second, the battle settles after the grace.
    link.until(|m| match m {
        DownMsg::Events { events, .. } => (events.iter())
            .any(|e| matches!(e.kind, EventKind::PkSettled { .. }))
            .then_some(()),
        _ => None,
    })
    .await;
    // Retention is checked 200 ms after settlement: wait for it (bounded).
    let mut text = String::new();
    for _ in 0..200 {
        let (status, headers, body) = get_accepting(addr, "/metrics", PROMETHEUS_ACCEPT).await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(
            headers.contains("content-type: application/openmetrics-text"),
            "{headers}"
        );
        text = body;
        if value(&text, "ringside_post_event_viewers_total", &[]) == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let pk = ("kind", "pk");
    let starts = "ringside_interaction_starts_total";
    let started = [pk, ("outcome", "started"), ("reason", "none")];
    assert_eq!(
        must(&text, starts, &started),
        1.0,
        "one battle, though both rooms log it"
    );
    let failed = [pk, ("outcome", "failed"), ("reason", "no_invite")];
    assert_eq!(must(&text, starts, &failed), 1.0);
    let completions = "ringside_interaction_completions_total";
    assert_eq!(must(&text, completions, &[pk, ("outcome", "settled")]), 1.0);
    assert_eq!(must(&text, completions, &[pk, ("outcome", "aborted")]), 0.0);
    let window = [("window", "pk")];
    assert_eq!(must(&text, "ringside_gifts_total", &window), 3.0);
    assert_eq!(must(&text, "ringside_gift_value_total", &window), 300.0);
    assert_eq!(
        must(&text, "ringside_gifts_total", &[("window", "none")]),
        0.0
    );
    assert_eq!(
        must(&text, "ringside_interaction_viewers_total", &[pk]),
        2.0
    );
    assert_eq!(
        must(&text, "ringside_interaction_gifters_total", &[pk]),
        2.0
    );
    assert_eq!(must(&text, "ringside_post_event_viewers_total", &[]), 2.0);
    assert_eq!(must(&text, "ringside_post_event_retained_total", &[]), 2.0);
    assert_eq!(must(&text, "ringside_origin_applied_total", &[]), 4.0);
    assert_eq!(must(&text, "ringside_rooms_live", &[]), 2.0);
    assert_eq!(must(&text, "ringside_origin_relays", &[]), 1.0);
    for histogram in [
        "ringside_wal_group_size_count",
        "ringside_wal_commit_seconds_count",
        "ringside_wal_sync_seconds_count",
        "ringside_checkpoint_seconds_count",
    ] {
        assert!(must(&text, histogram, &[]) > 0.0, "{histogram} is empty");
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    // promtool reads the classic text format: what anyone but Prometheus gets.
    let (_, headers, classic) = get(addr, "/metrics").await;
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    promtool_check(&classic);

    drop(link);
    origin.shutdown().await.expect("shutdown");
}

/// `promtool check metrics` on a scrape (the classic text format): any
/// finding fails.
fn promtool_check(text: &str) {
    let required = std::env::var("RINGSIDE_REQUIRE_PROMTOOL").as_deref() == Ok("1");
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!(
                "\n*** NOTE: promtool is not on PATH: `promtool check metrics` SKIPPED \
                 (install the `prometheus` package, or set RINGSIDE_REQUIRE_PROMTOOL=1 to fail) ***\n"
            );
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics ({}): {}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
